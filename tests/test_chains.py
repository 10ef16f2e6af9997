"""Posterior sampling to ArviZ InferenceData."""

import arviz as az
import pytest
import torch
import xarray as xr

import latentae as lae
from latentae.arviz import load_netcdf, save_netcdf
from tests.conftest import ROOT


@pytest.fixture
def ppca():
    return lae.JointModel.from_file(ROOT / "models" / "ppca.py")


def test_posterior_group_layout(ppca):
    _, x = ppca.sample(3, seed=0)
    idata = lae.sample_posterior(ppca.encoder("laplace"), x, num_samples=300, num_chains=4, seed=1)
    assert dict(idata.posterior.sizes) == {"chain": 4, "draw": 300, "obs": 3, "h_dim": 2}
    assert idata.observed_data["x"].shape == (3, 5)
    assert torch.allclose(torch.as_tensor(idata.observed_data["x"].values), x)
    assert idata.posterior.attrs["encoder"] == "laplace"
    # iid draws: R-hat near 1 and bulk ESS near the number of draws
    rhat = az.rhat(idata)["h"].values
    ess = az.ess(idata)["h"].values
    assert (abs(rhat - 1) < 0.01).all()
    assert (ess > 600).all()


def test_mean_of_draws_matches_the_encoder_within_mcse(ppca):
    _, x = ppca.sample(2, seed=0)
    q = ppca.encoder("laplace")(x)
    idata = lae.sample_posterior(ppca.encoder("laplace"), x, num_samples=2500, seed=2)
    draws = torch.as_tensor(idata.posterior["h"].values)  # (4, 2500, 2, 2)
    mcse = q.stddev / (4 * 2500) ** 0.5
    assert ((draws.mean((0, 1)) - q.mean).abs() < 4 * mcse).all()


def test_discrete_latent_has_no_event_dimension():
    jm = lae.JointModel.from_file(ROOT / "models" / "mixture.py")
    _, x = jm.sample(2, seed=0)
    idata = lae.sample_posterior(jm.encoder(), x, num_samples=50, seed=0)
    assert dict(idata.posterior.sizes) == {"chain": 4, "draw": 50, "obs": 2}


def test_nuts_runs_real_chains_with_divergences(ppca):
    _, x = ppca.sample(2, seed=0)
    enc = ppca.encoder("nuts", warmup_steps=100)
    idata = lae.sample_posterior(enc, x, num_samples=100, num_chains=2, seed=0)
    assert dict(idata.posterior.sizes) == {"chain": 2, "draw": 100, "obs": 2, "h_dim": 2}
    assert idata.sample_stats["diverging"].dtype == bool
    assert az.rhat(idata)["h"].shape == (2, 2)


def test_importance_records_weight_ess(ppca):
    _, x = ppca.sample(2, seed=0)
    enc = ppca.encoder("importance", num_particles=500, seed=0)
    idata = lae.sample_posterior(enc, x, num_samples=20, seed=0)
    ess = idata.sample_stats["weights_ess"]
    assert ess.dims == ("chain", "draw", "obs")
    assert (ess.values >= 1).all() and (ess.values <= 500).all()


def test_netcdf_round_trip(ppca, tmp_path):
    _, x = ppca.sample(3, seed=0)
    idata = lae.sample_posterior(ppca.encoder("laplace"), x, num_samples=100, seed=1)
    path = save_netcdf(idata, tmp_path / "out" / "posterior.nc")
    again = load_netcdf(path)
    for group in ("posterior", "observed_data"):
        xr.testing.assert_identical(idata[group], again[group])
    assert not list(tmp_path.glob("out/.*.tmp"))  # the temporary file was renamed away


def test_failed_write_keeps_the_previous_file(ppca, tmp_path, monkeypatch):
    _, x = ppca.sample(1, seed=0)
    idata = lae.sample_posterior(ppca.encoder("laplace"), x, num_samples=10, seed=1)
    path = save_netcdf(idata, tmp_path / "posterior.nc")
    before = path.read_bytes()

    def fail(self, filename, *args, **kwargs):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(az.InferenceData, "to_netcdf", fail)
    with pytest.raises(OSError, match="disk full"):
        save_netcdf(idata, path)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_corrupt_netcdf_is_reported(tmp_path):
    path = tmp_path / "posterior.nc"
    path.write_bytes(b"not a netcdf file")
    with pytest.raises(ValueError, match="not a readable ArviZ netcdf file"):
        load_netcdf(path)


