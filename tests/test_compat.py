"""Compatibility diagnostics: cross-ratio, interaction and the linear-Gaussian closed forms."""

import json
import math

import pytest
import torch

import latentae as lae
from latentae.compat import _stationary_cov, cross_ratio, gaussian, interaction
from latentae.conditionals import _MIN_SCALE, _SOFTPLUS_ONE
from tests.conftest import ROOT

N = 4000  # data rows drawn from PPCA


@pytest.fixture
def ppca():
    return lae.JointModel.from_file(ROOT / "models" / "ppca.py")


def ppca_params(jm):
    w, mu, s = jm.module.W.double(), jm.module.MU.double(), float(jm.module.NOISE)
    return w, mu, s


def _raw_scale(scale):
    """The raw parameter r with softplus(r + softplus⁻¹(1)) + _MIN_SCALE == scale."""
    y = torch.as_tensor(scale - _MIN_SCALE)
    return torch.log(torch.expm1(y)) - _SOFTPLUS_ONE


def exact_linear_pair(jm, decoder_weight=None):
    """Decoder N(W h + mu, s² I) and the exact PPCA posterior N(M⁻¹Wᵀ(x − mu), s² M⁻¹) as
    affine Gaussian conditionals (``decoder_weight`` replaces W in the decoder only)."""
    w, mu, s = ppca_params(jm)
    k = w.shape[1]
    m = w.T @ w + s**2 * torch.eye(k)
    gain = torch.linalg.solve(m, w.T)
    enc = lae.GaussianConditional(5, 2, cov="full")
    dec = lae.GaussianDecoder(2, 5)
    tril = torch.linalg.cholesky(s**2 * torch.linalg.inv(m))
    with torch.no_grad():
        enc.loc_head.weight.copy_(gain)
        enc.loc_head.bias.copy_(-gain @ mu)
        rows, cols = enc._tril
        raw = tril[rows, cols].clone()
        on_diag = rows == cols
        raw[on_diag] = _raw_scale(tril[rows[on_diag], cols[on_diag]])
        enc.scale_raw.copy_(raw)
        dec.loc_head.weight.copy_(w if decoder_weight is None else decoder_weight)
        dec.loc_head.bias.copy_(mu)
        dec.scale_raw.fill_(float(_raw_scale(s)))
    return enc, dec


def perturbed_pair(jm):
    w, _, _ = ppca_params(jm)
    noise = torch.randn(w.shape, generator=torch.Generator().manual_seed(1), dtype=w.dtype)
    return exact_linear_pair(jm, decoder_weight=w + 0.1 * noise)


@pytest.fixture
def data(ppca):
    return ppca.sample(N, seed=0)[1].double()


# --- the exact pairs ------------------------------------------------------------------------------


def test_exact_model_pair_is_compatible(ppca, data):
    enc, dec = ppca.encoder("laplace"), ppca.decoder()
    cr = cross_ratio(enc, dec, data, num_pairs=1000, seed=0)
    mixed = interaction(enc, dec, data, num_points=256, seed=0)
    assert cr.statistic < 1e-8
    assert mixed.statistic < 1e-8
    assert cr.num_pairs == 1000 and mixed.num_points == 256
    json.dumps(cr.to_dict()), json.dumps(mixed.to_dict())


def test_exact_linear_pair_is_built_right(ppca):
    w, mu, s = ppca_params(ppca)
    enc, dec = exact_linear_pair(ppca)
    m = w.T @ w + s**2 * torch.eye(2)
    v, c, sigma = enc.linear_gaussian()
    wd, b, psi = dec.linear_gaussian()
    torch.testing.assert_close(v, torch.linalg.solve(m, w.T), rtol=0, atol=1e-12)
    torch.testing.assert_close(c, -torch.linalg.solve(m, w.T) @ mu, rtol=0, atol=1e-12)
    torch.testing.assert_close(sigma, s**2 * torch.linalg.inv(m), rtol=0, atol=1e-12)
    torch.testing.assert_close(wd, w, rtol=0, atol=1e-12)
    torch.testing.assert_close(b, mu, rtol=0, atol=1e-12)
    torch.testing.assert_close(psi, s**2 * torch.eye(5), rtol=0, atol=1e-12)


