"""Simulation-based calibration: exact encoders pass, over-confident ones fail."""

import pytest
import torch
from torch.distributions import MultivariateNormal

import latentae as lae
from tests.conftest import ROOT


class Overconfident(lae.Conditional):
    """The exact Laplace posterior with its scale halved (covariance x 0.25)."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, x):
        q = self.encoder(x)
        return MultivariateNormal(q.mean, 0.25 * q.covariance_matrix)


@pytest.fixture
def ppca():
    return lae.JointModel.from_file(ROOT / "models" / "ppca.py")


# A calibrated encoder's p-value is uniform, so p > 0.01 fails 1% of seeds; the seed is fixed.
def test_exact_encoder_passes(ppca):
    result = lae.sbc(ppca, ppca.encoder("laplace"), num_simulations=1000, seed=0)
    assert result.ranks.shape == (1000, 2)
    assert result.ranks.min() >= 0 and result.ranks.max() <= 99
    assert result.pvalue > 0.01


def test_overconfident_encoder_fails(ppca):
    result = lae.sbc(ppca, Overconfident(ppca.encoder("laplace")), num_simulations=1000, seed=0)
    # Halving the scale puts about a third of the true values outside the central 95% of the
    # draws; the chi-square statistic is then in the thousands.
    assert result.pvalue < 1e-6
    ends = (result.ranks <= 2) | (result.ranks >= 97)
    assert ends.double().mean() > 0.15  # 6% expected when calibrated


def test_discrete_latent_with_ties_passes():
    jm = lae.JointModel.from_file(ROOT / "models" / "mixture.py")
    result = lae.sbc(jm, jm.encoder("enumerate"), num_simulations=1000, seed=0)
    assert result.pvalue > 0.01


def test_seeded_sbc_is_reproducible(ppca):
    a = lae.sbc(ppca, ppca.encoder("laplace"), num_simulations=50, seed=3)
    b = lae.sbc(ppca, ppca.encoder("laplace"), num_simulations=50, seed=3)
    assert torch.equal(a.ranks, b.ranks)


def test_bad_arguments(ppca):
    enc = ppca.encoder("laplace")
    with pytest.raises(ValueError, match="num_simulations must be a positive integer"):
        lae.sbc(ppca, enc, num_simulations=0)
    with pytest.raises(ValueError, match=r"num_bins .* exceeds"):
        lae.sbc(ppca, enc, num_posterior_samples=9, num_bins=20)
