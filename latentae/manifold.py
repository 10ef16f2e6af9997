"""Tangent planes of the data manifold from an encoder's Jacobian (§14.6 of *Deep Learning*).

An encoder trained to reconstruct under corruption is sensitive along the data manifold and
insensitive across it: at a point x near the manifold, its Jacobian J = ∂f/∂x stretches the
tangent directions and contracts the normal ones. The top right-singular vectors of J (in x
space) therefore estimate the tangent plane, and a large gap between consecutive singular
values marks the manifold's local dimension.

- [`encoder_jacobian`][]: J at every row of x, by autograd, vectorized over the rows;
- [`tangent_plane`][]: the SVD of J, the tangent basis and the local dimension;
- [`contraction`][]: how much more J stretches along a given tangent plane than across it;
- [`subspace_angles`][]: principal angles between two subspaces, in degrees.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.distributions import Distribution

from latentae._util import check_finite, check_points, rowwise_jacobian

__all__ = [
    "Contraction",
    "TangentPlane",
    "contraction",
    "encoder_jacobian",
    "subspace_angles",
    "tangent_plane",
]


class TangentPlane(NamedTuple):
    """What [`tangent_plane`][] returns, for n points in R^d (m = min(d_h, d)).

    Attributes:
        basis: ``(n, d, k)``, orthonormal columns spanning each point's tangent plane: the
            top right-singular vectors of J. With a fixed ``dim``, k = dim. With an estimated
            dimension, k is the largest estimate and a point whose own estimate is smaller has
            zero columns after its first ``dim[i]``, so ``basis @ basis.mT`` is still each
            point's orthogonal projector onto its plane.
        singular_values: ``(n, m)``, the singular values of J, descending.
        dim: ``(n,)`` long, the dimension of each point's plane (the given ``dim``, or the
            estimate).
        vectors: ``(n, d, d)``, all right-singular vectors of J as columns, in the order of
            descending singular value (the null space of J last).
        jacobian: ``(n, d_h, d)``, the encoder's Jacobian at each point.
    """

    basis: Tensor
    singular_values: Tensor
    dim: Tensor
    vectors: Tensor
    jacobian: Tensor


class Contraction(NamedTuple):
    """What [`contraction`][] returns, one value per point.

    Attributes:
        along: ``(n,)``, the root-mean-square gain ‖J t‖ over unit tangent directions t,
            i.e. ‖J P‖_F / √k with P the projector onto the k-dimensional tangent plane.
        across: ``(n,)``, the same over unit normal directions, ‖J (I − P)‖_F / √(d − k).
        ratio: ``(n,)``, ``along / across``; above 1 where the encoder is more sensitive
            along the manifold than across it (infinite where ``across`` is zero).
    """

    along: Tensor
    across: Tensor
    ratio: Tensor


def _mean_of(output: Any, role: str) -> Tensor:
    """The deterministic part of a map's output: a tensor as it is, a distribution's mean."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Distribution):
        try:
            return output.mean
        except NotImplementedError:
            raise TypeError(
                f"the {role} returned a {type(output).__name__}, which has no closed-form "
                f"mean; pass a callable x -> tensor (e.g. lambda x: {role}(x).loc) instead"
            ) from None
    raise TypeError(
        f"the {role} must return a torch Distribution or a tensor, got {type(output).__name__}"
    )


def encoder_jacobian(encoder: Callable[[Tensor], Any], x: Tensor) -> Tensor:
    """The Jacobian ∂f/∂x of the encoder's mean f(x) at every row of x.

    Args:
        encoder: a [`Conditional`][latentae.conditionals.Conditional] (its distributions' mean is
            used) or a plain callable mapping x of shape ``(n, d)`` to h of shape
            ``(n, d_h)``. It must treat rows independently (no batch statistics).
        x: the points, shape ``(n, d)``.

    Returns:
        ``(n, d_h, d)``.

    Raises:
        TypeError: x is not a floating-point tensor, or the encoder returns something with
            no mean.
        ValueError: x is not of shape (n, d), has a non-finite value, or the encoder's mean
            is not differentiable in x or not one row per point.

    Examples:
        >>> A = torch.tensor([[1.0, 2.0], [0.0, 3.0], [4.0, 5.0]])
        >>> encoder_jacobian(lambda x: x @ A.T, torch.randn(4, 2))[0]
        tensor([[1., 2.],
                [0., 3.],
                [4., 5.]])
    """
    check_points(x, "encoder_jacobian")
    if not callable(encoder):
        raise TypeError(f"encoder must be callable, got {type(encoder).__name__}")
    return rowwise_jacobian(lambda z: _mean_of(encoder(z), "encoder"), x, "encoder")[1]


def _local_dimension(s: Tensor, min_ratio: float) -> Tensor:
    """The k that maximizes log(s_k / s_{k+1}), or m where no ratio reaches ``min_ratio``."""
    n, m = s.shape
    tiny = torch.finfo(s.dtype).tiny
    dim = torch.full((n,), m, dtype=torch.long, device=s.device)
    if m > 1:
        log_s = s.clamp_min(tiny).log()
        gaps = log_s[:, :-1] - log_s[:, 1:]
        best, k = gaps.max(dim=1)
        dim = torch.where(best >= math.log(min_ratio), k + 1, dim)
    # A Jacobian that vanishes is sensitive in no direction at all.
    return torch.where(s[:, 0] > 0, dim, torch.zeros_like(dim))