def test_exact_linear_pair_closed_forms(ppca, data):
    w, mu, s = ppca_params(ppca)
    enc, dec = exact_linear_pair(ppca)
    r = gaussian(enc, dec, data)
    assert r.mismatch < 1e-8
    # The exact Gibbs chain x -> h ~ p(h|x) -> x ~ p(x|h) of PPCA leaves p_model(x) invariant.
    torch.testing.assert_close(r.stationary_mean, mu, rtol=0, atol=1e-8)
    torch.testing.assert_close(r.stationary_cov, w @ w.T + s**2 * torch.eye(5), rtol=0, atol=1e-8)
    # x is drawn from p_model, so the data law N(x̄, Ĉ) differs from the stationary law (and the
    # optimal decoder from the model's) only by sampling error: the KL of a fitted Gaussian
    # from the truth is ≈ d(d + 3)/(4n) = 10/n nats on average for d = 5.
    expected = 5 * 8 / (4 * N)
    assert r.stationary_kl < 5 * expected
    assert r.decoder_kl < 5 * expected
    assert set(json.loads(json.dumps(r.to_dict()))) == set(r._fields)
    # The sampled diagnostics agree with the closed form.
    assert cross_ratio(enc, dec, data, num_pairs=500, seed=0).statistic < 1e-8
    assert interaction(enc, dec, data, num_points=64, seed=0).statistic < 1e-8


def test_dae_encoder_uses_the_corrupted_closed_form(ppca, data):
    enc = lae.corrupt(lae.GaussianEncoder(5, 2, noise=0.3), lae.corruption.Gaussian(0.5))
    dec = lae.GaussianDecoder(2, 5)
    with torch.no_grad():
        enc.encoder.net[0].weight.mul_(0.2)
    r = gaussian(enc, dec, data)
    with torch.no_grad():
        v, _, sigma = enc.linear_gaussian()
        wd, _, psi = dec.linear_gaussian()
    expected = (torch.linalg.solve(sigma, v) - torch.linalg.solve(psi, wd).T).norm()
    assert r.mismatch == pytest.approx(float(expected / torch.linalg.solve(sigma, v).norm()))
    assert r.mismatch > 0.1


# --- a perturbed pair -----------------------------------------------------------------------------


def test_perturbed_pair_is_detected(ppca, data):
    enc, dec = perturbed_pair(ppca)
    cr = cross_ratio(enc, dec, data, num_pairs=1000, seed=0)
    mixed = interaction(enc, dec, data, num_points=256, seed=0)
    assert cr.statistic > 5 * cr.stderr > 0
    # A linear-Gaussian pair's mixed partials are constant, so the standard error over points
    # is 0 up to rounding and the statistic is exact.
    assert mixed.statistic > max(5 * mixed.stderr, 1e-3)
    r = gaussian(enc, dec, data)
    assert r.mismatch > 0.05
    assert r.decoder_kl > 0.01


def test_nonlinear_decoder_is_detected(ppca, data):
    torch.manual_seed(0)
    dec = lae.GaussianDecoder(2, 5, hidden=(8,))
    enc = ppca.encoder("laplace")
    cr = cross_ratio(enc, dec, data, num_pairs=1000, seed=0)
    mixed = interaction(enc, dec, data, num_points=256, seed=0)
    assert cr.statistic > 5 * cr.stderr > 0
    assert mixed.statistic > 5 * mixed.stderr > 0


def test_cross_ratio_is_seeded(ppca, data):
    enc, dec = perturbed_pair(ppca)
    a = cross_ratio(enc, dec, data, num_pairs=200, seed=3)
    b = cross_ratio(enc, dec, data, num_pairs=200, seed=3)
    assert a.to_dict() == b.to_dict()
    assert torch.equal(a.delta_e, b.delta_e) and torch.equal(a.delta_d, b.delta_d)
    assert cross_ratio(enc, dec, data, num_pairs=200, seed=4).statistic != a.statistic


# --- the Lyapunov solvers -------------------------------------------------------------------------


