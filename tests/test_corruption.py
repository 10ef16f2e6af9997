"""Corruption processes and the DAE's stochastic encoder: supports, rates, exact masses,
configuration, and the closed form that the Monte Carlo encoder must reproduce.

Statistical tests use fixed seeds and a tolerance of 5 standard errors (Monte Carlo or
binomial): a correct implementation fails one such comparison with probability about 6e-7.
"""

import itertools
import json
import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latentae._util import seeded
from latentae.conditionals import GaussianConditional
from latentae.corruption import BitFlip, Corruption, Gaussian, Masking, SaltAndPepper, from_config
from latentae.denoising import CorruptedEncoder, CorruptionMarginal, corrupt
from latentae.units import GaussianEncoder

Z = 5.0  # standard errors allowed in every statistical comparison
PROPERTY = settings(max_examples=25, deadline=None)

seeds = st.integers(0, 2**32 - 1)
probs = st.floats(0.0, 1.0, exclude_max=True)
# Sigmas that underflow in float32 are refused (test_tiny_sigma_is_refused).
sigmas = st.just(0.0) | st.floats(1e-30, 10.0)
shapes = st.tuples(st.integers(1, 5), st.integers(1, 6))
values = st.floats(-100.0, 100.0, allow_nan=False, allow_infinity=False)


@st.composite
def salt_and_pepper(draw):
    low = draw(st.floats(-10.0, 10.0))
    high = draw(st.floats(-10.0, 10.0).filter(lambda v: v > low))
    return SaltAndPepper(draw(probs), low, high)


corruptions = st.one_of(
    sigmas.map(Gaussian), probs.map(Masking), salt_and_pepper(), probs.map(BitFlip)
)


@st.composite
def data_for(draw, corruption, shape):
    """Data that ``corruption`` accepts: binary for bit flips; real with some exact zeros and
    exact low/high values otherwise, so every branch of the masses is exercised."""
    if isinstance(corruption, BitFlip):
        x = draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 1.0])))
    else:
        specials = [0.0]
        if isinstance(corruption, SaltAndPepper):
            specials += [corruption.low, corruption.high]
        elements = st.one_of(values, st.sampled_from(specials))
        x = draw(hnp.arrays(np.float64, shape, elements=elements))
    return torch.from_numpy(x)


def affine_encoder(d: int, k: int, cov: str = "full", scale: float = 1.0) -> GaussianConditional:
    """An affine Gaussian q(h | x̃) = N(V x̃ + c, Σ) with random, well-conditioned parameters."""
    q = GaussianConditional(d, k, hidden=(), cov=cov)
    with torch.no_grad():
        for p in q.parameters():
            p.copy_(scale * torch.randn_like(p))
    return q


# --- the corruption processes ----------------------------------------------------------------


@PROPERTY
@given(st.data(), corruptions, shapes, st.sampled_from([torch.float32, torch.float64]), seeds)
def test_sample_keeps_shape_dtype_and_device(data, corruption, shape, dtype, seed):
    x = data.draw(data_for(corruption, shape)).to(dtype)
    with seeded(seed):
        x_tilde = corruption.sample(x)
    assert x_tilde.shape == x.shape and x_tilde.dtype == dtype and x_tilde.device == x.device
    if isinstance(corruption, Gaussian) and corruption.sigma == 0:
        return
    log_prob = corruption.log_prob(x_tilde, x)
    # Every draw lies in the support, and log_prob is of whole rows.
    assert log_prob.shape == shape[:1] and torch.isfinite(log_prob).all()


@PROPERTY
@given(st.data(), probs, shapes, seeds)
def test_masking_support(data, p, shape, seed):
    x = data.draw(data_for(Masking(p), shape))
    with seeded(seed):
        x_tilde = Masking(p).sample(x)
    assert ((x_tilde == 0) | (x_tilde == x)).all()


@PROPERTY
@given(st.data(), salt_and_pepper(), shapes, seeds)
def test_salt_and_pepper_support(data, corruption, shape, seed):
    x = data.draw(data_for(corruption, shape))
    with seeded(seed):
        x_tilde = corruption.sample(x)
    assert ((x_tilde == corruption.low) | (x_tilde == corruption.high) | (x_tilde == x)).all()


