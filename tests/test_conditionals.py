"""The learned conditional families: shapes, closed forms, gradients, validation."""

import pytest
import torch

import latentae as lae


@pytest.mark.parametrize("cov", ["diag", "lowrank", "full"])
@pytest.mark.parametrize("hidden", [(), (16, 16)])
def test_gaussian_shapes_and_gradients(cov, hidden):
    q = lae.GaussianConditional(3, 4, hidden=hidden, cov=cov, rank=2 if cov == "lowrank" else None)
    c = torch.randn(2, 5, 3, requires_grad=True)
    d = q(c)
    assert d.batch_shape == (2, 5) and d.event_shape == (4,)
    y = d.rsample()
    assert y.shape == (2, 5, 4)
    lp = d.log_prob(y.detach())
    assert lp.shape == (2, 5)
    (g,) = torch.autograd.grad(lp.sum(), c)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("cov", ["diag", "lowrank", "full"])
def test_affine_gaussian_closed_form(cov):
    q = lae.GaussianConditional(3, 2, cov=cov, rank=1 if cov == "lowrank" else None)
    with torch.no_grad():
        for p in q.parameters():
            p.copy_(torch.randn_like(p))
    q.standardize(10 * torch.randn(100, 3) + 5, 3 * torch.randn(100, 2) - 1)
    w, b, sigma = q.linear_gaussian()
    c = torch.randn(7, 3)
    d = q(c)
    assert torch.allclose(d.mean, c @ w.T + b, atol=1e-12)
    cov_matrix = d.covariance_matrix if cov != "diag" else torch.diag_embed(d.variance)
    assert torch.allclose(cov_matrix, sigma.expand(7, 2, 2), atol=1e-12)


def test_heteroscedastic_gaussian_predicts_its_scale():
    q = lae.GaussianConditional(2, 2, hidden=(8,), cov="full")
    with torch.no_grad():
        q.scale_head.weight.normal_()
    d = q(torch.tensor([[0.0, 0.0], [3.0, -3.0]]))
    assert not torch.allclose(d.covariance_matrix[0], d.covariance_matrix[1])
    with pytest.raises(ValueError, match="needs an affine conditional"):
        q.linear_gaussian()


def test_categorical_and_bernoulli_units():
    c = torch.randn(6, 2)
    cat = lae.CategoricalConditional(2, 3, hidden=(8,))(c)
    assert cat.probs.shape == (6, 3) and torch.allclose(cat.probs.sum(-1), torch.ones(6))
    bern = lae.BernoulliConditional(2, 16)(c)
    x = bern.sample()
    assert x.shape == (6, 16) and set(x.unique().tolist()) <= {0.0, 1.0}
    assert bern.log_prob(x).shape == (6,)


def test_one_dimensional_flow_is_normalized():
    q = lae.FlowConditional(2, 1, hidden=(8,), transforms=2)
    with torch.no_grad():
        for p in q.parameters():
            p.add_(0.3 * torch.randn_like(p))
    grid = torch.linspace(-12, 12, 48001)
    c = torch.randn(3, 2)
    with torch.no_grad():
        density = q(c).log_prob(grid[:, None, None].expand(-1, 3, 1)).exp()
    assert torch.allclose(torch.trapezoid(density, grid, dim=0), torch.ones(3), atol=1e-4)


def test_two_dimensional_flow_density_is_the_change_of_variables():
    # log q(y) must equal log N(f^-1(y)) + log |det d f^-1 / dy|, with the Jacobian taken by
    # autograd through the inverse: exact up to rounding, so the density is normalized.
    q = lae.FlowConditional(2, 2, hidden=(8,), transforms=2)
    with torch.no_grad():
        for p in q.parameters():
            p.add_(0.2 * torch.randn_like(p))
    context = torch.randn(1, 2)
    d = q(context)
    base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), 1.0), 1)

    def inverse(y):
        for t in reversed(d.transforms):
            y = t.inv(y)
        return y

    for y in d.sample((10,)).detach()[:, 0]:
        jac = torch.autograd.functional.jacobian(lambda v: inverse(v[None])[0], y)
        expected = base.log_prob(inverse(y[None])[0]) + torch.linalg.slogdet(jac)[1]
        assert torch.allclose(d.log_prob(y[None]), expected, atol=1e-8)


def test_flow_samples_and_rsamples():
    q = lae.FlowConditional(3, 2, hidden=(8,), transforms=2)
    c = torch.randn(4, 3, requires_grad=True)
    y = q(c).rsample((5,))
    assert y.shape == (5, 4, 2)
    (g,) = torch.autograd.grad(y.sum(), c)
    assert torch.isfinite(g).all()


def test_mlp_widths():
    net = lae.MLP(3, 2, hidden=(5, 7))
    widths = [m.out_features for m in net if isinstance(m, torch.nn.Linear)]
    assert widths == [5, 7, 2]


def test_validation_messages():
    with pytest.raises(ValueError, match="cov must be 'diag', 'lowrank' or 'full'"):
        lae.GaussianConditional(2, 2, cov="spherical")
    with pytest.raises(ValueError, match="needs rank="):
        lae.GaussianConditional(2, 2, cov="lowrank")
    with pytest.raises(ValueError, match="rank is only used with cov='lowrank'"):
        lae.GaussianConditional(2, 2, cov="full", rank=1)
    with pytest.raises(ValueError, match="event_dim must be a positive integer"):
        lae.GaussianConditional(2, 0)
    with pytest.raises(ValueError, match=r"expects contexts with 2 features.*shape \(4, 3\)"):
        lae.GaussianConditional(2, 2)(torch.zeros(4, 3))


def test_lowrank_factor_learns():
    q = lae.GaussianConditional(2, 3, hidden=(8,), cov="lowrank", rank=1)
    d = q(torch.randn(16, 2))
    d.log_prob(torch.randn(16, 3)).sum().backward()
    assert q.scale_head.weight.grad[3:].abs().sum() > 0  # the factor's rows get gradient