def test_bad_arguments(ppca):
    enc = ppca.encoder("laplace")
    _, x = ppca.sample(2, seed=0)
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        lae.sample_posterior(enc, x, num_samples=0)
    with pytest.raises(ValueError, match=r"x_obs has shape \(2, 4\)"):
        lae.sample_posterior(enc, x[:, :4])


def test_nuts_rows_get_independent_chains_and_the_seed_is_used(ppca):
    _, x = ppca.sample(1, seed=0)
    enc = ppca.encoder("nuts", warmup_steps=20, seed=5)
    twice = torch.cat([x, x])
    a = lae.sample_posterior(enc, twice, num_samples=20, num_chains=1, seed=1).posterior["h"]
    b = lae.sample_posterior(enc, twice, num_samples=20, num_chains=1, seed=2).posterior["h"]
    assert not (a.values[:, :, 0] == a.values[:, :, 1]).all()  # same row, independent chains
    assert not (a.values == b.values).all()  # sample_posterior's seed is honoured


# ---------------------------------------------------------------------------- x-chains


def moments_within_mcse(draws, mean, cov):
    """Sample mean and covariance of iid draws within 4 standard errors of the truth: the
    s.e. of a mean is sqrt(C_ii / n), of a covariance entry sqrt((C_ii C_jj + C_ij^2) / n)."""
    n = len(draws)
    var = cov.diagonal()
    assert ((draws.mean(0) - mean).abs() < 4 * (var / n).sqrt()).all()
    se = ((var[:, None] * var[None, :] + cov**2) / n).sqrt()
    assert ((torch.cov(draws.T) - cov).abs() < 4 * se).all()


def test_exact_gibbs_on_ppca_reaches_p_model_from_a_fixed_start(ppca):
    w, mu, s = ppca.module.W, ppca.module.MU, ppca.module.NOISE
    result = lae.chains.exact_gibbs(ppca, torch.zeros(4000, 5), 60, burn_in=59, seed=0)
    draws = result.x[-1]  # one late draw per chain: independent chains, so iid draws
    moments_within_mcse(draws, mu, w @ w.T + s**2 * torch.eye(5))
    _, fresh = ppca.sample(1000, seed=1)
    assert lae.two_sample_test(draws[:1000], fresh, "energy", seed=0).pvalue > 0.01


def test_exact_gibbs_leaves_the_mixture_invariant():
    # Between the mixture's separated components the chain mixes slowly from a fixed start
    # (after 300 steps from the origin the first component still holds 74% of the chains,
    # against 50%), so this test checks invariance: started from p_model, the law stays.
    jm = lae.JointModel.from_file(ROOT / "models" / "mixture.py")
    _, x0 = jm.sample(4000, seed=2)
    draws = lae.chains.exact_gibbs(jm, x0, 30, burn_in=29, seed=3).x[-1]
    _, fresh = jm.sample(200_000, seed=4)
    moments_within_mcse(draws, fresh.mean(0), torch.cov(fresh.T))
    assert lae.two_sample_test(draws[:1000], fresh[:1000], "energy", seed=0).pvalue > 0.01


def test_gibbs_with_a_wrong_encoder_drifts_away(ppca):
    class Overconfident(lae.Conditional):
        """The exact posterior with its covariance shrunk: not p_model(h | x)."""

        def __init__(self):
            super().__init__()
            self.exact = ppca.encoder("laplace")

        def forward(self, x):
            q = self.exact(x)
            return torch.distributions.MultivariateNormal(q.mean, 0.05 * q.covariance_matrix)

    _, x0 = ppca.sample(2000, seed=2)
    draws = lae.gibbs_chain(Overconfident(), ppca.decoder(), x0, 60, burn_in=59, seed=3).x[-1]
    _, fresh = ppca.sample(2000, seed=4)
    # 1999 permutations: the smallest attainable p-value, 1/2000, lies below the level.
    test = lae.two_sample_test(draws, fresh, "energy", num_permutations=1999, seed=0)
    assert test.pvalue < 0.001


def test_exact_gibbs_needs_an_exact_encoder():
    jm = lae.JointModel.from_file(ROOT / "models" / "spiral.py")
    with pytest.raises(ValueError, match="has no exact encoder"):
        lae.chains.exact_gibbs(jm, torch.zeros(3, 2), 2)
    with pytest.raises(ValueError, match=r"burn_in \(5\) must be smaller than num_steps \(5\)"):
        lae.gibbs_chain(jm.encoder("laplace"), jm.decoder(), torch.zeros(3, 2), 5, burn_in=5)