@PROPERTY
@given(st.data(), probs, shapes, seeds)
def test_bit_flip_output_is_binary(data, p, shape, seed):
    x = data.draw(data_for(BitFlip(p), shape))
    with seeded(seed):
        x_tilde = BitFlip(p).sample(x)
    assert ((x_tilde == 0) | (x_tilde == 1)).all()


@PROPERTY
@given(st.data(), shapes)
def test_zero_sigma_is_the_identity(data, shape):
    x = data.draw(data_for(Gaussian(0.0), shape))
    assert torch.equal(Gaussian(0.0).sample(x), x)
    with pytest.raises(NotImplementedError, match="point mass with no density"):
        Gaussian(0.0).log_prob(x, x)


def test_tiny_sigma_is_refused():
    with pytest.raises(ValueError, match=r"sigma=1e-40\) underflows in torch\.float32"):
        Gaussian(1e-40).sample(torch.zeros(2, 3, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"underflows in torch\.float64"):
        Gaussian(1e-310).log_prob(torch.zeros(2, 3), torch.zeros(2, 3))
    x = torch.zeros(2, 3)
    assert torch.isfinite(Gaussian(1e-300).log_prob(Gaussian(1e-300).sample(x), x)).all()


def _binomial_check(count: int, trials: int, rate: float) -> None:
    se = math.sqrt(rate * (1 - rate) / trials)
    assert abs(count / trials - rate) <= Z * se + 1e-12, (count / trials, rate, se)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.9])
def test_masking_rate(p):
    x = torch.full((400, 500), 2.5)
    x[:, :100] = 0.0  # zeros must stay zero
    with seeded(1):
        x_tilde = Masking(p).sample(x)
    assert (x_tilde[:, :100] == 0).all()
    body = x_tilde[:, 100:]
    _binomial_check(int((body == 0).sum()), body.numel(), p)


@pytest.mark.parametrize("p", [0.05, 0.4, 0.95])
def test_salt_and_pepper_rates(p):
    x = torch.full((400, 500), 0.25)
    with seeded(2):
        x_tilde = SaltAndPepper(p, low=-1.0, high=3.0).sample(x)
    n = x.numel()
    _binomial_check(int((x_tilde == -1.0).sum()), n, p / 2)
    _binomial_check(int((x_tilde == 3.0).sum()), n, p / 2)
    _binomial_check(int((x_tilde == 0.25).sum()), n, 1 - p)


@pytest.mark.parametrize("p", [0.01, 0.2, 0.7])
def test_bit_flip_rate(p):
    x = (torch.arange(200_000) % 2).to(torch.get_default_dtype()).reshape(400, 500)
    with seeded(3):
        x_tilde = BitFlip(p).sample(x)
    flipped = x_tilde != x
    # Both directions flip at rate p.
    _binomial_check(int(flipped[x == 0].sum()), int((x == 0).sum()), p)
    _binomial_check(int(flipped[x == 1].sum()), int((x == 1).sum()), p)


@pytest.mark.parametrize("sigma", [0.01, 1.0, 7.0])
def test_gaussian_noise_moments(sigma):
    x = torch.linspace(-3, 3, 500).expand(400, 500)
    with seeded(4):
        noise = Gaussian(sigma).sample(x) - x
    n = noise.numel()
    assert abs(noise.mean()) <= Z * sigma / math.sqrt(n)
    # The sample variance of n normal draws has standard error sigma^2 sqrt(2 / (n - 1)).
    assert abs(noise.var() - sigma**2) <= Z * sigma**2 * math.sqrt(2 / (n - 1))
    # Entries are independent: neighbouring columns are uncorrelated.
    corr = (noise[:, 1:] * noise[:, :-1]).mean() / sigma**2
    assert abs(corr) <= Z / math.sqrt(n - 400)


