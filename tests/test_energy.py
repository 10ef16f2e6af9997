"""Tests of latentae.energy: the potential of a tied autoencoder and the symmetry check."""

import math

import pytest
import torch

import latentae as lae
from latentae.energy import (
    ACTIVATIONS,
    TiedAutoencoder,
    conservative_check,
    potential,
)


def _randomized(ae: TiedAutoencoder, seed: int) -> TiedAutoencoder:
    """Weights of order one and nonzero biases, so that every activation is exercised on both
    sides of zero and in its saturated range."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ae.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return ae


class _Untied(torch.nn.Module):
    """r(x) = V s(W x + b) + c with V unrelated to Wᵀ."""

    def __init__(self, x_dim: int, h_dim: int) -> None:
        super().__init__()
        self.enc = torch.nn.Linear(x_dim, h_dim)
        self.dec = torch.nn.Linear(h_dim, x_dim)

    def forward(self, x):
        return self.dec(torch.sigmoid(self.enc(x)))


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_potential_gradient_is_the_reconstruction_field(activation):
    ae = _randomized(TiedAutoencoder(4, 6, activation=activation), seed=0)
    x = 3 * torch.randn(200, 4)
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(potential(ae, x).sum(), x)
    # An identity, so the only error is float64 rounding: values here are O(10), and sums of
    # six terms of that size round at ~1e-14; 1e-9 leaves wide room and still fails for any
    # wrong antiderivative (which errs at O(1)).
    torch.testing.assert_close(grad, ae(x) - x, atol=1e-9, rtol=0)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_antiderivative_is_finite_and_smooth_far_out(activation):
    s, S = ACTIVATIONS[activation]
    u = torch.tensor([-1e3, -40.0, -1.0, 0.0, 1.0, 40.0, 1e3], requires_grad=True)
    value = S(u)
    (slope,) = torch.autograd.grad(value.sum(), u)
    assert torch.isfinite(value).all()
    # S' = s exactly in real arithmetic; 1e-12 relative is far above float64 rounding.
    torch.testing.assert_close(slope, s(u), atol=1e-12, rtol=1e-12)


def test_softplus_antiderivative_is_minus_the_dilogarithm():
    S = ACTIVATIONS["softplus"][1]
    u = torch.tensor([-50.0, 0.0, 50.0])
    # −Li₂(−eᵘ): e^{-50} to first order; −Li₂(−1) = π²/12; ½u² + π²/6 − e^{−u} for large u.
    expected = torch.tensor([math.exp(-50.0), math.pi**2 / 12, 1250 + math.pi**2 / 6])
    torch.testing.assert_close(S(u), expected, atol=1e-15, rtol=1e-15)


def test_log_cosh_does_not_overflow():
    S = ACTIVATIONS["tanh"][1]
    u = torch.tensor([-1e4, 0.0, 1e4])
    # log cosh u = |u| − log 2 up to e^{−2|u|}; cosh itself overflows at |u| > 710.
    expected = torch.tensor([1e4 - math.log(2), 0.0, 1e4 - math.log(2)])
    torch.testing.assert_close(S(u), expected, atol=0, rtol=1e-15)


def test_tied_autoencoder_is_conservative_and_an_untied_one_is_not():
    torch.manual_seed(0)
    x = 2 * torch.randn(100, 5)
    tied = _randomized(TiedAutoencoder(5, 7, activation="tanh"), seed=1)
    untied = _Untied(5, 7)
    with torch.no_grad():
        for p in untied.parameters():
            p.normal_()
    check_tied = conservative_check(tied, x)
    check_untied = conservative_check(untied, x)
    # Wᵀ diag(s') W is symmetric in exact arithmetic; its two triangles are computed by
    # different backward passes, so they agree to float64 rounding (~1e-16 relative).
    assert check_tied.max < 1e-12
    # V diag(s') W with V, W independent Gaussian: a generic matrix, whose antisymmetric
    # share is about 1/√2 on average (for an iid Gaussian d×d matrix it is √((d−1)/2d));
    # 0.1 is far below that and far above rounding.
    assert check_untied.asymmetry.min() > 0.1
    assert check_untied.mean == pytest.approx(float(check_untied.asymmetry.mean()))
    assert check_untied.jacobian.shape == (100, 5, 5)


def test_linear_field_is_conservative_iff_symmetric():
    torch.manual_seed(1)
    A = torch.randn(4, 4)
    x = torch.randn(10, 4)
    symmetric = conservative_check(lambda x: x @ (A + A.T).T, x)
    assert symmetric.max == 0.0
    general = conservative_check(lambda x: x @ A.T, x)
    expected = torch.linalg.matrix_norm(A - A.T) / (2 * torch.linalg.matrix_norm(A))
    torch.testing.assert_close(general.asymmetry, expected.expand(10), atol=1e-14, rtol=0)
    assert general.max > 0.1
    rotation = conservative_check(lambda x: x @ (A - A.T).T, x)
    torch.testing.assert_close(rotation.asymmetry, torch.ones(10), atol=1e-14, rtol=0)
    # A constant field has a zero Jacobian: symmetric, so 0 rather than 0/0.
    constant = conservative_check(lambda x: 0 * x + 1, x)
    assert constant.max == 0.0


def test_encoder_decoder_pair_is_read_through_the_means():
    torch.manual_seed(2)
    enc = lae.GaussianEncoder(3, 2, noise=0.3)
    dec = lae.GaussianDecoder(2, 3)
    x = torch.randn(6, 3)
    check = conservative_check((enc, dec), x)
    V, _, _ = enc.linear_gaussian()
    W, _, _ = dec.linear_gaussian()
    torch.testing.assert_close(check.jacobian, (W @ V).expand(6, 3, 3), atol=1e-12, rtol=0)
    J = W @ V
    expected = torch.linalg.matrix_norm(J - J.T) / (2 * torch.linalg.matrix_norm(J))
    torch.testing.assert_close(check.asymmetry, expected.expand(6), atol=1e-12, rtol=0)


def test_tied_autoencoder_follows_the_input_batch_shape():
    ae = TiedAutoencoder(3, 2, activation="softplus")
    x = torch.randn(4, 5, 3)
    assert ae(x).shape == (4, 5, 3)
    assert potential(ae, x).shape == (4, 5)
    assert ae.encode(x).shape == (4, 5, 2)


def test_bad_input_is_refused_with_a_reason():
    with pytest.raises(ValueError, match=r"unknown activation 'gelu'; choose one of"):
        TiedAutoencoder(2, 3, activation="gelu")
    with pytest.raises(ValueError, match="h_dim must be a positive integer"):
        TiedAutoencoder(2, 0)
    ae = TiedAutoencoder(2, 3)
    with pytest.raises(ValueError, match=r"2 features in its last dimension .* got shape \(4, 3\)"):
        potential(ae, torch.randn(4, 3))
    with pytest.raises(TypeError, match="floating-point tensor"):
        ae(torch.ones(4, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="potential\\(\\) needs a TiedAutoencoder"):
        potential(_Untied(2, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"maps R\^3 to R\^2"):
        conservative_check(lambda x: x[:, :2], torch.randn(4, 3))
    with pytest.raises(ValueError, match="does not depend on x through autograd"):
        conservative_check(lambda x: x.detach() * 2, torch.randn(4, 3))
    with pytest.raises(TypeError, match="must return a torch Distribution or a tensor"):
        conservative_check(lambda x: x.tolist(), torch.randn(4, 3))
    with pytest.raises(TypeError, match="callable x -> r\\(x\\) or an \\(encoder, decoder\\)"):
        conservative_check(torch.eye(3), torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"shape \(n, d\).*use x\[None\] for a single point"):
        conservative_check(lambda x: x, torch.randn(3))
    with pytest.raises(ValueError, match="non-finite value"):
        conservative_check(lambda x: x, torch.tensor([[0.0, math.nan]]))
    with pytest.raises(ValueError, match="one row per point"):
        conservative_check(lambda x: x.sum(0), torch.randn(4, 3))
