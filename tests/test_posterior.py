"""Model-derived encoders against closed forms and Monte Carlo error bounds."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import kl_divergence

import latentae as lae
from tests.closed_forms import gaussian_posterior, ppca_posterior
from tests.conftest import ROOT

# A z-score beyond 4 has probability 6e-5 under the normal approximation of a Monte Carlo
# estimate; with the handful of checks per test, a correct sampler fails far less than 1e-3.
Z = 4.0


def relative(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture
def ppca():
    jm = lae.JointModel.from_file(ROOT / "models" / "ppca.py")
    return jm, vars(jm.module)


def exact_ppca(constants, x):
    return ppca_posterior(constants["W"], constants["MU"], constants["NOISE"], x)


def test_laplace_is_exact_on_ppca(ppca):
    jm, c = ppca
    _, x = jm.sample(50, seed=0)
    q = jm.encoder("laplace")(x)
    mean, cov = exact_ppca(c, x)
    assert relative(q.mean, mean) < 1e-6
    assert relative(q.covariance_matrix, cov.expand(50, 2, 2)) < 1e-6


W_FA = torch.tensor([[1.0, 0.0, 0.5], [0.3, -1.2, 0.0], [0.0, 0.7, 0.9], [1.5, 0.2, -0.4],
                     [-0.6, 0.8, 0.1], [0.2, 0.2, 1.1]], dtype=torch.float64)  # fmt: skip
B_FA = torch.tensor([0.1, -0.5, 1.0, 0.0, 2.0, -1.0], dtype=torch.float64)
PSI_FA = torch.tensor([0.1, 0.5, 0.05, 1.0, 0.3, 0.2], dtype=torch.float64)  # noise variances


def factor_analysis(n):
    with pyro.plate("data", n):
        h = pyro.sample("h", dist.Normal(torch.zeros(3), 1.0).expand([n, 3]).to_event(1))
        pyro.sample("x", dist.Normal(h @ W_FA.T + B_FA, PSI_FA.sqrt()).to_event(1))


def test_laplace_is_exact_on_factor_analysis():
    jm = lae.JointModel(factor_analysis)
    assert jm.exact_methods() == ["laplace"]
    _, x = jm.sample(40, seed=1)
    q = jm.encoder("laplace")(x)
    mean, cov = gaussian_posterior(torch.zeros(3), torch.eye(3), W_FA, B_FA, torch.diag(PSI_FA), x)
    assert relative(q.mean, mean) < 1e-6
    assert relative(q.covariance_matrix, cov.expand(40, 3, 3)) < 1e-6


def test_laplace_mode_is_differentiable_in_x(ppca):
    jm, c = ppca
    _, x = jm.sample(3, seed=2)
    x.requires_grad_(True)
    q = jm.encoder("laplace")(x)
    w, s2 = c["W"], c["NOISE"] ** 2
    gain = torch.linalg.inv(w.T @ w + s2 * torch.eye(2)) @ w.T  # d mean / d x
    for j in range(2):
        (g,) = torch.autograd.grad(q.mean[:, j].sum(), x, retain_graph=True)
        assert torch.allclose(g, gain[j].expand(3, 5), atol=1e-10)
    # the log density is differentiable in both its value and its context
    h = q.mean.detach().requires_grad_(True)
    gx, gh = torch.autograd.grad(q.log_prob(h + 0.1).sum(), (x, h))
    assert torch.isfinite(gx).all() and gh.abs().sum() > 0


def test_laplace_on_a_bounded_latent_finds_the_right_arm():
    jm = lae.JointModel.from_file(ROOT / "models" / "spiral.py")
    h, x = jm.sample(200, seed=3)
    q = jm.encoder("laplace")(x)
    draws = q.sample((400,))
    assert ((draws > 0) & (draws < 1)).all()
    z = (draws.mean(0) - h) / draws.std(0)
    # a wrong mode lies a whole turn away (hundreds of posterior sds); a right one within 5
    assert z.abs().max() < 5


def test_enumerate_is_bayes_rule():
    jm = lae.JointModel.from_file(ROOT / "models" / "mixture.py")
    c = vars(jm.module)
    _, x = jm.sample(100, seed=4)
    components = dist.MultivariateNormal(c["MEANS"], scale_tril=c["SCALE_TRILS"])
    joint = c["WEIGHTS"].log() + components.log_prob(x[:, None, :])
    responsibilities = (joint - joint.logsumexp(-1, keepdim=True)).exp()
    q = jm.encoder("enumerate")(x)
    assert (q.probs - responsibilities).abs().max() < 1e-10


A_BIN = torch.tensor([[1.0, -1.0], [0.5, 2.0], [-1.5, 0.3]], dtype=torch.float64)


def binary_units(n):
    with pyro.plate("data", n):
        h = pyro.sample("h", dist.Bernoulli(0.3).expand([n, 3]).to_event(1))
        pyro.sample("x", dist.Normal(h @ A_BIN, 1.0).to_event(1))


def test_enumerate_over_a_vector_of_binary_units():
    jm = lae.JointModel(binary_units)
    _, x = jm.sample(6, seed=5)
    q = jm.encoder("enumerate")(x)
    values = torch.tensor([[a, b, c] for a in (0.0, 1.0) for b in (0.0, 1.0) for c in (0.0, 1.0)])
    log_prior = (values * np.log(0.3) + (1 - values) * np.log(0.7)).sum(-1)
    log_lik = dist.Normal(values @ A_BIN, 1.0).log_prob(x[:, None, :]).sum(-1)
    expected = (log_prior + log_lik).log_softmax(-1)
    for v in range(8):
        got = q.log_prob(values[v].expand(6, 3))
        assert (got - expected[:, v]).abs().max() < 1e-10
    assert torch.allclose(q.mean, expected.exp() @ values)


def weighted_moments(samples, log_weights):
    w = (log_weights - log_weights.logsumexp(-1, keepdim=True)).exp()[..., None]
    mean = (w * samples).sum(-2)
    centred = samples - mean[..., None, :]
    var = (w * centred**2).sum(-2)
    m4 = (w * centred**4).sum(-2)
    return mean, var, m4


def test_importance_moments_within_mcse(ppca):
    jm, c = ppca
    _, x = jm.sample(4, seed=6)
    q = jm.encoder("importance", num_particles=200_000, seed=0)(x)
    mean, var, m4 = weighted_moments(q._samples, q._log_weights)
    ess = q.ess[:, None]
    assert (ess > 1000).all()  # enough for the normal approximation behind Z
    exact_mean, exact_cov = exact_ppca(c, x)
    exact_var = exact_cov.diagonal().expand(4, 2)
    # ESS-based Monte Carlo standard errors of the weighted mean and variance
    assert ((mean - exact_mean).abs() < Z * (var / ess).sqrt()).all()
    assert ((var - exact_var).abs() < Z * ((m4 - var**2) / ess).sqrt()).all()


def test_nuts_moments_within_mcse(ppca):
    import arviz as az

    jm, c = ppca
    _, x = jm.sample(1, seed=7)
    enc = jm.encoder("nuts", num_samples=1000, warmup_steps=300, num_chains=2, seed=0)
    draws, stats = enc.sample_chains(x[0])
    assert draws.shape == (2, 1000, 2) and stats["diverging"].shape == (2, 1000)
    exact_mean, exact_cov = exact_ppca(c, x)
    d = draws.numpy()
    mean = d.mean((0, 1))
    sq = (d - mean) ** 2
    mcse_mean = az.mcse(az.convert_to_dataset(d), method="mean")["x"].values
    mcse_var = az.mcse(az.convert_to_dataset(sq), method="mean")["x"].values
    assert (np.abs(mean - exact_mean[0].numpy()) < Z * mcse_mean).all()
    assert (np.abs(sq.mean((0, 1)) - exact_cov.diagonal().numpy()) < Z * mcse_var).all()


def test_sampling_encoders_have_no_log_density(ppca):
    jm, _ = ppca
    h, x = jm.sample(2, seed=8)
    for q in (
        jm.encoder("importance", num_particles=10, seed=0)(x),
        jm.encoder("nuts", num_samples=5, warmup_steps=5, seed=0)(x[:1]),
    ):
        with pytest.raises(NotImplementedError, match=r"no exact log density.*'laplace'"):
            q.log_prob(h[: q.batch_shape[0]])
        assert q.sample().shape == (q.batch_shape[0], 2)
    assert not jm.encoder("nuts").has_log_prob


def test_amortized_gaussian_matches_the_exact_posterior(ppca):
    jm, c = ppca
    enc = jm.encoder("amortized", progress=False, seed=0)
    assert len(enc.history) == 3000 and enc.history[-1]["loss"] < enc.history[0]["loss"]
    _, x = jm.sample(2000, seed=9)
    mean, cov = exact_ppca(c, x)
    exact = torch.distributions.MultivariateNormal(mean, cov)
    with torch.no_grad():
        kl = kl_divergence(exact, enc(x)).mean()
    assert kl < 0.02


def test_amortized_categorical_on_the_mixture():
    jm = lae.JointModel.from_file(ROOT / "models" / "mixture.py")
    enc = jm.encoder("amortized", steps=1500, progress=False, seed=0)
    _, x = jm.sample(2000, seed=10)
    with torch.no_grad():
        kl = kl_divergence(jm.encoder("enumerate")(x), enc(x)).mean()
    assert kl < 0.02


def test_amortized_flow_is_a_normalized_density_on_a_bounded_latent():
    jm = lae.JointModel.from_file(ROOT / "models" / "spiral.py")
    enc = jm.encoder("amortized", family="flow", steps=200, hidden=(32,), progress=False, seed=0)
    _, x = jm.sample(3, seed=11)
    grid = torch.linspace(1e-6, 1 - 1e-6, 20001)
    with torch.no_grad():
        density = enc(x).log_prob(grid[:, None, None].expand(-1, 3, 1)).exp()  # (G, 3)
        mass = torch.trapezoid(density, grid, dim=0)
        draws = enc(x).sample((100,))
    assert torch.allclose(mass, torch.ones(3), atol=2e-3)
    assert ((draws > 0) & (draws < 1)).all()


def test_bad_options_are_refused(ppca):
    jm, _ = ppca
    with pytest.raises(ValueError, match="num_particles must be a positive integer"):
        jm.encoder("importance", num_particles=0)
    with pytest.raises(ValueError, match="family must be 'gaussian' or 'flow'"):
        jm.encoder("amortized", family="maf")
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        jm.encoder("amortized", steps=0)
    with pytest.raises(ValueError, match="num_starts must be a positive integer"):
        jm.encoder("laplace", num_starts=0)
    mixture = lae.JointModel.from_file(ROOT / "models" / "mixture.py")
    for method in ("laplace", "nuts"):
        with pytest.raises(lae.ModelError, match=r"discrete.*enumerate"):
            mixture.encoder(method)
