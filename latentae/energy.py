"""The potential energy of an autoencoder (Kamyshanska & Memisevic 2015).

A reconstruction r: R^d -> R^d defines the vector field r(x) − x, which for a denoising
autoencoder estimates σ² ∇log p(x) (§14.5 of *Deep Learning*). That field is the gradient of a
scalar potential F, r(x) − x = ∇F(x), exactly when it is conservative, i.e. (on R^d) when its
Jacobian ∂r/∂x is symmetric everywhere.

A tied-weight autoencoder r(x) = Wᵀ s(W x + b) + c has the symmetric Jacobian
Wᵀ diag(s'(W x + b)) W, and its potential is known in closed form:

    F(x) = Σ_j S(W_j · x + b_j) + c · x − ½ ‖x‖²,

with S an antiderivative of the activation s (sigmoid -> softplus, tanh -> log cosh, ...).
For a tied DAE trained with Gaussian corruption of small σ, r(x) − x ≈ σ² ∇log p(x), so
F/σ² estimates log p(x) up to an additive constant.

- [`TiedAutoencoder`][]: the tied-weight autoencoder, with [`potential`][TiedAutoencoder.potential];
- [`potential`][]: F(x) for a tied autoencoder;
- [`conservative_check`][]: how far any reconstruction's Jacobian is from symmetric.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latentae._util import check_points, rowwise_jacobian
from latentae.conditionals import _check_dims
from latentae.manifold import _mean_of

__all__ = [
    "ACTIVATIONS",
    "ConservativeCheck",
    "TiedAutoencoder",
    "conservative_check",
    "potential",
]

# Terms of the dilogarithm series on (0, 1/2]: the 50th is below 2^-50 / 2500, far under
# double precision relative to Li2(1/2) ≈ 0.58.
_DILOG_TERMS = 50


def _dilog_small(w: Tensor) -> Tensor:
    """Li₂(w) = Σ_k w^k / k² for w in [0, 1/2], by Horner's rule."""
    total = torch.zeros_like(w)
    for k in range(_DILOG_TERMS, 0, -1):
        total = (total + 1.0 / k**2) * w
    return total


def _softplus_integral(u: Tensor) -> Tensor:
    """∫_{−∞}^u softplus(t) dt = −Li₂(−eᵘ).

    For u <= 0 Landen's identity gives −Li₂(−eᵘ) = Li₂(sigmoid(u)) + ½ softplus(u)², whose
    series converges geometrically since sigmoid(u) <= 1/2; for u > 0 the inversion formula
    gives ½u² + π²/6 minus the same function at −u.
    """
    # −|u|, written so that its derivative at u = 0 is 1 (that of the u <= 0 branch), not 0.
    v = torch.where(u > 0, -u, u)
    low = _dilog_small(torch.sigmoid(v)) + 0.5 * F.softplus(v) ** 2
    return torch.where(u > 0, 0.5 * u**2 + math.pi**2 / 6 - low, low)


def _log_cosh(u: Tensor) -> Tensor:
    # log cosh u = |u| + log(1 + e^{−2|u|}) − log 2, which cannot overflow.
    a = u.abs()
    return a + F.softplus(-2 * a) - math.log(2.0)


#: The activations s of [`TiedAutoencoder`][] and their antiderivatives S (S' = s).
ACTIVATIONS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "sigmoid": (torch.sigmoid, F.softplus),
    "tanh": (torch.tanh, _log_cosh),
    "softplus": (F.softplus, _softplus_integral),
    "relu": (F.relu, lambda u: 0.5 * F.relu(u) ** 2),
    "linear": (lambda u: u, lambda u: 0.5 * u**2),
}


class TiedAutoencoder(nn.Module):
    """A tied-weight autoencoder r(x) = Wᵀ s(W x + b) + c, whose field r(x) − x is conservative.

    The encoder s(W x + b) and the decoder Wᵀ h + c share W, so ∂r/∂x = Wᵀ diag(s') W is
    symmetric and r(x) − x = ∇F(x) for the closed-form potential [`potential`][].

    Args:
        x_dim: dimension of x.
        h_dim: number of hidden units.
        activation: one of `ACTIVATIONS` (``"sigmoid"``, ``"tanh"``, ``"softplus"``,
            ``"relu"``, ``"linear"``).

    Examples:
        >>> ae = TiedAutoencoder(3, 4, activation="tanh")
        >>> x = torch.randn(5, 3)
        >>> tuple(ae(x).shape), tuple(ae.potential(x).shape)
        ((5, 3), (5,))
    """

    def __init__(self, x_dim: int, h_dim: int, activation: str = "sigmoid") -> None:
        _check_dims(x_dim=x_dim, h_dim=h_dim)
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)} "
                "(each needs a known antiderivative for the potential)"
            )
        super().__init__()
        self.x_dim, self.h_dim, self.activation = x_dim, h_dim, activation
        layer = nn.Linear(x_dim, h_dim)  # its initialization for W and b
        self.weight, self.bias = layer.weight, layer.bias
        self.out_bias = nn.Parameter(torch.zeros(x_dim))

    def _check(self, x: Any) -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(
                f"x must be a floating-point tensor of shape (..., {self.x_dim}), "
                f"got {type(x).__name__}"
            )
        if x.dim() == 0 or x.shape[-1] != self.x_dim:
            raise ValueError(
                f"x must have {self.x_dim} features in its last dimension (x_dim), got shape "
                f"{tuple(x.shape)}"
            )
        return x

    def preactivation(self, x: Tensor) -> Tensor:
        """W x + b, shape ``(..., h_dim)``."""
        return self._check(x) @ self.weight.mT + self.bias

    def encode(self, x: Tensor) -> Tensor:
        """The code s(W x + b), shape ``(..., h_dim)``."""
        return ACTIVATIONS[self.activation][0](self.preactivation(x))

    def forward(self, x: Tensor) -> Tensor:
        """The reconstruction r(x) = Wᵀ s(W x + b) + c, shape ``(..., x_dim)``."""
        return self.encode(x) @ self.weight + self.out_bias

    def potential(self, x: Tensor) -> Tensor:
        """F(x) = Σ_j S(W_j · x + b_j) + c · x − ½‖x‖², with ∇F(x) = r(x) − x.

        Returns:
            ``(...)``, one value per point (defined up to an additive constant).
        """
        antiderivative = ACTIVATIONS[self.activation][1]
        u = self.preactivation(x)
        return antiderivative(u).sum(-1) + x @ self.out_bias - 0.5 * (x * x).sum(-1)


