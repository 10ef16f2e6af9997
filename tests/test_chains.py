"""Posterior sampling to ArviZ InferenceData."""

import math
from pathlib import Path

import arviz as az
import pytest
import torch
import xarray as xr

import latentae as lae
from latentae import arviz as lae_arviz
from latentae._util import seeded
from latentae.arviz import load_netcdf, save_netcdf
from latentae.corruption import Gaussian
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


@pytest.fixture(params=["in-memory", "arviz-writes"])
def netcdf_writer(request, monkeypatch):
    """save_netcdf builds the file in memory; where xarray cannot, ArviZ writes it."""
    if request.param == "arviz-writes":
        monkeypatch.setattr(lae_arviz, "_netcdf_bytes", lambda idata: None)
    return request.param


def test_netcdf_round_trip(ppca, tmp_path, netcdf_writer):
    _, x = ppca.sample(3, seed=0)
    idata = lae.sample_posterior(ppca.encoder("laplace"), x, num_samples=100, seed=1)
    path = save_netcdf(idata, tmp_path / "out" / "posterior.nc")
    again = load_netcdf(path)
    for group in ("posterior", "observed_data"):
        xr.testing.assert_identical(idata[group], again[group])
    assert not list(tmp_path.glob("out/.*.tmp"))  # the temporary file was renamed away
    # The file ArviZ itself writes: the same groups, contents and compression.
    idata.to_netcdf(str(tmp_path / "arviz.nc"))
    theirs = az.from_netcdf(tmp_path / "arviz.nc")
    assert again.groups() == theirs.groups()
    for group in again.groups():
        xr.testing.assert_identical(again[group], theirs[group])
        for name, variable in theirs[group].variables.items():
            assert again[group][name].encoding.get("zlib") == variable.encoding.get("zlib")