@pytest.mark.parametrize("corruption", [Gaussian(0.5), Masking(0.2), SaltAndPepper(0.1)])
def test_no_hard_coded_device(corruption):
    # The meta device stands in for an accelerator: any tensor made on the CPU would clash.
    # (BitFlip must read its data to check it is binary, which meta tensors cannot do.)
    x = torch.zeros(3, 4, device="meta")
    x_tilde = corruption.sample(x)
    assert x_tilde.device == x.device and x_tilde.shape == x.shape
    assert corruption.log_prob(x_tilde, x).device == x.device


# --- exact masses ----------------------------------------------------------------------------


def _masking_mass(p, xt, x):
    if x != 0:
        return p if xt == 0 else (1 - p if xt == x else 0.0)
    return 1.0 if xt == 0 else 0.0


def _salt_and_pepper_mass(c, xt, x):
    return (1 - c.p) * (xt == x) + c.p / 2 * (xt == c.low) + c.p / 2 * (xt == c.high)


def _bit_flip_mass(p, xt, x):
    return 1 - p if xt == x else (p if xt == 1 - x else 0.0)


def _hand_log_prob(corruption, x_tilde, x):
    rows = []
    for xt_row, x_row in zip(x_tilde.tolist(), x.tolist(), strict=True):
        total = 0.0
        for xt, xv in zip(xt_row, x_row, strict=True):
            if isinstance(corruption, Gaussian):
                s = corruption.sigma
                total += -0.5 * ((xt - xv) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)
                continue
            if isinstance(corruption, Masking):
                mass = _masking_mass(corruption.p, xt, xv)
            elif isinstance(corruption, SaltAndPepper):
                mass = _salt_and_pepper_mass(corruption, xt, xv)
            else:
                mass = _bit_flip_mass(corruption.p, xt, xv)
            total += math.log(mass) if mass > 0 else -math.inf
        rows.append(total)
    return torch.tensor(rows)


@PROPERTY
@given(st.data(), corruptions, shapes, seeds)
def test_log_prob_matches_hand_computation(data, corruption, shape, seed):
    if isinstance(corruption, Gaussian) and corruption.sigma == 0:
        corruption = Gaussian(1.0)
    x = data.draw(data_for(corruption, shape))
    with seeded(seed):
        x_tilde = corruption.sample(x)
    # Mix in values outside the support (and, for bit flips, non-binary ones) to reach the -inf
    # branch.
    if not isinstance(corruption, Gaussian):
        junk = data.draw(hnp.arrays(np.bool_, shape))
        x_tilde = torch.where(torch.from_numpy(junk), torch.tensor(0.123), x_tilde)
    expected = _hand_log_prob(corruption, x_tilde, x)
    got = corruption.log_prob(x_tilde, x)
    assert got.shape == shape[:1]
    finite = torch.isfinite(expected)
    assert torch.equal(finite, torch.isfinite(got))
    assert torch.allclose(got[finite], expected[finite], rtol=1e-10, atol=1e-10)


def test_log_prob_broadcasts_over_leading_dimensions():
    x = torch.randn(3, 4)
    with seeded(5):
        x_tilde = Gaussian(0.3).sample(x.expand(7, 3, 4))
    lp = Gaussian(0.3).log_prob(x_tilde, x)
    assert lp.shape == (7, 3)
    assert torch.allclose(lp[2], Gaussian(0.3).log_prob(x_tilde[2], x))


@PROPERTY
@given(probs, st.lists(st.sampled_from([0.0, 1.0, -2.5, 4.0]), min_size=2, max_size=2))
def test_masking_mass_sums_to_one(p, row):
    x = torch.tensor([row])
    outcomes = itertools.product(*[{v, 0.0} for v in row])
    total = sum(Masking(p).log_prob(torch.tensor([o]), x).exp().item() for o in outcomes)
    assert total == pytest.approx(1.0, abs=1e-12)


