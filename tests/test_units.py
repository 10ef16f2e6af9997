"""The DAE encoder and decoder families: one contract over every decoder, shapes, gradients,
closed forms, the encoder's injected noise, normalization, validation."""

import inspect
import math

import pytest
import torch
from torch.distributions import Distribution

from latentae import units
from latentae.conditionals import Conditional
from latentae.units import (
    BernoulliDecoder,
    CategoricalDecoder,
    FlowDecoder,
    GaussianDecoder,
    GaussianEncoder,
    MixtureDecoder,
)

# Arguments beyond (h_dim, x_dim, hidden) that a decoder needs: the contract runs over these.
DECODERS = {
    GaussianDecoder: {},
    BernoulliDecoder: {},
    CategoricalDecoder: {"num_classes": 3},
    MixtureDecoder: {"components": 3},
    FlowDecoder: {"transforms": 2},
}

# Every family, as (constructor, whether its value is continuous); contexts have 3 features
# and values 2 coordinates.
FAMILIES = {
    "gaussian-diag": (lambda: GaussianDecoder(3, 2), True),
    "gaussian-lowrank-mlp": (lambda: GaussianDecoder(3, 2, (8,), cov="lowrank", rank=1), True),
    "gaussian-full-mlp": (lambda: GaussianDecoder(3, 2, (8, 8), cov="full"), True),
    "bernoulli": (lambda: BernoulliDecoder(3, 2), False),
    "bernoulli-mlp": (lambda: BernoulliDecoder(3, 2, (8,)), False),
    "categorical": (lambda: CategoricalDecoder(3, 2, num_classes=4), False),
    "categorical-mlp": (lambda: CategoricalDecoder(3, 2, (8,), num_classes=4), False),
    "mixture": (lambda: MixtureDecoder(3, 2, (8,), components=3), True),
    "mixture-affine": (lambda: MixtureDecoder(3, 2, (), components=2), True),
    "flow": (lambda: FlowDecoder(3, 2, (8,), transforms=2), True),
    "flow-1d-value": (lambda: FlowDecoder(3, 1, (8,), transforms=2), True),
    "encoder": (lambda: GaussianEncoder(3, 2, noise=0.3), True),
    "encoder-mlp": (lambda: GaussianEncoder(3, 2, (8,), noise=0.3), True),
}


def _perturb(module: torch.nn.Module, size: float = 0.3) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(size * torch.randn_like(p))


def test_contract_covers_every_decoder():
    exported = {getattr(units, name) for name in units.__all__ if name.endswith("Decoder")}
    assert set(DECODERS) == exported


@pytest.mark.parametrize("cls", list(DECODERS), ids=lambda c: c.__name__)
def test_decoder_contract(cls):
    params = list(inspect.signature(cls).parameters.values())
    assert [p.name for p in params[:3]] == ["h_dim", "x_dim", "hidden"]
    assert isinstance(params[2].default, tuple)
    for hidden in ((8,), params[2].default):
        dec = cls(3, 2, hidden=hidden, **DECODERS[cls])
        assert isinstance(dec, Conditional) and dec.has_log_prob
        d = dec(torch.randn(5, 3))
        assert isinstance(d, Distribution)
        assert d.batch_shape == (5,) and d.event_shape == (2,)
        x = d.sample()
        assert x.shape == (5, 2)
        lp = d.log_prob(x)
        assert lp.shape == (5,) and torch.isfinite(lp).all()


