"""Score estimates: DAE reconstructions against the exact scores of PPCA and a mixture.

The linear DAE's closed forms. A squared-error DAE whose encoder and decoder are affine
computes r(x̃) = B x̃ + b with rank B <= k = h_dim. For x with mean μ and covariance C and
x̃ = x + σε, the criterion E‖x − B x̃ − b‖² is minimized in b by b = (I − B)μ, and what is
left equals, by completing the square, const + ‖(B − B*)(C + σ²I)^½‖²_F with
B* = C(C + σ²I)⁻¹: without a bottleneck the optimum is r*(x) = μ + B*(x − μ), and
r*(x) − x = −σ²(C + σ²I)⁻¹(x − μ) = σ²∇log p_σ(x). With rank B <= k, Eckart–Young makes
B(C + σ²I)^½ the rank-k truncation of B*(C + σ²I)^½ = C(C + σ²I)^-½ = U diag(λ/√(λ+σ²)) Uᵀ
(C = UΛUᵀ). λ/√(λ+σ²) increases with λ, so the truncation keeps C's top-k eigenvectors U_k:
B_k = U_k diag(λ/(λ+σ²)) U_kᵀ = P_k C(C + σ²I)⁻¹ with P_k = U_k U_kᵀ, which also projects
onto the top-k eigenvectors of C(C + σ²I)⁻¹C (eigenvalues λ²/(λ+σ²), increasing in λ). It
is unique when λ_k > λ_{k+1}: PPCA's are 3.67, 2.83 | 0.25, 0.25, 0.25.

``fit`` draws fresh corruption every step, so with the whole training set in every batch it
minimizes the corruption average over the training rows: the closed forms above with the
rows' mean and (biased) covariance in place of μ and C, the "empirical optimum". A trained
DAE's error against the population optimum is then that optimum's finite-n error plus the
optimization error. The finite-n error's distribution comes from 1000 simulated training
sets of N_TRAIN = 2000 rows, scored on the same 1000 held-out points as here (99.9%
quantiles): 0.0054 for r and 0.081 for r − x without a bottleneck; 0.018 and 0.073 with
k = 2. The optimization budgets are stated where they are used.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.torch_distribution import ExpandedDistribution
from torch import nn

import latentae as lae
from latentae.corruption import Gaussian, Masking
from latentae.denoising import corrupt
from latentae.score import (
    ScoreError,
    dae_score,
    model_score,
    reconstruction,
    score_error,
    widen,
    widened,
)
from latentae.units import GaussianDecoder, GaussianEncoder
from tests.conftest import ROOT

SIGMA = 0.3
N_TRAIN = 2000


def _ppca():
    jm = lae.JointModel.from_file(ROOT / "models" / "ppca.py")
    m = jm.module
    cov = m.W @ m.W.T + m.NOISE**2 * torch.eye(5)
    return jm, m.MU, cov


def _ppca_score(x, mu, cov, sigma):
    return -torch.linalg.solve(cov + sigma**2 * torch.eye(len(mu)), (x - mu).T).T


def _linear_dae_map(cov, sigma, rank=None):
    """B_k = P_k C(C + σ²I)⁻¹ (B* without a rank), derived in the module docstring."""
    b = cov @ torch.linalg.inv(cov + sigma**2 * torch.eye(len(cov)))
    if rank is None:
        return b
    u = torch.linalg.eigh(cov).eigenvectors[:, -rank:]
    return u @ u.T @ b


def _mixture_score(x, weights, means, covs, sigma):
    """∇log Σ_k w_k N(x; m_k, Σ_k + σ²I) = Σ_k resp_k · (−(Σ_k + σ²I)⁻¹(x − m_k))."""
    covs = covs + sigma**2 * torch.eye(means.shape[1])
    comps = torch.distributions.MultivariateNormal(means, covariance_matrix=covs)
    resp = (comps.log_prob(x[:, None]) + weights.log()).softmax(-1)  # (n, K)
    grads = -torch.linalg.solve(covs, (x[:, None] - means).unsqueeze(-1)).squeeze(-1)
    return (resp[..., None] * grads).sum(1)


def _relative(a, b):
    return float((a - b).norm() / b.norm())


# ---------------------------------------------------------------------------- exact scores


@pytest.mark.parametrize("sigma", [0.0, 0.3, 1.0])
def test_model_score_is_the_ppca_closed_form(sigma):
    jm, mu, cov = _ppca()
    x = torch.cat([jm.sample(200, seed=1)[1], 4 * torch.randn(20, 5)])  # and far off the data
    torch.testing.assert_close(
        model_score(jm, x, sigma), _ppca_score(x, mu, cov, sigma), rtol=1e-8, atol=1e-8
    )


@pytest.mark.parametrize("sigma", [0.0, 0.3, 1.0])
def test_model_score_is_the_mixture_closed_form(sigma):
    jm = lae.JointModel.from_file(ROOT / "models" / "mixture.py")
    m = jm.module
    covs = m.SCALE_TRILS @ m.SCALE_TRILS.mT
    x = torch.cat([jm.sample(200, seed=1)[1], 4 * torch.randn(20, 2)])
    expected = _mixture_score(x, m.WEIGHTS, m.MEANS, covs, sigma)
    score = model_score(jm, x, sigma)
    assert score.shape == x.shape
    torch.testing.assert_close(score, expected, rtol=1e-8, atol=1e-8)


def _student_mixture(n):
    locs = torch.tensor([[-1.0, 0.0], [1.5, 0.5]])
    with pyro.plate("data", n):
        h = pyro.sample("h", dist.Categorical(torch.tensor([0.4, 0.6])))
        pyro.sample("x", dist.StudentT(4.0, locs[h], 0.7).to_event(1))


def test_model_score_without_widening_takes_any_real_observation():
    # Fisher's identity with enumeration equals the gradient of log Σ_k p(h_k, x).
    jm = lae.JointModel(_student_mixture)
    x = jm.sample(50, seed=0)[1].requires_grad_(True)
    values = torch.arange(2).reshape(2, 1)
    log_marginal = jm.log_joint(values, x.unsqueeze(0)).logsumexp(0)
    (expected,) = torch.autograd.grad(log_marginal.sum(), x)
    torch.testing.assert_close(model_score(jm, x, 0.0), expected, rtol=1e-10, atol=1e-10)


def test_widening_a_non_gaussian_observation_is_refused():
    jm = lae.JointModel(_student_mixture)
    x = jm.sample(5, seed=0)[1]
    message = r"cannot widen site 'x'.*StudentT.*only Gaussian observations"
    with pytest.raises(ValueError, match=message):
        model_score(jm, x, 0.5)
    with pytest.raises(ValueError, match=message):
        pyro.poutine.trace(widen(0.5)(_student_mixture)).get_trace(3)


def test_model_without_an_exact_encoder_is_refused():
    jm = lae.JointModel.from_file(ROOT / "models" / "spiral.py")
    with pytest.raises(ValueError, match=r"no exact encoder.*dae_score"):
        model_score(jm, jm.sample(3, seed=0)[1], 0.1)


def test_discrete_observations_have_no_score():
    def bernoulli_mixture(n):
        with pyro.plate("data", n):
            h = pyro.sample("h", dist.Categorical(torch.tensor([0.5, 0.5])))
            probs = torch.tensor([[0.2, 0.9], [0.7, 0.1]])[h]
            pyro.sample("x", dist.Bernoulli(probs).to_event(1))

    jm = lae.JointModel(bernoulli_mixture)
    with pytest.raises(ValueError, match=r"support.*real-valued observations only"):
        model_score(jm, jm.sample(3, seed=0)[1])


def test_model_score_checks_its_arguments():
    jm, _, _ = _ppca()
    x = jm.sample(3, seed=0)[1]
    with pytest.raises(ValueError, match=r"shape \(3, 4\).*shape \(n, 5\)"):
        model_score(jm, x[:, :4], 0.3)
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        model_score(jm, x, -0.1)
    torch.testing.assert_close(model_score(jm, x, Gaussian(0.3)), model_score(jm, x, 0.3))
    with pytest.raises(TypeError, match="JointModel"):
        model_score(lambda n: None, x)


# ---------------------------------------------------------------------------- widen


def test_widen_adds_sigma_squared_to_every_gaussian_form():
    var = 0.25
    loc = torch.randn(4, 3)
    cov = torch.eye(3) + 0.3 * torch.ones(3, 3)
    cases = [
        dist.Normal(loc, 0.5),
        dist.Normal(loc, 0.5).to_event(1),
        dist.MultivariateNormal(loc, cov),
        dist.LowRankMultivariateNormal(loc, torch.ones(3, 1), torch.ones(3)),
        ExpandedDistribution(dist.Normal(loc[0], 0.5), torch.Size([4, 3])),
    ]
    for d in cases:
        with widen(var**0.5):
            trace = pyro.poutine.trace(lambda d=d: pyro.sample("x", d)).get_trace()
        wide = trace.nodes["x"]["fn"]
        assert (wide.batch_shape, wide.event_shape) == (d.batch_shape, d.event_shape)
        torch.testing.assert_close(wide.mean, d.mean)
        torch.testing.assert_close(wide.variance, d.variance + var)
        if hasattr(d, "covariance_matrix"):  # and the correlations stay
            torch.testing.assert_close(
                wide.covariance_matrix, d.covariance_matrix + var * torch.eye(3)
            )


def test_widen_touches_only_the_named_site():
    def model():
        pyro.sample("h", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(0.0, 1.0))

    trace = pyro.poutine.trace(widen(1.0, site="y")(model)).get_trace()
    assert float(trace.nodes["h"]["fn"].scale) == 1.0
    assert float(trace.nodes["y"]["fn"].scale) == pytest.approx(2**0.5)


def test_widened_ppca_has_the_smoothed_marginal():
    jm, _, cov = _ppca()
    wide = widened(jm, 0.4)
    assert wide.exact_methods() == ["laplace"]
    # Its draws have covariance C + σ²I. A sample covariance entry has variance
    # (S_ij² + S_ii S_jj)/n <= 8/20000 here (S_ii <= 2), a standard error below 0.02: 0.1 is
    # 5 of them (15 distinct entries fail together with probability < 1e-5), and the
    # unwidened covariance, 0.16 off on the diagonal, fails.
    x = wide.sample(20000, seed=0)[1]
    torch.testing.assert_close(torch.cov(x.T), cov + 0.16 * torch.eye(5), atol=0.1, rtol=0)
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        widen(-1.0)


# ---------------------------------------------------------------------------- DAE estimates


def _fit(enc, dec, x, steps, lr, seed=0):
    lae.fit(enc, dec, x, Gaussian(SIGMA), steps=steps, batch_size=len(x), lr=lr,
            schedule="cosine", validation=None, progress=False, seed=seed)  # fmt: skip


def _empirical_map(x, rank=None):
    mu = x.mean(0)
    return mu, _linear_dae_map(torch.cov(x.T, correction=0), SIGMA, rank)


def test_linear_dae_without_bottleneck_reaches_the_optimum_and_the_score():
    jm, mu, cov = _ppca()
    x, held = jm.sample(N_TRAIN, seed=1)[1], jm.sample(1000, seed=2)[1]
    # The decoder keeps its learned diagonal covariance: without a bottleneck each output
    # coordinate is its own regression, so the weights it puts on them do not move the mean.
    enc, dec = GaussianEncoder(5, 5, hidden=(), noise=0.0), GaussianDecoder(5, 5, hidden=())
    _fit(enc, dec, x, steps=800, lr=0.05)
    with torch.no_grad():
        r = reconstruction(enc, dec, held)
        estimate = dae_score(enc, dec, held, SIGMA)

    r_star = mu + (held - mu) @ _linear_dae_map(cov, SIGMA).T
    # Finite n: at most 0.0054 (99.9%), and optimization adds little (0.004 in all here).
    # The identity map r(x) = x is 0.067 away, so this separates a trained DAE.
    assert _relative(r, r_star) < 0.02

    exact = _ppca_score(held, mu, cov, SIGMA)
    torch.testing.assert_close(model_score(jm, held, SIGMA), exact, rtol=1e-8, atol=1e-8)
    # The optimization error alone, against the training rows' own optimum: 0.014-0.023
    # over five initializations and data sets; 0.06 allows 2.5 times the largest.
    mu_n, b_n = _empirical_map(x)
    empirical = (mu_n + (held - mu_n) @ b_n.T - held) / SIGMA**2
    assert score_error(estimate, empirical).relative < 0.06
    # Against ∇log p_σ: finite n (0.081 at 99.9%) plus that optimization budget.
    assert score_error(estimate, exact).relative < 0.081 + 0.06


def test_bottlenecked_linear_dae_reaches_the_best_rank_k_map():
    jm, mu, cov = _ppca()
    x, held = jm.sample(N_TRAIN, seed=1)[1], jm.sample(1000, seed=2)[1]
    enc, dec = GaussianEncoder(5, 2, hidden=(), noise=0.0), GaussianDecoder(2, 5, hidden=())
    # Squared error: a fixed isotropic covariance (scale_raw = 0 is unit scale). A learned
    # diagonal one would weight the coordinates, and the weighted rank-k optimum has no
    # closed form unless the weights commute with C (a learned full covariance does: its
    # optimum weights by the residual covariance σ²C(C + σ²I)⁻¹, giving the same B_k).
    dec.scale_raw.requires_grad_(False)
    _fit(enc, dec, x, steps=800, lr=0.05)
    with torch.no_grad():
        r = reconstruction(enc, dec, held)

    r_k = mu + (held - mu) @ _linear_dae_map(cov, SIGMA, rank=2).T
    r_full = mu + (held - mu) @ _linear_dae_map(cov, SIGMA).T
    # Finite n: 0.018 at 99.9%, and optimization adds little (0.014 in all here).
    assert _relative(r, r_k) < 0.03
    # The optimization error alone (r − x scale): at most 0.0032 over five initializations
    # and data sets, so 0.03 is ten times the largest.
    mu_n, b_n = _empirical_map(x, rank=2)
    assert _relative(r - held, mu_n + (held - mu_n) @ b_n.T - held) < 0.03
    # Against the population rank-2 map: finite n (0.073 at 99.9%) plus that budget. The
    # full-rank optimum is 0.73 away from it (2.7 in its own norm), so the bottleneck shows.
    assert _relative(r - held, r_k - held) < 0.073 + 0.03
    assert _relative(r - held, r_full - held) > 1.0


def test_mlp_dae_score_points_along_the_mixture_score():
    jm = lae.JointModel.from_file(ROOT / "models" / "mixture.py")
    sigma = 0.5
    x, held = jm.sample(N_TRAIN, seed=100)[1], jm.sample(1000, seed=2)[1]
    enc = GaussianEncoder(2, 8, hidden=(64,), noise=0.0)
    dec = GaussianDecoder(8, 2, hidden=(64,))
    lae.fit(enc, dec, x, Gaussian(sigma), steps=800, batch_size=256, lr=0.01,
            schedule="cosine", validation=None, progress=False, seed=0)  # fmt: skip
    with torch.no_grad():
        error = score_error(dae_score(enc, dec, held, sigma), model_score(jm, held, sigma))
    # Over ten data sets and initializations the median cosine was 0.9955-0.998 and the
    # relative error 0.21-0.26 (capacity and training length, not noise: the estimate is
    # deterministic given the net). A single Gaussian fitted to the data scores a median
    # cosine of 0.44 and a relative error of 0.99, so both bounds separate.
    assert error.median_cosine > 0.95
    assert error.relative < 0.4


class _SquareDecoder(nn.Module):
    """p(x | h) = N(h², 1): a mean that is not affine in h."""

    def forward(self, h):
        return dist.Normal(h**2, 1.0).to_event(1)


def test_stochastic_encoder_is_averaged_by_monte_carlo():
    enc = GaussianEncoder(2, 2, hidden=(4,), noise=0.5)
    x = torch.randn(10, 2)
    num = 400
    r = reconstruction(enc, _SquareDecoder(), x, num_samples=num, seed=3)
    m = enc.mean_map(x).detach()
    # E[h²] = m² + τ²; Var(h²) = 4m²τ² + 2τ⁴. 20 coordinates at 5 standard errors fail
    # together with probability about 1e-5.
    se = ((4 * m**2 * 0.25 + 2 * 0.5**4) / num).sqrt()
    assert bool(((r - (m**2 + 0.25)).abs() < 5 * se).all())
    # Seeded: the same draws again.
    torch.testing.assert_close(reconstruction(enc, _SquareDecoder(), x, num_samples=num, seed=3), r)


def test_point_mass_and_affine_decoders_are_exact():
    x = torch.randn(6, 3)
    dec = GaussianDecoder(2, 3, hidden=())
    enc = GaussianEncoder(3, 2, hidden=(5,), noise=0.0)
    torch.testing.assert_close(reconstruction(enc, dec, x), dec(enc.mean_map(x)).mean)
    # A noisy encoder under an affine decoder: E_h[W h + b] = W E[h] + b, no sampling.
    enc.noise = 0.7
    torch.testing.assert_close(
        reconstruction(enc, dec, x, num_samples=1), dec(enc.mean_map(x)).mean
    )
    score = dae_score(enc, dec, x, Gaussian(0.5))
    torch.testing.assert_close(score, (dec(enc.mean_map(x)).mean - x) / 0.25)


def test_dae_score_checks_its_arguments():
    enc, dec = GaussianEncoder(3, 2, noise=0.0), GaussianDecoder(2, 3)
    x = torch.randn(4, 3)
    for sigma in (0.0, -0.3, float("inf")):
        with pytest.raises(ValueError, match=r"sigma must be .*> 0"):
            dae_score(enc, dec, x, sigma)
    with pytest.raises(ValueError, match="Gaussian corruption only"):
        dae_score(enc, dec, x, Masking(0.2))
    with pytest.raises(TypeError, match=r"CorruptedEncoder.*corrupted\.encoder"):
        dae_score(corrupt(enc, Gaussian(0.3)), dec, x, 0.3)
    with pytest.raises(ValueError, match="expects contexts with 3 features"):
        dae_score(enc, dec, torch.randn(4, 5), 0.3)
    with pytest.raises(ValueError, match=r"reconstructs rows of shape \(4,\).*shape \(3,\)"):
        dae_score(enc, GaussianDecoder(2, 4), x, 0.3)
    with pytest.raises(ValueError, match=r"shape \(n, d\)"):
        dae_score(enc, dec, torch.randn(3), 0.3)
    with pytest.raises(TypeError, match="floating-point"):
        dae_score(enc, dec, torch.ones(4, 3, dtype=torch.long), 0.3)
    with pytest.raises(ValueError, match="num_samples"):
        dae_score(enc, dec, x, 0.3, num_samples=0)
    flow = lae.FlowDecoder(2, 3, hidden=(4,), transforms=1)
    with pytest.raises(ValueError, match="TransformedDistribution has no closed-form mean"):
        dae_score(enc, flow, x, 0.3)
    with pytest.raises(ValueError, match="non-finite value"):
        dae_score(enc, dec, torch.full((2, 3), float("nan")), 0.3)


# ---------------------------------------------------------------------------- score_error


def test_score_error_figures():
    reference = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0], [0.0, 0.0]])
    estimate = torch.tensor([[2.0, 0.0], [0.0, -2.0], [3.0, 4.0], [1.0, 0.0]])
    err = score_error(estimate, reference)
    assert isinstance(err, ScoreError)
    assert err.relative == pytest.approx((1 + 16 + 0 + 1) ** 0.5 / (1 + 4 + 25) ** 0.5)
    assert err.norm_ratio == pytest.approx((4 + 4 + 25 + 1) ** 0.5 / 30**0.5)
    # A zero reference row has no relative error or angle: NaN, left out of the medians.
    torch.testing.assert_close(err.per_point[:3], torch.tensor([1.0, 2.0, 0.0]))
    torch.testing.assert_close(err.cosine[:3], torch.tensor([1.0, -1.0, 1.0]))
    assert err.per_point[3].isnan() and err.cosine[3].isnan()
    assert err.median_relative == 1.0
    assert err.median_cosine == 1.0


def test_score_error_checks_its_arguments():
    a = torch.randn(5, 2)
    with pytest.raises(ValueError, match=r"shape \(5, 2\) but reference has shape \(5, 3\)"):
        score_error(a, torch.randn(5, 3))
    with pytest.raises(ValueError, match="zero everywhere"):
        score_error(a, torch.zeros(5, 2))
    with pytest.raises(TypeError, match="floating-point"):
        score_error(a.numpy(), a)
    with pytest.raises(ValueError, match="one row per point"):
        score_error(torch.zeros(0, 2), torch.zeros(0, 2))