def test_failed_write_keeps_the_previous_file(ppca, tmp_path, monkeypatch, netcdf_writer):
    _, x = ppca.sample(1, seed=0)
    idata = lae.sample_posterior(ppca.encoder("laplace"), x, num_samples=10, seed=1)
    path = save_netcdf(idata, tmp_path / "posterior.nc")
    before = path.read_bytes()

    def fail(target):  # a write that stops part-way
        with open(target, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    if netcdf_writer == "in-memory":
        monkeypatch.setattr(Path, "write_bytes", lambda self, data: fail(self))
    else:
        monkeypatch.setattr(az.InferenceData, "to_netcdf", lambda self, name, *a, **k: fail(name))
    with pytest.raises(OSError, match="disk full"):
        save_netcdf(idata, path)
    monkeypatch.undo()
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


# ------------------------------------------------------------------- DAE (GSN) chains


def mixture_dae(data, corruption, *, steps, walkback=0, seed=0):
    """A DAE on 2-D data: MLP Gaussian encoder with injected noise, mixture-density decoder
    (the reverse conditional p(x | x_tilde) is multimodal between the mixture's components)."""
    torch.manual_seed(seed)
    enc = lae.GaussianEncoder(2, 2, hidden=(64,), noise=0.05).standardize(data)
    dec = lae.MixtureDecoder(2, 2, hidden=(64,), components=5)
    dec.standardize(torch.randn(len(data), 2), data)
    fit = lae.fit(enc, dec, data, corruption, steps=steps, batch_size=256, lr=1e-2,
                  schedule="cosine", walkback=walkback, validation=None, progress=False,
                  seed=seed)  # fmt: skip
    return fit


def gsn_late_draws(fit, corruption, seed, num_chains=1000, num_steps=200):
    """One late draw per chain, chains started uniformly on [-10, 10]^2, far from the data."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(num_chains, 2, generator=g) * 20 - 10
    idata = lae.chains.gsn_chain(fit.encoder, fit.decoder, corruption, x0, num_steps,
                          burn_in=num_steps - 1, seed=seed)  # fmt: skip
    return torch.as_tensor(idata.posterior["x"].values[:, -1])


def far_fractions(fit, corruption, seed, steps, radius=3.0, num_chains=2000, box=15.0):
    """Fraction of chains farther than ``radius`` from every component mean of
    models/mixture.py after each of ``steps``, from uniform starts on [-box, box]^2."""
    means = lae.JointModel.from_file(ROOT / "models" / "mixture.py").module.MEANS
    g = torch.Generator().manual_seed(seed)
    x0 = (torch.rand(num_chains, 2, generator=g) * 2 - 1) * box
    idata = lae.chains.gsn_chain(fit.encoder, fit.decoder, corruption, x0, max(steps), seed=seed)
    x = torch.as_tensor(idata.posterior["x"].values)  # (chain, draw = step - 1, 2)
    far = torch.cdist(x, means.to(x)).min(-1).values > radius
    return [float(far[:, s - 1].double().mean()) for s in steps]


def tiny_dae():
    torch.manual_seed(0)
    return lae.GaussianEncoder(2, 2, hidden=(8,)), lae.GaussianDecoder(2, 2, hidden=(8,))


def test_gsn_chain_layout_and_reproducibility():
    enc, dec = tiny_dae()
    c = Gaussian(0.5)
    idata = lae.chains.gsn_chain(enc, dec, c, torch.zeros(2), 20, num_chains=3, burn_in=10,
                                 thin=4, seed=0)  # fmt: skip
    # kept: steps 14, 18 and the last one, 20
    assert dict(idata.posterior.sizes) == {"chain": 3, "draw": 3, "x_dim": 2}
    assert idata.posterior["x"].dims == ("chain", "draw", "x_dim")
    assert idata.posterior.attrs["sampler"] == "gsn"
    assert idata.posterior.attrs["corruption"] == "Gaussian(sigma=0.5)"
    # the chain as defined, x -> x~ ~ C(x~ | x) -> h ~ q(h | x~) -> x ~ p(x | h), written
    # out step by step with the same seed; chain axis first
    x0 = torch.zeros(3, 2)
    x, ref = x0, []
    with seeded(0), torch.no_grad():
        for step in range(1, 21):
            x = dec(enc(c.sample(x)).sample()).sample()
            if step in (14, 18, 20):
                ref.append(x)
    draws = torch.as_tensor(idata.posterior["x"].values)
    assert torch.equal(draws, torch.stack(ref, 1))
    again = lae.chains.gsn_chain(enc, dec, c, x0, 20, burn_in=10, thin=4, seed=0)
    assert torch.equal(torch.as_tensor(again.posterior["x"].values), draws)
    other = lae.chains.gsn_chain(enc, dec, c, x0, 20, burn_in=10, thin=4, seed=1)
    assert not torch.equal(torch.as_tensor(other.posterior["x"].values), draws)
    # a config dict works as the corruption; many chains with one draw each is fine
    one = lae.chains.gsn_chain(enc, dec, {"name": "gaussian", "sigma": 0.5}, torch.zeros(1, 2),
                               5, num_chains=50, burn_in=4, seed=0)  # fmt: skip
    assert dict(one.posterior.sizes) == {"chain": 50, "draw": 1, "x_dim": 2}


def test_gsn_chain_calls_each_network_once_per_step_on_all_chains():
    enc, dec = tiny_dae()
    calls = {"enc": [], "dec": []}

    def count(name):
        def hook(module, args):
            calls[name].append(args[0].shape[0])

        return hook

    enc.register_forward_pre_hook(count("enc"))
    dec.register_forward_pre_hook(count("dec"))
    lae.chains.gsn_chain(enc, dec, Gaussian(0.5), torch.zeros(40, 2), 7, seed=0)
    assert calls == {"enc": [40] * 7, "dec": [40] * 7}  # no other call, not even one row


def test_gsn_chain_bad_arguments():
    enc, dec = tiny_dae()
    c = Gaussian(0.5)
    with pytest.raises(ValueError, match=r"x0 of shape \(2,\) is one state; give num_chains"):
        lae.chains.gsn_chain(enc, dec, c, torch.zeros(2), 5)
    with pytest.raises(ValueError, match="x0 has 3 rows but num_chains=4"):
        lae.chains.gsn_chain(enc, dec, c, torch.zeros(3, 2), 5, num_chains=4)
    with pytest.raises(ValueError, match="num_chains must be a positive integer or None"):
        lae.chains.gsn_chain(enc, dec, c, torch.zeros(3, 2), 5, num_chains=0)
    with pytest.raises(TypeError, match=r"x0 must be a torch\.Tensor"):
        lae.chains.gsn_chain(enc, dec, c, [[0.0, 0.0]], 5)
    with pytest.raises(TypeError, match="corruption must be a Corruption"):
        lae.chains.gsn_chain(enc, dec, 0.5, torch.zeros(3, 2), 5)
    with pytest.raises(TypeError, match="encoder and decoder must be Conditionals"):
        lae.chains.gsn_chain(enc, None, c, torch.zeros(3, 2), 5)
    with pytest.raises(ValueError, match=r"burn_in \(5\) must be smaller than num_steps \(5\)"):
        lae.chains.gsn_chain(enc, dec, c, torch.zeros(3, 2), 5, burn_in=5)
    with pytest.raises(ValueError, match="thin must be an integer >= 1"):
        lae.chains.gsn_chain(enc, dec, c, torch.zeros(3, 2), 5, thin=0)


def test_gsn_chain_of_a_trained_dae_samples_the_mixture():
    # A DAE trained on models/mixture.py with Gaussian corruption sigma = 1.5 (about the
    # spread between components, so the chain moves between them in a few steps; the
    # mixture-density decoder represents the multimodal p(x | x_tilde)). 1000 chains started
    # uniformly on [-10, 10]^2 forget their start within 50 steps (chains under common
    # noise coalesce). One draw per chain at step 200: iid draws of the chain's law at that
    # step, tested against held-out data by energy distance at level 0.01.
    # Measured over 6 training seeds x 3 chain seeds: 17 of 18 p-values > 0.01 (the other
    # 2/201 = 0.00995), median 0.57; training takes 5-14 s on this machine.
    jm = lae.JointModel.from_file(ROOT / "models" / "mixture.py")
    corruption = Gaussian(1.5)
    _, x = jm.sample(21_000, seed=0)
    train, held = x[:20_000], x[20_000:]
    fit = mixture_dae(train, corruption, steps=3000, seed=0)
    draws = gsn_late_draws(fit, corruption, seed=0)
    assert lae.two_sample_test(draws, held, "energy", seed=0).pvalue > 0.01


def test_walkback_pulls_chains_back_from_far_away_sooner():
    # Spurious modes (Bengio et al. 2013): a DAE trained only on corruptions of the data
    # (sigma = 0.3, small against the mixture's spread) has never seen inputs far from it.
    # Chains started uniformly on [-15, 15]^2 (92% of them farther than 3 from every
    # component mean; the data: 0.03%) measure how fast the DAE chain leaves that region.
    # Measured over 5 seeds (500 steps each; walkback 3 costs about 4x per step): after 5
    # steps plain DAEs still had 27-45% of the chains far, walkback-3 DAEs 0.1-3.1%; plain
    # DAEs trained 4x longer (equal compute) were no better (41-58%). Late draws showed no
    # difference: by step 200 both had at most 0.15% far, so walkback removes transient
    # spurious mass here, not a persistent spurious mode. Asserted: the
    # gap after 5 steps exceeds 5 s.e. of a difference of two fractions from 2000 chains
    # each (s.e. at most sqrt(2 * 0.25 / 2000) = 0.016), and late far mass is under 1%.
    jm = lae.JointModel.from_file(ROOT / "models" / "mixture.py")
    corruption = Gaussian(0.3)
    _, x = jm.sample(5000, seed=0)
    plain = mixture_dae(x, corruption, steps=500, seed=0)
    walkback = mixture_dae(x, corruption, steps=500, walkback=3, seed=0)
    far_plain = far_fractions(plain, corruption, seed=0, steps=[5, 200])
    far_walkback = far_fractions(walkback, corruption, seed=0, steps=[5, 200])
    assert far_plain[0] - far_walkback[0] > 5 * math.sqrt(2 * 0.25 / 2000)
    assert far_plain[1] < 0.01 and far_walkback[1] < 0.01


if __name__ == "__main__":
    # The figures quoted above (float64, as the tests run): GSN p-values over training and
    # chain seeds, and far-from-data fractions with and without walkback.
    import time

    torch.set_default_dtype(torch.float64)
    jm = lae.JointModel.from_file(ROOT / "models" / "mixture.py")
    for seed in range(6):
        _, x = jm.sample(21_000, seed=seed)
        start = time.perf_counter()
        fit = mixture_dae(x[:20_000], Gaussian(1.5), steps=3000, seed=seed)
        seconds = time.perf_counter() - start
        p = [
            lae.two_sample_test(
                gsn_late_draws(fit, Gaussian(1.5), 10 * seed + k), x[20_000:], "energy", seed=0
            ).pvalue
            for k in range(3)
        ]
        print(f"gsn seed {seed}: fit {seconds:.1f} s, p-values {p}")
    for seed in range(5):
        _, x = jm.sample(5000, seed=seed)
        for walkback in (0, 3):
            fit = mixture_dae(x, Gaussian(0.3), steps=500, walkback=walkback, seed=seed)
            far = far_fractions(fit, Gaussian(0.3), seed, [1, 2, 5, 20, 100, 200])
            print(f"walkback {walkback} seed {seed}: far after steps 1/2/5/20/100/200 {far}")