@PROPERTY
@given(probs, st.lists(st.sampled_from([-1.0, 0.5, 2.0, 3.0]), min_size=2, max_size=2))
def test_salt_and_pepper_mass_sums_to_one(p, row):
    c = SaltAndPepper(p, low=-1.0, high=2.0)
    x = torch.tensor([row])
    outcomes = itertools.product(*[{v, c.low, c.high} for v in row])
    total = sum(c.log_prob(torch.tensor([o]), x).exp().item() for o in outcomes)
    assert total == pytest.approx(1.0, abs=1e-12)


@PROPERTY
@given(probs, st.lists(st.sampled_from([0.0, 1.0]), min_size=3, max_size=3))
def test_bit_flip_mass_sums_to_one(p, row):
    x = torch.tensor([row])
    outcomes = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)))
    assert BitFlip(p).log_prob(outcomes, x).exp().sum().item() == pytest.approx(1.0, abs=1e-12)


# --- validation and configuration ------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Gaussian(-0.1), r"sigma must be a real number that is finite and >= 0, got -0\.1"),
        (lambda: Gaussian(math.nan), r"sigma .* >= 0, got nan"),
        (lambda: Gaussian(math.inf), r"sigma .* finite"),
        (lambda: Gaussian(True), r"sigma must be a real number .* got True of type bool"),
        (lambda: Gaussian("0.5"), r"sigma .* got '0\.5' of type str"),
        (lambda: Masking(1.0), r"p must be a real number in \[0, 1\), got 1\.0"),
        (lambda: Masking(-0.2), r"p must be a real number in \[0, 1\)"),
        (lambda: BitFlip(math.nan), r"p must be a real number in \[0, 1\), got nan"),
        (lambda: BitFlip(False), r"p .* got False of type bool"),
        (lambda: SaltAndPepper(0.1, low=1.0, high=1.0), r"low must be less than high"),
        (lambda: SaltAndPepper(0.1, low=math.inf), r"low must be a real number that is finite"),
        (lambda: SaltAndPepper(0.1, high=None), r"high .* got None of type NoneType"),
    ],
)
def test_parameter_validation(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"name": "blur", "sigma": 1.0}, r"unknown corruption 'blur'; known .*'masking'"),
        ({"sigma": 1.0}, r"needs a 'name' key"),
        ({"name": "gaussian", "sigma": 1.0, "p": 0.1}, r"unexpected 'p'.* it takes sigma"),
        ({"name": "masking"}, r"bad parameters for corruption 'masking' \(missing 'p'\)"),
        ({"name": "bit_flip", "p": 2.0}, r"p must be a real number in \[0, 1\)"),
        ([("name", "gaussian")], r"must be a mapping"),
        ({"name": ["gaussian"]}, r"unknown corruption \[.gaussian.\]"),
    ],
)
def test_from_config_validation(config, match):
    with pytest.raises(ValueError, match=match):
        from_config(config)


@PROPERTY
@given(corruptions)
def test_config_round_trip(corruption):
    config = corruption.to_config()
    restored = from_config(json.loads(json.dumps(config)))
    assert restored == corruption and hash(restored) == hash(corruption)
    assert type(restored) is type(corruption)
    assert repr(restored) == repr(corruption)


def test_equality_repr_and_attributes():
    assert Gaussian(1) == Gaussian(1.0) and Gaussian(1.0) != Gaussian(2.0)
    assert Masking(0.1) != BitFlip(0.1) and Masking(0.1) != "masking"
    assert repr(SaltAndPepper(0.1, -1, 1)) == "SaltAndPepper(p=0.1, low=-1.0, high=1.0)"
    assert Gaussian(0.5).to_config() == {"name": "gaussian", "sigma": 0.5}
    c = SaltAndPepper(0.2, low=-1, high=2)
    assert (c.p, c.low, c.high) == (0.2, -1.0, 2.0)
    assert all(isinstance(c, Corruption) for c in [Gaussian(1), Masking(0), BitFlip(0)])


def test_bit_flip_refuses_non_binary_input():
    x = torch.zeros(3, 4)
    x[1, 2] = 0.5
    x[2, 0] = 2.0
    with pytest.raises(ValueError, match=r"row 1, column 2 is 0\.5; binarize"):
        BitFlip(0.1).sample(x)
    with pytest.raises(ValueError, match=r"row 1, column 2"):
        BitFlip(0.1).log_prob(x, x)