def potential(autoencoder: TiedAutoencoder, x: Tensor) -> Tensor:
    """The potential energy F(x) of a tied autoencoder, r(x) − x = ∇F(x).

    Args:
        autoencoder: a [`TiedAutoencoder`][].
        x: points of shape ``(..., x_dim)``.

    Returns:
        ``(...)``: F at each point, up to an additive constant.

    Raises:
        TypeError: ``autoencoder`` is not tied, or x is not a floating-point tensor.
        ValueError: x has the wrong width.

    Examples:
        >>> ae = TiedAutoencoder(2, 3)
        >>> x = torch.randn(4, 2, requires_grad=True)
        >>> (grad,) = torch.autograd.grad(potential(ae, x).sum(), x)
        >>> torch.allclose(grad, ae(x) - x)
        True
    """
    if not isinstance(autoencoder, TiedAutoencoder):
        raise TypeError(
            "potential() needs a TiedAutoencoder: only a tied-weight reconstruction "
            "Wᵀ s(Wx + b) + c has a known closed-form potential, got "
            f"{type(autoencoder).__name__}; use conservative_check() to test whether another "
            "reconstruction is a gradient field at all"
        )
    return autoencoder.potential(x)


class ConservativeCheck(NamedTuple):
    """What [`conservative_check`][] returns.

    Attributes:
        asymmetry: ``(n,)``, ‖J − Jᵀ‖_F / (2‖J‖_F) at each point: the share of the Jacobian
            (in Frobenius norm) that is antisymmetric, in [0, 1]; 0 iff J is symmetric, 1 iff
            it is antisymmetric (a pure rotation field). 0 where J vanishes.
        mean: the mean of ``asymmetry`` over the points.
        max: its maximum.
        jacobian: ``(n, d, d)``, the Jacobian ∂r/∂x at each point.
    """

    asymmetry: Tensor
    mean: float
    max: float
    jacobian: Tensor


def _as_field(r: Any) -> tuple[Callable[[Tensor], Tensor], str]:
    """A map x -> r(x) (a tensor) from a callable or an ``(encoder, decoder)`` pair."""
    if isinstance(r, tuple) and len(r) == 2 and all(callable(m) for m in r):
        encoder, decoder = r

        def reconstruct(x: Tensor) -> Tensor:
            return _mean_of(decoder(_mean_of(encoder(x), "encoder")), "decoder")

        return reconstruct, "decoder(encoder(x).mean).mean"
    if not callable(r):
        raise TypeError(
            f"r must be a callable x -> r(x) or an (encoder, decoder) pair, got {type(r).__name__}"
        )
    return (lambda x: _mean_of(r(x), "reconstruction")), "reconstruction"


def conservative_check(r: Any, x: Tensor) -> ConservativeCheck:
    """How far the reconstruction field r(x) − x is from a gradient field, at each row of x.

    On R^d a smooth field is the gradient of a potential iff its Jacobian is symmetric
    everywhere; the Jacobian of r(x) − x is ∂r/∂x − I, symmetric iff ∂r/∂x is. This measures
    the antisymmetric share of ∂r/∂x (by autograd) at the given points: a tied autoencoder
    gives 0 up to rounding; a generic untied one does not.

    Args:
        r: a map x -> r(x) of shape ``(n, d) -> (n, d)`` returning a tensor or a distribution
            (its mean is used), or an ``(encoder, decoder)`` pair, read as
            ``decoder(encoder(x).mean).mean``. Rows must be treated independently.
        x: the points, shape ``(n, d)``.

    Returns:
        A [`ConservativeCheck`][].

    Raises:
        TypeError: x is not a floating-point tensor, or r is not callable / has no mean.
        ValueError: bad shapes, non-finite x, r not mapping R^d to R^d, or r not
            differentiable in x.

    Examples:
        >>> A = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
        >>> conservative_check(lambda x: x @ A.T, torch.randn(3, 2)).asymmetry
        tensor([0.5774, 0.5774, 0.5774])
        >>> conservative_check(lambda x: x @ (A + A.T).T, torch.randn(3, 2)).max
        0.0
    """
    check_points(x, "conservative_check")
    field, role = _as_field(r)
    J = rowwise_jacobian(field, x, role)[1]
    _, p, d = J.shape
    if p != d:
        raise ValueError(
            f"the {role} maps R^{d} to R^{p}; a reconstruction must map x back to the same "
            f"space (output width {d})"
        )
    anti = 0.5 * torch.linalg.matrix_norm(J - J.mT)
    whole = torch.linalg.matrix_norm(J)
    asym = torch.where(whole > 0, anti / whole.clamp_min(torch.finfo(J.dtype).tiny), 0.0)
    return ConservativeCheck(asym, float(asym.mean()), float(asym.max()), J)