def tangent_plane(
    encoder: Callable[[Tensor], Any],
    x: Tensor,
    dim: int | None = None,
    *,
    min_ratio: float = 4.0,
) -> TangentPlane:
    """Estimate the tangent plane of the data manifold at each row of x from the encoder.

    The encoder's Jacobian J ([`encoder_jacobian`][]) is decomposed as J = U S Vᵀ; the
    tangent plane is spanned by the right-singular vectors (in x space) of the largest
    singular values, the directions the encoder is most sensitive to (§14.6).

    With ``dim=None`` the local dimension is estimated per point at the largest gap between
    consecutive singular values, k = argmax log(s_k / s_{k+1}). A gap only counts as one
    when s_k / s_{k+1} >= ``min_ratio``; otherwise J stretches all m = min(d_h, d) directions
    about alike and the estimate is m. The threshold matters most when m = 2, where there is a
    single ratio: without it every point would get dimension 1. The default 4 is a
    convention, not a derived value: a DAE with Gaussian corruption σ on a manifold with
    normal noise s ideally contracts normal directions by s²/(s² + σ²) relative to tangent
    ones, so set it from the σ/s of the problem where that is known.

    Args:
        encoder: a [`Conditional`][latentae.conditionals.Conditional] (its mean is used) or a plain
            callable x -> h, treating rows independently.
        x: the points, shape ``(n, d)``.
        dim: the tangent dimension, in 1..m; ``None`` estimates it per point.
        min_ratio: the smallest singular-value ratio that counts as a gap (``dim=None``).

    Returns:
        A [`TangentPlane`][].

    Raises:
        TypeError: x is not a floating-point tensor, or the encoder has no usable mean.
        ValueError: bad shapes, non-finite x, ``dim`` out of range, ``min_ratio <= 1``, or an
            encoder not differentiable in x.

    Examples:
        >>> A = torch.tensor([[3.0, 0.0], [0.0, 0.1]])  # stretches e1, contracts e2
        >>> plane = tangent_plane(lambda x: x @ A.T, torch.randn(5, 2))
        >>> plane.dim.tolist(), plane.basis[0].abs().squeeze(-1).tolist()
        ([1, 1, 1, 1, 1], [1.0, 0.0])
        >>> plane.singular_values[0]
        tensor([3.0000, 0.1000])
    """
    check_points(x, "tangent_plane")
    if isinstance(min_ratio, bool) or not isinstance(min_ratio, int | float):
        raise TypeError(f"min_ratio must be a number > 1, got {min_ratio!r}")
    if not 1 < min_ratio < math.inf:
        raise ValueError(
            f"min_ratio must be finite and > 1 (a ratio of singular values), got {min_ratio!r}"
        )
    J = encoder_jacobian(encoder, x)
    n, h_dim, d = J.shape
    m = min(h_dim, d)
    if dim is not None:
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"dim must be an int or None, got {dim!r}")
        if not 1 <= dim <= m:
            raise ValueError(
                f"dim must be in 1..{m} (the rank bound min(h_dim={h_dim}, x_dim={d}) of the "
                f"encoder's Jacobian), got {dim}; or dim=None to estimate it"
            )
    _, s, Vh = torch.linalg.svd(J, full_matrices=True)
    vectors = Vh.mT
    if dim is not None:
        dims = torch.full((n,), dim, dtype=torch.long, device=x.device)
        basis = vectors[..., :dim]
    else:
        dims = _local_dimension(s, float(min_ratio))
        k = max(int(dims.max()), 1)
        keep = torch.arange(k, device=x.device) < dims[:, None]
        basis = vectors[..., :k] * keep[:, None, :].to(vectors.dtype)
    return TangentPlane(basis, s, dims, vectors, J)


def _orthonormal(a: Tensor, what: str) -> Tensor:
    """An orthonormal basis (n, d, k) of the span of each point's columns, checking rank."""
    q, r = torch.linalg.qr(a)
    diag = r.diagonal(dim1=-2, dim2=-1).abs()
    scale = a.norm(dim=-2).amax(dim=-1, keepdim=True)
    eps = torch.finfo(a.dtype).eps
    bad = (diag <= 1e3 * eps * a.shape[-2] * scale).any(dim=-1)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"the columns of {what} are linearly dependent (or zero) at row {i}; give a basis "
            "of full column rank (a zero-padded TangentPlane.basis from dim=None is not one: "
            "pass tangent_plane(..., dim=k))"
        )
    return q


