"""Simulation-based calibration of an encoder (Talts et al. 2018)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from latentae._util import Seed, seeded
from latentae.conditionals import Conditional
from latentae.joint import JointModel

__all__ = ["SBCResult", "sbc"]


class SBCResult(NamedTuple):
    """Rank statistics of simulation-based calibration.

    Attributes:
        ranks: rank of each true latent among the posterior draws, shape
            ``(num_simulations, latent_dim)``, values in ``0..num_posterior_samples``.
        pvalues: chi-square uniformity p-value of each latent coordinate's ranks.
        pvalue: the smallest of those, Bonferroni-corrected for the number of coordinates.
        num_posterior_samples: posterior draws per simulation.
        num_bins: histogram bins of the chi-square test.
    """

    ranks: Tensor
    pvalues: Tensor
    pvalue: float
    num_posterior_samples: int
    num_bins: int


def sbc(
    joint: JointModel,
    encoder: Conditional,
    num_simulations: int = 1000,
    num_posterior_samples: int = 99,
    num_bins: int = 20,
    seed: Seed = None,
) -> SBCResult:
    """Simulation-based calibration: if ``encoder`` is p_model(h|x), the rank of h among
    draws of encoder(x), for (h, x) ~ p_model, is uniform on ``0..num_posterior_samples``.

    Ties (discrete latents) are broken uniformly at random, which keeps the ranks uniform.
    Uniformity is tested per latent coordinate by a chi-square test on ``num_bins`` bins.

    Examples:
        >>> import latentae as lae
        >>> jm = lae.JointModel.from_file("models/ppca.py")
        >>> result = sbc(jm, jm.encoder("laplace"), num_simulations=200, seed=0)
        >>> tuple(result.ranks.shape), result.pvalue > 0.01
        ((200, 2), True)
    """
    for name, value in (
        ("num_simulations", num_simulations),
        ("num_posterior_samples", num_posterior_samples),
        ("num_bins", num_bins),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    num_ranks = num_posterior_samples + 1
    if num_bins > num_ranks:
        raise ValueError(f"num_bins ({num_bins}) exceeds the {num_ranks} possible ranks")
    with seeded(seed), torch.no_grad():
        h, x = joint.sample(num_simulations)
        draws = encoder(x).sample((num_posterior_samples,))
        h = h.reshape(num_simulations, -1)
        draws = draws.reshape(num_posterior_samples, num_simulations, -1).to(h.dtype)
        less = (draws < h).sum(0)
        ties = (draws == h).sum(0)
        ranks = less + (torch.rand(ties.shape) * (ties + 1)).floor().long()
    bins = (ranks * num_bins) // num_ranks
    # Expected bin counts: each bin holds a known number of the equally likely ranks.
    per_bin = np.bincount(np.arange(num_ranks) * num_bins // num_ranks, minlength=num_bins)
    expected = num_simulations * per_bin / num_ranks
    pvalues = []
    for j in range(bins.shape[1]):
        observed = np.bincount(bins[:, j].numpy(), minlength=num_bins)
        pvalues.append(stats.chisquare(observed, expected).pvalue)
    pvalues = torch.tensor(pvalues, dtype=torch.float64)
    pvalue = float(min(1.0, pvalues.min().item() * len(pvalues)))
    return SBCResult(ranks, pvalues, pvalue, num_posterior_samples, num_bins)