@pytest.mark.parametrize("d", [3, 40])
def test_stationary_cov_solves_the_lyapunov_equation(d):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(d, d, generator=gen)
    a = 0.9 * a / torch.linalg.eigvals(a).abs().max()
    b = torch.randn(d, d, generator=gen)
    q = b @ b.T + torch.eye(d)
    s = _stationary_cov(a, q)
    torch.testing.assert_close(s, a @ s @ a.T + q, rtol=1e-9, atol=1e-9)


# --- input validation -----------------------------------------------------------------------------


def test_interaction_rejects_discrete_h():
    enc = lae.CategoricalConditional(3, 4)
    dec = lae.GaussianConditional(1, 3)
    with pytest.raises(ValueError, match="continuous latent h"):
        interaction(enc, dec, torch.randn(10, 3), num_points=5, seed=0)


def test_interaction_rejects_discrete_x():
    enc = lae.GaussianConditional(3, 2)
    dec = lae.BernoulliDecoder(2, 3)
    x = torch.randint(0, 2, (10, 3)).double()
    with pytest.raises(ValueError, match="continuous x"):
        interaction(enc, dec, x, num_points=5, seed=0)
    with pytest.raises(ValueError, match="continuous x"):
        interaction(enc, dec, x.long(), num_points=5, seed=0)


def test_gaussian_needs_linear_gaussian(ppca, data):
    _, dec = exact_linear_pair(ppca)
    with pytest.raises(ValueError, match=r"linear_gaussian\(\)"):
        gaussian(ppca.encoder("laplace"), dec, data)
    with pytest.raises(ValueError, match="affine"):
        gaussian(lae.GaussianEncoder(5, 2), lae.GaussianDecoder(2, 5, hidden=(4,)), data)


def test_gaussian_rejects_an_unstable_chain(ppca, data):
    enc, dec = exact_linear_pair(ppca)
    with torch.no_grad():
        dec.loc_head.weight.mul_(100)
    with pytest.raises(ValueError, match="spectral radius"):
        gaussian(enc, dec, data)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, None])
def test_bad_counts(bad):
    enc, dec = lae.GaussianConditional(3, 2), lae.GaussianDecoder(2, 3)
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="num_pairs must be a positive integer"):
        cross_ratio(enc, dec, x, num_pairs=bad)
    with pytest.raises(ValueError, match="num_points must be a positive integer"):
        interaction(enc, dec, x, num_points=bad)


def test_needs_two_rows_and_densities():
    enc, dec = lae.GaussianConditional(3, 2), lae.GaussianDecoder(2, 3)
    with pytest.raises(ValueError, match="at least 2 rows"):
        cross_ratio(enc, dec, torch.randn(1, 3))
    with pytest.raises(ValueError, match="needs log densities"):
        cross_ratio(lae.GaussianEncoder(3, 2, noise=0), dec, torch.randn(5, 3))


def test_no_interaction_anywhere_counts_as_compatible():
    enc, dec = lae.GaussianConditional(3, 2), lae.GaussianDecoder(2, 3)
    with torch.no_grad():
        enc.loc_head.weight.zero_()
        dec.loc_head.weight.zero_()
    assert cross_ratio(enc, dec, torch.randn(20, 3), num_pairs=50, seed=0).statistic == 0
    r = interaction(enc, dec, torch.randn(20, 3), num_points=10, seed=0)
    assert (r.statistic, r.stderr) == (0.0, 0.0)
    assert math.isfinite(r.statistic)


# ---------------------------------------------------------------------------- gibbs_test


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gibbs_test_accepts_the_exact_pair(seed):
    # For a compatible pair the p-value is uniform: each seed fails with probability 0.01.
    jm = lae.JointModel.from_file(ROOT / "models" / "ppca.py")
    _, x = jm.sample(3000, seed=10 + seed)
    result = lae.compat.gibbs_test(jm.encoder("laplace"), jm.decoder(), x[:2000], x[2000:],
                                   num_chains=1000, burn_in=20, seed=seed)  # fmt: skip
    assert result.mmd_pvalue > 0.01 and result.energy_pvalue > 0.01
    assert result.floor_energy_pvalue > 0.01  # two halves of one sample
    assert set(result.to_dict()) >= {"mmd", "energy", "floor_mmd", "num_chains"}