def _as_bases(a: Any, what: str, n: int | None = None, d: int | None = None) -> Tensor:
    if not isinstance(a, Tensor) or not a.is_floating_point():
        raise TypeError(f"{what} must be a floating-point tensor, got {type(a).__name__}")
    if a.dim() == 2:
        a = a.unsqueeze(-1)  # one vector per point
    if a.dim() != 3:
        raise ValueError(
            f"{what} must have shape (n, d) (one vector per point) or (n, d, k) (k basis "
            f"vectors per point, as columns), got {tuple(a.shape)}"
        )
    if d is not None and a.shape[1] != d:
        raise ValueError(f"{what} has vectors of dimension {a.shape[1]}, but x has {d} columns")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{what} has {a.shape[0]} rows but x has {n}; give one basis per point")
    check_finite(a, what)
    return a


def contraction(encoder: Callable[[Tensor], Any], x: Tensor, tangent: Tensor) -> Contraction:
    """How much more the encoder stretches along the tangent plane than across it (§14.6).

    With J the encoder's Jacobian at a point and P the orthogonal projector onto the tangent
    plane there, ``along`` = ‖J P‖_F / √k and ``across`` = ‖J (I − P)‖_F / √(d − k): the
    root-mean-square of ‖J t‖ over unit tangent directions t and of ‖J ν‖ over unit normal
    directions ν. An encoder that has learnt the manifold has ``ratio`` = along/across > 1.

    Args:
        encoder: a [`Conditional`][latentae.conditionals.Conditional] (its mean is used) or a plain
            callable x -> h, treating rows independently.
        x: the points, shape ``(n, d)``.
        tangent: the tangent directions at each point, true or estimated: ``(n, d)`` for a
            curve, or ``(n, d, k)`` with k < d linearly independent columns (they need not be
            orthonormal; e.g. ``tangent_plane(encoder, x, dim=k).basis``).

    Returns:
        A [`Contraction`][].

    Raises:
        TypeError, ValueError: bad input, as for [`tangent_plane`][]; a tangent basis of the
            wrong shape, rank-deficient, or spanning all of R^d (then nothing is normal).

    Examples:
        >>> A = torch.tensor([[3.0, 0.0], [0.0, 0.1]])
        >>> x = torch.randn(4, 2)
        >>> contraction(lambda x: x @ A.T, x, torch.tensor([1.0, 0.0]).expand(4, 2)).ratio
        tensor([30.0000, 30.0000, 30.0000, 30.0000])
    """
    check_points(x, "contraction")
    n, d = x.shape
    t = _as_bases(tangent, "tangent", n, d)
    if t.shape[-1] >= d:
        raise ValueError(
            f"tangent has {t.shape[-1]} vectors per point in R^{d}, leaving no normal "
            f"direction; give at most {d - 1}"
        )
    q = _orthonormal(t, "tangent")
    k = q.shape[-1]
    J = encoder_jacobian(encoder, x).to(q.dtype)
    along = J @ q
    # J(I − P) directly rather than ‖J‖² − ‖JP‖², which cancels when J contracts strongly.
    across = J - along @ q.mT
    along_sq = along.square().sum(dim=(-2, -1))
    across_sq = across.square().sum(dim=(-2, -1))
    along_rms = (along_sq / k).sqrt()
    across_rms = (across_sq / (d - k)).sqrt()
    return Contraction(along_rms, across_rms, along_rms / across_rms)


def subspace_angles(a: Tensor, b: Tensor) -> Tensor:
    """The principal angles between the subspaces spanned by ``a`` and ``b``, in degrees.

    Computed from both cosines (singular values of Q_aᵀ Q_b) and sines (singular values of
    the part of Q_b outside span a), combined by atan2, so that small angles are accurate to
    a few eps (in radians) instead of the ~√eps of arccos.

    Args:
        a: ``(n, d)`` (a line per point) or ``(n, d, k_a)`` (columns spanning a subspace per
            point, linearly independent but not necessarily orthonormal).
        b: the same for the other subspaces, ``(n, d)`` or ``(n, d, k_b)``.

    Returns:
        ``(n, min(k_a, k_b))``, the angles in [0, 90], ascending. For two lines this is the
        angle between them regardless of the vectors' signs.

    Raises:
        TypeError, ValueError: non-tensors, mismatched shapes, rank-deficient columns.

    Examples:
        >>> a = torch.tensor([[1.0, 0.0, 0.0]])
        >>> b = torch.tensor([[1.0, 1.0, 0.0]])
        >>> subspace_angles(a, b)
        tensor([[45.0000]])
        >>> subspace_angles(torch.eye(3)[None, :, :2], torch.eye(3)[None, :, 1:])
        tensor([[ 0., 90.]])
    """
    a = _as_bases(a, "a")
    b = _as_bases(b, "b", a.shape[0], a.shape[1])
    qa, qb = _orthonormal(a, "a"), _orthonormal(b, "b")
    if qb.shape[-1] > qa.shape[-1]:
        qa, qb = qb, qa  # the smaller subspace is b: it has min(k_a, k_b) angles
    cos = torch.linalg.svdvals(qa.mT @ qb)  # descending: angles ascending
    outside = qb - qa @ (qa.mT @ qb)
    sin = torch.linalg.svdvals(outside).flip(-1)  # ascending, matched to the cosines
    return torch.rad2deg(torch.atan2(sin, cos))