def test_input_validation():
    with pytest.raises(TypeError, match=r"floating-point tensor, got torch\.int64"):
        Masking(0.1).sample(torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"must be a torch\.Tensor"):
        Gaussian(1.0).sample([[0.0, 1.0]])
    with pytest.raises(ValueError, match="does not broadcast"):
        Gaussian(1.0).log_prob(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., d\)"):
        Gaussian(1.0).log_prob(torch.tensor(0.0), torch.tensor(0.0))


# --- the corrupted encoder -------------------------------------------------------------------


def _closed_form(q, sigma, x):
    v, c, cov = q.linear_gaussian()
    return x @ v.T + c, cov + sigma**2 * v @ v.T


def test_affine_encoder_with_gaussian_corruption_is_exact():
    q = affine_encoder(3, 2)
    x = torch.randn(4, 3, requires_grad=True)
    d = corrupt(q, Gaussian(0.7))(x)
    assert isinstance(d, torch.distributions.MultivariateNormal)
    mean, cov = _closed_form(q, 0.7, x)
    assert d.batch_shape == (4,) and d.event_shape == (2,)
    assert torch.allclose(d.mean, mean) and torch.allclose(d.covariance_matrix, cov.expand(4, 2, 2))
    (g,) = torch.autograd.grad(d.log_prob(torch.zeros(4, 2)).sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    # The encoder itself is affine Gaussian, so Gaussian corruptions compose.
    _, _, cov2 = corrupt(corrupt(q, Gaussian(0.7)), Gaussian(0.5)).linear_gaussian()
    assert torch.allclose(cov2, _closed_form(q, math.hypot(0.7, 0.5), x)[1])


@pytest.mark.parametrize("cov", ["diag", "full"])
def test_monte_carlo_sampling_is_exact(cov):
    # Sample the Monte Carlo distribution directly (corrupt() would return the closed form) and
    # compare its mean and covariance with N(V x + c, Σ + σ² V Vᵀ). Standard errors of a sample
    # mean: sqrt(C_ii / N); of a sample covariance entry: sqrt((C_ii C_jj + C_ij²) / N).
    sigma, n_draws = 0.8, 100_000
    q = affine_encoder(3, 2, cov=cov)
    x = torch.randn(3, 3)
    mean, c = _closed_form(q, sigma, x)
    d = CorruptionMarginal(q, Gaussian(sigma), x, num_corruptions=8)
    with seeded(6):
        h = d.sample((n_draws,))
    assert h.shape == (n_draws, 3, 2)
    var = c.diagonal()
    assert ((h.mean(0) - mean).abs() <= Z * (var / n_draws).sqrt()).all()
    se_cov = ((var[:, None] * var[None, :] + c**2) / n_draws).sqrt()
    for i in range(3):
        assert ((torch.cov(h[:, i].T) - c).abs() <= Z * se_cov).all()


def test_monte_carlo_log_prob_converges_to_the_closed_form():
    # The estimate is log of a mean of S weights w_s = q(h | x̃_s); by the delta method its
    # standard error is sd(w) / (mean(w) sqrt(S)), which we estimate from the same weights.
    # Its bias, about -se²/2, is far below that.
    sigma, s = 0.6, 20_000
    q = affine_encoder(3, 2, cov="full", scale=0.7)
    x = torch.randn(4, 3)
    exact = corrupt(q, Gaussian(sigma))(x)
    with seeded(7):
        h = exact.sample()
        d = CorruptionMarginal(q, Gaussian(sigma), x, num_corruptions=s)
    estimate = d.log_prob(h)
    log_w = q(d.corruptions()).log_prob(h)  # (S, n)
    w = (log_w - log_w.max(0).values).exp()
    se = w.std(0) / (w.mean(0) * math.sqrt(s))
    assert (se < 0.05).all()  # the comparison below is informative
    assert ((estimate - exact.log_prob(h)).abs() <= Z * se).all()


def test_masking_path_matches_the_exact_mixture():
    # With an affine encoder, masking makes p_enc(h | x) an exact mixture over the 2^d masks:
    # Σ_m P(m) N(h; V (m ⊙ x) + c, Σ). Check the Monte Carlo log_prob (tolerance as above) and
    # the sample mean E[h] = V (1 - p) x + c, with covariance Σ + V diag(p (1 - p) x²) Vᵀ.
    p, s, n_draws = 0.3, 20_000, 100_000
    q = affine_encoder(2, 2, cov="full", scale=0.7)
    v, c, cov = q.linear_gaussian()
    x = torch.tensor([[1.0, -2.0], [0.5, 0.0], [3.0, 1.5]])
    enc = corrupt(q, Masking(p), num_corruptions=s)
    with seeded(8):
        d = enc(x)
        h = d.sample()
        draws = d.sample((n_draws,))
    assert isinstance(d, CorruptionMarginal) and d.batch_shape == (3,)
    masks = torch.tensor(list(itertools.product([0.0, 1.0], repeat=2)))  # 1 = kept
    log_pm = (masks * math.log(1 - p) + (1 - masks) * math.log(p)).sum(-1)
    components = torch.distributions.MultivariateNormal((masks[:, None] * x) @ v.T + c, cov)
    exact = (log_pm[:, None] + components.log_prob(h)).logsumexp(0)
    log_w = q(d.corruptions()).log_prob(h)
    w = (log_w - log_w.max(0).values).exp()
    se = w.std(0) / (w.mean(0) * math.sqrt(s))
    assert ((d.log_prob(h) - exact).abs() <= Z * se).all()

    mean = (1 - p) * x @ v.T + c
    var = (cov + v @ torch.diag_embed(p * (1 - p) * x**2) @ v.T).diagonal(dim1=-2, dim2=-1)
    assert ((draws.mean(0) - mean).abs() <= Z * (var / n_draws).sqrt()).all()
    # The mean property is an estimate over the S fixed draws; its error is tiny at S = 20000.
    assert ((d.mean - mean).abs() <= Z * (var / s).sqrt()).all()


@pytest.mark.parametrize("corruption", [Gaussian(0.4), Masking(0.3)])
def test_monte_carlo_log_prob_is_differentiable(corruption):
    q = GaussianConditional(3, 2, hidden=(8,), cov="full")
    with torch.no_grad():
        q.scale_head.weight.normal_()
    x = torch.randn(4, 3, requires_grad=True)
    d = corrupt(q, corruption, num_corruptions=6)(x)
    h = d.sample().requires_grad_()
    gh, gx = torch.autograd.grad(d.log_prob(h).sum(), (h, x))
    for g in (gh, gx):
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    # The corruption draws are fixed per distribution, so log_prob is a smooth, deterministic
    # function of (h, x) and its autograd derivatives must match finite differences.
    assert torch.equal(d.log_prob(h), d.log_prob(h))

    def log_prob(h_, x_):
        with seeded(9):  # the same corruption draws at every evaluation
            return CorruptionMarginal(q, corruption, x_, 6).log_prob(h_)

    torch.autograd.gradcheck(
        log_prob,
        (h.detach().requires_grad_(), x),
        check_undefined_grad=False,
    )


@PROPERTY
@given(
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(1, 3),
    st.lists(st.integers(1, 3), max_size=2),
    st.sampled_from([Gaussian(0.5), Masking(0.4), SaltAndPepper(0.2), Gaussian(0.0)]),
    seeds,
)
def test_monte_carlo_shapes(n, d, k, sample_shape, corruption, seed):
    q = GaussianConditional(d, k, hidden=(4,))
    with seeded(seed):
        x = torch.randn(n, d)
        dist = corrupt(q, corruption, num_corruptions=5)(x)
        h = dist.sample(sample_shape)
        h_r = dist.rsample(sample_shape)
    assert dist.batch_shape == (n,) and dist.event_shape == (k,)
    assert h.shape == h_r.shape == (*sample_shape, n, k)
    assert dist.log_prob(h).shape == (*sample_shape, n)
    assert dist.log_prob(torch.zeros(k)).shape == (n,)  # broadcast over the batch
    assert dist.mean.shape == (n, k)
    assert dist.corruptions().shape == (5, n, d)
    # rsample is reparametrized through q: gradients reach q's parameters.
    (g,) = torch.autograd.grad(h_r.sum(), q.loc_head.weight)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_zero_noise_monte_carlo_is_the_encoder():
    # All corruption draws equal x, so the estimate is exactly log q(h | x).
    q = GaussianConditional(3, 2, hidden=(8,))
    x = torch.randn(5, 3)
    d = corrupt(q, Gaussian(0.0), num_corruptions=7)(x)
    h = torch.randn(5, 2)
    assert torch.allclose(d.log_prob(h), q(x).log_prob(h), atol=1e-12)
    assert torch.allclose(d.mean, q(x).mean, atol=1e-12)


def test_corrupted_encoder_module_and_validation():
    q = affine_encoder(3, 2)
    enc = corrupt(q, {"name": "masking", "p": 0.2})
    assert isinstance(enc, CorruptedEncoder) and enc.corruption == Masking(0.2)
    assert list(enc.parameters()) == list(q.parameters()) and enc.num_corruptions == 64
    assert "Masking(p=0.2)" in repr(enc)
    with pytest.raises(ValueError, match="needs Gaussian corruption"):
        enc.linear_gaussian()
    with pytest.raises(ValueError, match="needs an affine conditional"):
        corrupt(GaussianConditional(3, 2, hidden=(4,)), Gaussian(0.1)).linear_gaussian()
    with pytest.raises(TypeError, match="corruption must be a Corruption"):
        corrupt(q, "gaussian")
    with pytest.raises(ValueError, match="num_corruptions must be a positive integer, got 0"):
        corrupt(q, Gaussian(0.1), num_corruptions=0)
    with pytest.raises(ValueError, match="num_corruptions must be a positive integer, got True"):
        corrupt(q, Gaussian(0.1), num_corruptions=True)
    with pytest.raises(ValueError, match=r"expects inputs with 3 features.*shape \(2, 4\)"):
        corrupt(q, Gaussian(0.1))(torch.zeros(2, 4))


# --- the Laplace importance-sampling estimator --------------------------------------------------


def _standard_error(log_w: torch.Tensor) -> torch.Tensor:
    """Delta-method standard error of log mean(w) from the S log weights (dim 0)."""
    w = (log_w - log_w.max(0).values).exp()
    return w.std(0) / (w.mean(0) * math.sqrt(len(w)))


def _mlp_encoder() -> GaussianEncoder:
    q = GaussianEncoder(3, 2, hidden=(16,), noise=0.2)
    with torch.no_grad():
        for p in q.parameters():
            p.mul_(2.0)  # a strongly non-linear map, so the Laplace proposal is not exact
    return q


def test_laplace_estimator_matches_the_closed_form_where_the_prior_one_fails():
    """For an affine encoder the exact p_enc(h | x) is Gaussian. At h far from x's codes
    (as the cross-ratio's crossed pairs are), the prior estimator with 256 draws is hundreds
    of nats too low, the Laplace one within Z standard errors (delta method on its weights)."""
    sigma, s = 0.5, 256
    q = GaussianEncoder(3, 2, noise=0.2)
    x = torch.randn(6, 3)
    exact = corrupt(q, Gaussian(sigma))(x)  # the closed form
    with seeded(11):
        h = exact.sample() + 3.0 * torch.randn(6, 2)
        lap = CorruptionMarginal(q, Gaussian(sigma), x, s, estimator="laplace")
        prior = CorruptionMarginal(q, Gaussian(sigma), x, s, estimator="prior")
    error = lap.log_prob(h) - exact.log_prob(h)
    se = _standard_error(lap.log_weights(h))
    assert (se < 0.05).all()  # the comparison is informative
    assert (error.abs() <= Z * se).all()
    assert (prior.log_prob(h) - exact.log_prob(h) < -50).any()


@pytest.mark.parametrize("shift", [0.0, 0.75], ids=["typical", "crossed"])
def test_laplace_estimator_agrees_with_a_long_prior_run(shift):
    """A non-linear encoder has no closed form: compare with the prior estimator at S = 200k,
    at typical h and at h moved off x's codes, within Z standard errors of the difference."""
    q, sigma = _mlp_encoder(), 0.5
    x = torch.randn(5, 3)
    with seeded(12):
        h = corrupt(q, Gaussian(sigma))(x).sample() + shift * torch.randn(5, 2)
        lap = CorruptionMarginal(q, Gaussian(sigma), x, 512, estimator="laplace")
        ref = CorruptionMarginal(q, Gaussian(sigma), x, 200_000, estimator="prior")
    with torch.no_grad():
        lw_lap, lw_ref = lap.log_weights(h), ref.log_weights(h)
    se = (_standard_error(lw_lap) ** 2 + _standard_error(lw_ref) ** 2).sqrt()
    assert (se < 0.2).all()
    diff = (lw_lap.logsumexp(0) - math.log(512)) - (lw_ref.logsumexp(0) - math.log(200_000))
    assert (diff.abs() <= Z * se).all()


def test_laplace_estimator_is_differentiable_and_seeded():
    """The gradient of the estimate is the self-normalized average of ∂ log w_s, which for
    an affine encoder (V, c, τ²I) is (x̃_s − x)/σ² in x and (f(x̃_s) − h)/τ² in h, x̃ ~ the
    Gaussian posterior of x̃ given (x, h) with precision A = I/σ² + VᵀV/τ². Its standard
    error is the posterior sd of those terms over √ESS, the weights' Kish ESS."""
    sigma, tau, s = 0.5, 0.2, 1024
    q = GaussianEncoder(3, 2, noise=tau)
    x = torch.randn(4, 3, requires_grad=True)
    h = torch.randn(4, 2, requires_grad=True)
    exact = corrupt(q, Gaussian(sigma))(x)
    with seeded(13):
        lap = CorruptionMarginal(q, Gaussian(sigma), x, s, estimator="laplace")
    gh, gx = torch.autograd.grad(lap.log_prob(h).sum(), (h, x))
    eh, ex = torch.autograd.grad(exact.log_prob(h).sum(), (h, x))
    v = q.linear_gaussian()[0]
    post = torch.linalg.inv(torch.eye(3) / sigma**2 + v.T @ v / tau**2)
    sd_x = post.diagonal().sqrt() / sigma**2
    sd_h = (v @ post @ v.T).diagonal().sqrt() / tau**2
    w = lap.log_weights(h).detach().softmax(0)
    ess = 1 / (w**2).sum(0)  # (rows,)
    assert (ess > s / 2).all()
    assert ((gx - ex).abs() <= Z * sd_x / ess[:, None].sqrt()).all()
    assert ((gh - eh).abs() <= Z * sd_h / ess[:, None].sqrt()).all()
    assert torch.equal(lap.log_prob(h), lap.log_prob(h))  # common random numbers


def test_estimator_choice_and_validation():
    mlp = _mlp_encoder()
    assert corrupt(mlp, Gaussian(0.3))(torch.randn(2, 3)).estimator == "laplace"
    assert corrupt(mlp, Masking(0.3))(torch.randn(2, 3)).estimator == "prior"
    conditional = GaussianConditional(3, 2, hidden=(4,))  # no mean_map/noise: prior
    assert corrupt(conditional, Gaussian(0.3))(torch.randn(2, 3)).estimator == "prior"
    assert "estimator='auto'" in repr(corrupt(mlp, Gaussian(0.3)))
    with pytest.raises(ValueError, match="the 'laplace' estimator needs Gaussian corruption"):
        corrupt(mlp, Masking(0.3), estimator="laplace")
    with pytest.raises(ValueError, match="estimator must be one of"):
        corrupt(mlp, Gaussian(0.3), estimator="exact")