@pytest.mark.parametrize("batch", [(6,), (2, 6)], ids=["n", "2xn"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_shapes_and_log_prob_of_samples(family, batch):
    make, _ = FAMILIES[family]
    q = make()
    event = q(torch.zeros(1, 3)).event_shape
    d = q(torch.randn(*batch, 3))
    assert d.batch_shape == batch and d.event_shape == event
    y = d.sample((4,))
    assert y.shape == (4, *batch, *event)
    lp = d.log_prob(y)
    assert lp.shape == (4, *batch) and torch.isfinite(lp).all()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_gradients_in_context_and_value(family):
    make, continuous = FAMILIES[family]
    q = make()
    _perturb(q)
    c = torch.randn(2, 6, 3, requires_grad=True)
    d = q(c)
    y = d.sample().detach().requires_grad_(continuous)
    inputs = (c, y) if continuous else (c,)
    grads = torch.autograd.grad(d.log_prob(y).sum(), inputs)
    for g in grads:
        assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("cov", ["diag", "lowrank", "full"])
def test_affine_gaussian_decoder_closed_form(cov):
    dec = GaussianDecoder(3, 2, cov=cov, rank=1 if cov == "lowrank" else None)
    _perturb(dec, 1.0)
    dec.standardize(10 * torch.randn(100, 3) + 5, 3 * torch.randn(100, 2) - 1)
    W, b, Psi = dec.linear_gaussian()
    h = torch.randn(7, 3)
    d = dec(h)
    assert torch.allclose(d.mean, h @ W.T + b, atol=1e-12)
    cov_matrix = d.covariance_matrix if cov != "diag" else torch.diag_embed(d.variance)
    assert torch.allclose(cov_matrix, Psi.expand(7, 2, 2), atol=1e-12)


@pytest.mark.parametrize("noise", [0.0, 0.4])
def test_affine_gaussian_encoder_closed_form(noise):
    enc = GaussianEncoder(3, 2, noise=noise)
    _perturb(enc, 1.0)
    enc.standardize(10 * torch.randn(100, 3) + 5)
    V, c, Sigma = enc.linear_gaussian()
    x = 10 * torch.randn(7, 3) + 5
    d = enc(x)
    assert torch.allclose(d.mean, x @ V.T + c, atol=1e-12)
    assert torch.allclose(torch.diag_embed(d.variance), Sigma.expand(7, 2, 2), atol=1e-12)
    assert torch.equal(Sigma, noise**2 * torch.eye(2))
    if noise:
        ref = torch.distributions.MultivariateNormal(x @ V.T + c, Sigma)
        h = d.sample()
        assert torch.allclose(d.log_prob(h), ref.log_prob(h), atol=1e-12)


def test_encoder_injects_noise_of_the_set_scale():
    # Gaussian draws: the sample variance has standard error noise² sqrt(2 / (N - 1)), the
    # sample mean noise / sqrt(N); both are checked to 4 standard errors per coordinate
    # (a two-sided failure rate of 6e-5 each, were the test not seeded).
    n, noise = 20_000, 0.3
    enc = GaussianEncoder(3, 2, hidden=(8,), noise=noise)
    x = torch.randn(1, 3)
    with torch.no_grad():
        h = enc(x).sample((n,))[:, 0]
        f = enc.mean_map(x)[0]
    assert (h.var(0) - noise**2).abs().max() < 4 * noise**2 * math.sqrt(2 / (n - 1))
    assert (h.mean(0) - f).abs().max() < 4 * noise / math.sqrt(n)


def test_zero_noise_is_deterministic():
    enc = GaussianEncoder(3, 2, hidden=(8,), noise=0)
    assert not enc.has_log_prob and GaussianEncoder(3, 2).has_log_prob
    x = torch.randn(2, 5, 3, requires_grad=True)
    d = enc(x)
    assert d.batch_shape == (2, 5) and d.event_shape == (2,)
    h = d.rsample((3,))
    assert torch.equal(h, enc.mean_map(x).expand(3, 2, 5, 2))
    (g,) = torch.autograd.grad(h.sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    affine = GaussianEncoder(3, 2, noise=0)
    V, c, Sigma = affine.linear_gaussian()
    assert torch.allclose(affine(x).sample(), x @ V.T + c, atol=1e-12)
    assert torch.equal(Sigma, torch.zeros(2, 2))


def test_categorical_probabilities_and_float_classes():
    dec = CategoricalDecoder(3, 4, hidden=(8,), num_classes=5)
    d = dec(torch.randn(6, 3))
    probs = d.base_dist.probs
    assert probs.shape == (6, 4, 5) and torch.allclose(probs.sum(-1), torch.ones(6, 4))
    x = d.sample()
    assert x.dtype == torch.long and ((x >= 0) & (x < 5)).all()
    assert torch.equal(d.log_prob(x.double()), d.log_prob(x))
    expected = probs.gather(-1, x[..., None])[..., 0].log().sum(-1)
    assert torch.allclose(d.log_prob(x), expected, atol=1e-12)
    with pytest.raises(ValueError, match="support"):
        d.log_prob(torch.full((6, 4), 0.5))


def test_mixture_density_is_normalized():
    # 1-D x: integrate the density with the trapezoidal rule over [min(loc - 12 scale),
    # max(loc + 12 scale)], which leaves out a mass below 2 Φ(-12) < 1e-32. The rule's error is
    # at most (b - a) Δ² max|p''| / 12, and a mixture of normals has
    # |p''| <= max_j 1 / (sqrt(2π) scale_j³); that bound (plus 1e-10 for rounding) is the
    # tolerance.
    dec = MixtureDecoder(2, 1, hidden=(8,), components=3)
    _perturb(dec)
    dec.standardize(torch.randn(50, 2), 2 * torch.randn(50, 1) + 1)
    with torch.no_grad():
        d = dec(torch.randn(3, 2))
        loc = d.component_distribution.base_dist.loc
        scale = d.component_distribution.base_dist.scale
        lo, hi = (loc - 12 * scale).min().item(), (loc + 12 * scale).max().item()
        grid = torch.linspace(lo, hi, 200_001)
        density = d.log_prob(grid[:, None, None].expand(-1, 3, 1)).exp()
        total = torch.trapezoid(density, grid, dim=0)
    step = (hi - lo) / 200_000
    bound = (hi - lo) * step**2 / (12 * math.sqrt(2 * math.pi) * scale.min().item() ** 3)
    assert bound < 1e-4
    assert torch.allclose(total, torch.ones(3), atol=bound + 1e-10, rtol=0)


def test_mixture_component_means_start_spread_out():
    # The means start at the standard-normal quantiles of each coordinate, so two components
    # differ by at least 0.52 (the quantile spacing for 5 components) in every coordinate
    # before the small h-dependent part of the output layer is added.
    dec = MixtureDecoder(3, 2, components=5)
    with torch.no_grad():
        means = dec(torch.randn(10, 3)).component_distribution.mean
    gaps = (means[:, :, None] - means[:, None, :]).norm(dim=-1)
    off_diagonal = ~torch.eye(5, dtype=torch.bool)
    assert gaps[:, off_diagonal].min() > 0.25
    assert (means.std(1) > 0.5).all()


def test_gaussian_decoder_with_hidden_layers_is_nonlinear():
    dec = GaussianDecoder(2, 1, hidden=(16,))
    hessian = torch.autograd.functional.hessian(lambda h: dec(h[None]).mean.sum(), torch.randn(2))
    assert hessian.abs().max() > 1e-6


def test_validation_messages():
    with pytest.raises(ValueError, match="h_dim must be a positive integer, got 0"):
        GaussianDecoder(0, 2)
    with pytest.raises(ValueError, match="x_dim must be a positive integer"):
        BernoulliDecoder(2, 0)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        CategoricalDecoder(2, 2, num_classes=0)
    with pytest.raises(TypeError, match="num_classes"):
        CategoricalDecoder(2, 2)
    with pytest.raises(ValueError, match="components must be a positive integer"):
        MixtureDecoder(2, 2, components=0)
    with pytest.raises(ValueError, match="min_scale must be a positive finite number"):
        MixtureDecoder(2, 2, min_scale=0.0)
    with pytest.raises(ValueError, match="transforms must be a positive integer"):
        FlowDecoder(2, 2, transforms=0)
    with pytest.raises(ValueError, match="FlowDecoder needs at least one hidden layer"):
        FlowDecoder(2, 2, hidden=())
    with pytest.raises(ValueError, match="cov must be 'diag', 'lowrank' or 'full'"):
        GaussianDecoder(2, 2, cov="spherical")
    with pytest.raises(ValueError, match="hidden must be a sequence of layer widths"):
        MixtureDecoder(2, 2, hidden=64)
    with pytest.raises(ValueError, match="hidden must contain positive integer layer widths"):
        GaussianEncoder(2, 2, hidden=(8, 0))
    with pytest.raises(ValueError, match="h_dim must be a positive integer"):
        GaussianEncoder(2, 1.5)
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="noise must be finite and >= 0"):
            GaussianEncoder(2, 2, noise=bad)
    with pytest.raises(ValueError, match="noise must be a number >= 0"):
        GaussianEncoder(2, 2, noise="0.1")
    enc = GaussianEncoder(2, 2, hidden=(4,))
    with pytest.raises(ValueError, match="noise must be finite and >= 0"):
        enc.noise = -1.0
    assert enc.noise == 0.1
    with pytest.raises(ValueError, match=r"needs an affine encoder \(hidden=\(\)\)"):
        enc.linear_gaussian()
    with pytest.raises(ValueError, match=r"expects contexts with 2 features.*shape \(4, 3\)"):
        enc(torch.zeros(4, 3))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_config_round_trip_rebuilds_the_unit(family):
    """from_config(to_config()) builds the same architecture: the trained weights load into
    it and it gives the same distribution; the config is plain JSON."""
    import json

    from latentae.units import UNITS, from_config

    unit = FAMILIES[family][0]()
    _perturb(unit)
    config = unit.to_config()
    assert json.loads(json.dumps(config)) == config
    rebuilt = from_config(config)
    assert type(rebuilt) is type(unit) and rebuilt.to_config() == config
    rebuilt.load_state_dict(unit.state_dict())
    context = torch.randn(4, 3)  # every family here has 3 context features
    a, b = unit(context), rebuilt(context)
    value = a.sample()
    assert torch.equal(a.log_prob(value), b.log_prob(value))
    assert set(UNITS) >= {config["name"]}


def test_from_config_names_the_known_units():
    from latentae.units import from_config

    with pytest.raises(ValueError, match=r"unknown encoder or decoder 'Nope'.*GaussianDecoder"):
        from_config({"name": "Nope"})
    with pytest.raises(ValueError, match="bad config for GaussianDecoder"):
        from_config({"name": "GaussianDecoder", "h_dim": 2, "x_dim": 3, "width": 4})
