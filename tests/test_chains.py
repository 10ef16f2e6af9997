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