def test_gibbs_test_rejects_a_clearly_incompatible_pair():
    jm = lae.JointModel.from_file(ROOT / "models" / "ppca.py")
    w, mu, s = jm.module.W, jm.module.MU, jm.module.NOISE
    decoder = lae.GaussianDecoder(2, 5, cov="diag")
    with torch.no_grad():  # d(x|h) = N(2 W h + mu, s^2 I): twice the model's loadings
        decoder.loc_head.weight.copy_(2 * w)
        decoder.loc_head.bias.copy_(mu)
        # softplus(raw + _SOFTPLUS_ONE) + _MIN_SCALE = s
        raw = torch.tensor(s - _MIN_SCALE).expm1().log() - _SOFTPLUS_ONE
        decoder.scale_raw.fill_(float(raw))
        w2, b2, cov2 = decoder.linear_gaussian()
    assert torch.allclose(w2, 2 * w) and torch.allclose(b2, mu)
    assert torch.allclose(cov2, s**2 * torch.eye(5))
    _, x = jm.sample(3000, seed=20)
    result = lae.compat.gibbs_test(jm.encoder("laplace"), decoder, x[:2000], x[2000:],
                                   num_chains=1000, burn_in=20, num_permutations=1999,
                                   seed=0)  # fmt: skip
    # 1999 permutations: the smallest attainable p-value, 1/2000, lies below the level.
    assert result.mmd_pvalue < 0.001 and result.energy_pvalue < 0.001
    assert result.floor_energy_pvalue > 0.001


def test_gibbs_test_validates_its_input():
    jm = lae.JointModel.from_file(ROOT / "models" / "ppca.py")
    _, x = jm.sample(20, seed=0)
    with pytest.raises(ValueError, match="num_chains must be a positive integer"):
        lae.compat.gibbs_test(jm.encoder("laplace"), jm.decoder(), x, x, num_chains=0)
    with pytest.raises(
        ValueError, match=r"x_train rows have shape \(5,\) but x_heldout rows \(4,\)"
    ):
        lae.compat.gibbs_test(jm.encoder("laplace"), jm.decoder(), x, x[:, :4])


# ---------------------------------------------------------------------------- check


def test_check_runs_what_applies_to_a_model_pair():
    jm = lae.JointModel.from_file(ROOT / "models" / "ppca.py")
    _, x = jm.sample(2000, seed=0)
    report = lae.compat.check(jm.encoder("laplace"), jm.decoder(), x, num_chains=500,
                              burn_in=20, seed=0)  # fmt: skip
    assert sorted(report.results) == ["cross_ratio", "gibbs", "interaction"]
    assert "linear_gaussian" in report.skipped["gaussian"]
    assert report["cross_ratio"].statistic < 1e-8 and report["interaction"].statistic < 1e-8
    assert json.loads(json.dumps(report.to_dict()))["results"]["gibbs"]["num_chains"] == 500


def test_check_on_a_dae_pair_includes_the_closed_forms():
    jm = lae.JointModel.from_file(ROOT / "models" / "ppca.py")
    _, x = jm.sample(1000, seed=0)
    encoder, decoder = lae.GaussianEncoder(5, 2, noise=0.1), lae.GaussianDecoder(2, 5, cov="full")
    report = lae.compat.check(encoder, decoder, x, corruption=lae.corruption.Gaussian(0.5),
                              num_pairs=200, num_points=32, num_chains=200, burn_in=5,
                              seed=0)  # fmt: skip
    assert sorted(report.results) == ["cross_ratio", "gaussian", "gibbs", "interaction"]
    # an untrained pair is far from compatible
    assert report["gaussian"].mismatch > 0.1
    assert report["cross_ratio"].statistic > 5 * report["cross_ratio"].stderr


def test_check_refuses_nonfinite_data():
    jm = lae.JointModel.from_file(ROOT / "models" / "ppca.py")
    _, x = jm.sample(10, seed=0)
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match="row 3, column 1"):
        lae.compat.check(jm.encoder("laplace"), jm.decoder(), x)
