"""Conditional distributions as modules: called on a batch of contexts, they return a
``torch.distributions.Distribution`` whose batch shape is the contexts' leading shape.

Model-derived conditionals live in [`latentae.posterior`][]; this module holds the interface
and the learned families (the output units of §14.4 of *Deep Learning*).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import pyro.distributions.transforms as T
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import (
    AffineTransform,
    Bernoulli,
    Categorical,
    Distribution,
    Independent,
    LowRankMultivariateNormal,
    MultivariateNormal,
    Normal,
    TransformedDistribution,
)

__all__ = [
    "MLP",
    "BernoulliConditional",
    "CategoricalConditional",
    "Conditional",
    "FlowConditional",
    "GaussianConditional",
]

# softplus(_SOFTPLUS_ONE) == 1, so a zero-initialised raw scale starts at unit scale.
_SOFTPLUS_ONE = math.log(math.e - 1)
_MIN_SCALE = 1e-5


class Conditional(nn.Module):
    """A conditional distribution p(y | c), as an ``nn.Module``.

    Calling it on contexts of shape ``(*batch, *context_shape)`` returns a torch
    ``Distribution`` with batch shape ``batch``. Conditionals with a density are
    differentiable in their context and value, so derivatives are taken through them by
    autograd; `has_log_prob` is ``False`` for those that can only sample.

    Examples:
        >>> q = GaussianConditional(3, 2, hidden=(16,))
        >>> d = q(torch.randn(5, 3))
        >>> tuple(d.batch_shape), tuple(d.event_shape), tuple(d.log_prob(d.sample()).shape)
        ((5,), (2,), (5,))
    """

    #: Whether the returned distributions have an exact ``log_prob``.
    has_log_prob: bool = True

    def forward(self, context: Tensor) -> Distribution:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, context: Tensor) -> Distribution:  # for type checkers
        return super().__call__(context)


def MLP(in_features: int, out_features: int, hidden: Sequence[int] = (), activation=nn.SiLU):
    """A multilayer perceptron; ``hidden=()`` is a single affine layer.

    Examples:
        >>> MLP(3, 2, hidden=(8,))(torch.randn(4, 3)).shape
        torch.Size([4, 2])
    """
    widths = [in_features, *hidden]
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), activation()]
    layers.append(nn.Linear(widths[-1], out_features))
    return nn.Sequential(*layers)


def _check_dims(**dims: int) -> None:
    for name, value in dims.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _spread(t: Tensor) -> Tensor:
    """Per-feature standard deviations, floored at 1/1000 of their mean: a feature that is
    constant in the data (a blank pixel) must not get a vanishing scale, which would whiten
    it into huge values or make a Gaussian's density on it unbounded."""
    std = t.std(0)
    return std.clamp_min(max(1e-3 * float(std.mean()), 1e-6))


class _Standardized(Conditional):
    """Shared input/output standardization: contexts are whitened per coordinate before the
    network and the network's output is mapped back to the event's units, so the same
    default learning rate works for pixels in [0, 1] and for coordinates in the hundreds."""

    def __init__(self, context_dim: int, event_dim: int) -> None:
        super().__init__()
        self.context_dim, self.event_dim = context_dim, event_dim
        self.register_buffer("context_loc", torch.zeros(context_dim))
        self.register_buffer("context_scale", torch.ones(context_dim))
        self.register_buffer("event_loc", torch.zeros(event_dim))
        self.register_buffer("event_scale", torch.ones(event_dim))

    @torch.no_grad()
    def standardize(self, context: Tensor, event: Tensor | None = None) -> _Standardized:
        """Set the standardization from example contexts (and events), rows as examples."""
        self.context_loc.copy_(context.mean(0))
        self.context_scale.copy_(_spread(context))
        if event is not None and self._standardizes_event:
            self.event_loc.copy_(event.mean(0))
            self.event_scale.copy_(_spread(event))
        return self

    _standardizes_event = True

    def _whiten(self, context: Tensor) -> Tensor:
        if context.shape[-1] != self.context_dim:
            raise ValueError(
                f"{type(self).__name__} expects contexts with {self.context_dim} features in "
                f"the last dimension, got shape {tuple(context.shape)}"
            )
        return (context - self.context_loc) / self.context_scale


class GaussianConditional(_Standardized):
    """A Gaussian p(y | c) = N(mu(c), Sigma(c)) with linear output units (§14.4).

    With ``hidden=()`` the mean is affine in the context and the covariance is a free,
    context-independent parameter, so linear-Gaussian closed forms apply
    ([`linear_gaussian`][latentae.conditionals.GaussianConditional.linear_gaussian]). With hidden
    layers the covariance is predicted from the context (heteroscedastic), since the spread of an
    exact reverse conditional varies with it.

    Args:
        context_dim: number of context features.
        event_dim: dimension of y.
        hidden: widths of the hidden layers.
        cov: ``"diag"``, ``"lowrank"`` (diagonal plus rank ``rank``) or ``"full"``.
        rank: rank of the low-rank part (``cov="lowrank"`` only).

    Examples:
        >>> q = GaussianConditional(4, 2, cov="full")
        >>> type(q(torch.zeros(3, 4))).__name__
        'MultivariateNormal'
    """

    def __init__(
        self,
        context_dim: int,
        event_dim: int,
        hidden: Sequence[int] = (),
        cov: str = "diag",
        rank: int | None = None,
    ) -> None:
        _check_dims(context_dim=context_dim, event_dim=event_dim)
        super().__init__(context_dim, event_dim)
        if cov not in ("diag", "lowrank", "full"):
            raise ValueError(f"cov must be 'diag', 'lowrank' or 'full', got {cov!r}")
        if cov == "lowrank":
            if rank is None:
                raise ValueError("cov='lowrank' needs rank=..., the rank of the low-rank part")
            _check_dims(rank=rank)
        elif rank is not None:
            raise ValueError(f"rank is only used with cov='lowrank', not cov={cov!r}")
        self.hidden, self.cov, self.rank = tuple(hidden), cov, rank
        d = event_dim
        n_scale = {"diag": d, "lowrank": d + d * (rank or 0), "full": d * (d + 1) // 2}[cov]
        if self.hidden:
            body = MLP(context_dim, self.hidden[-1], self.hidden[:-1])
            self.body = nn.Sequential(*body, nn.SiLU())
            self.loc_head = nn.Linear(self.hidden[-1], d)
            self.scale_head = nn.Linear(self.hidden[-1], n_scale)
            nn.init.zeros_(self.scale_head.weight)
            raw = self.scale_head.bias
        else:
            self.body = nn.Identity()
            self.loc_head = nn.Linear(context_dim, d)
            self.scale_raw = nn.Parameter(torch.zeros(n_scale))
            raw = self.scale_raw
        with torch.no_grad():
            raw.zero_()
            if cov == "lowrank":
                # A low-rank factor started at zero has zero gradient and never moves.
                raw[d:].normal_(0.0, 0.01)
        self.register_buffer("_tril", torch.tril_indices(d, d), persistent=False)

    def _scale_params(self, features: Tensor) -> Tensor:
        if self.hidden:
            return self.scale_head(features)
        return self.scale_raw.expand(*features.shape[:-1], -1)

    def forward(self, context: Tensor) -> Distribution:
        features = self.body(self._whiten(context))
        loc = self.event_loc + self.event_scale * self.loc_head(features)
        raw = self._scale_params(features)
        d, es = self.event_dim, self.event_scale
        if self.cov == "diag":
            scale = es * (F.softplus(raw + _SOFTPLUS_ONE) + _MIN_SCALE)
            return Independent(Normal(loc, scale), 1)
        if self.cov == "lowrank":
            diag = es**2 * (F.softplus(raw[..., :d] + _SOFTPLUS_ONE) + _MIN_SCALE) ** 2
            factor = es[:, None] * raw[..., d:].unflatten(-1, (d, self.rank))
            return LowRankMultivariateNormal(loc, factor, diag)
        tril = raw.new_zeros(*raw.shape[:-1], d, d)
        tril[..., self._tril[0], self._tril[1]] = raw
        diag = F.softplus(tril.diagonal(dim1=-2, dim2=-1) + _SOFTPLUS_ONE) + _MIN_SCALE
        tril = tril.tril(-1) + torch.diag_embed(diag)
        return MultivariateNormal(loc, scale_tril=es[:, None] * tril)

    def linear_gaussian(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(W, b, Sigma)`` with p(y | c) = N(W c + b, Sigma), for an affine conditional.

        Raises:
            ValueError: the conditional has hidden layers, so it is not linear-Gaussian.
        """
        if self.hidden:
            raise ValueError("linear_gaussian() needs an affine conditional (hidden=())")
        A, a = self.loc_head.weight, self.loc_head.bias
        W = self.event_scale[:, None] * A / self.context_scale
        b = self.event_loc + self.event_scale * (a - A @ (self.context_loc / self.context_scale))
        dist = self(self.context_loc.unsqueeze(0))
        return (
            W,
            b,
            dist.covariance_matrix[0] if self.cov != "diag" else torch.diag(dist.variance[0]),
        )


class CategoricalConditional(_Standardized):
    """A categorical p(y | c) over ``{0, ..., num_classes - 1}`` with softmax units (§14.4).

    Examples:
        >>> q = CategoricalConditional(2, 3, hidden=(8,))
        >>> q(torch.randn(4, 2)).probs.shape
        torch.Size([4, 3])
    """

    _standardizes_event = False

    def __init__(self, context_dim: int, num_classes: int, hidden: Sequence[int] = ()) -> None:
        _check_dims(context_dim=context_dim, num_classes=num_classes)
        super().__init__(context_dim, 1)
        self.num_classes = num_classes
        self.net = MLP(context_dim, num_classes, hidden)

    def forward(self, context: Tensor) -> Distribution:
        return Categorical(logits=self.net(self._whiten(context)))


class BernoulliConditional(_Standardized):
    """Independent Bernoulli units p(y | c) with sigmoid outputs (§14.4).

    Examples:
        >>> q = BernoulliConditional(2, 16)
        >>> q(torch.randn(4, 2)).sample().shape
        torch.Size([4, 16])
    """

    _standardizes_event = False

    def __init__(self, context_dim: int, event_dim: int, hidden: Sequence[int] = ()) -> None:
        _check_dims(context_dim=context_dim, event_dim=event_dim)
        super().__init__(context_dim, event_dim)
        self.net = MLP(context_dim, event_dim, hidden)

    def forward(self, context: Tensor) -> Distribution:
        return Independent(Bernoulli(logits=self.net(self._whiten(context))), 1)


class FlowConditional(_Standardized):
    """A conditional normalizing flow p(y | c): rational-quadratic spline autoregressive
    transforms (Durkan et al. 2019) whose parameters depend on the context, from Pyro.

    For posteriors that are skewed, bounded or multimodal, where a Gaussian lacks capacity.

    Args:
        context_dim: number of context features.
        event_dim: dimension of y.
        hidden: widths of each transform's conditioner network.
        transforms: number of spline transforms.
        bins: spline bins per transform.

    Examples:
        >>> q = FlowConditional(3, 2, hidden=(16,), transforms=2)
        >>> d = q(torch.randn(5, 3))
        >>> tuple(d.log_prob(d.sample()).shape)
        (5,)
    """

    def __init__(
        self,
        context_dim: int,
        event_dim: int,
        hidden: Sequence[int] = (64, 64),
        transforms: int = 4,
        bins: int = 8,
    ) -> None:
        _check_dims(context_dim=context_dim, event_dim=event_dim, transforms=transforms, bins=bins)
        if not hidden:
            raise ValueError("a flow's conditioner needs at least one hidden layer, got hidden=()")
        super().__init__(context_dim, event_dim)
        if event_dim == 1:
            make = lambda: T.conditional_spline(1, context_dim, list(hidden), count_bins=bins)  # noqa: E731
        else:
            make = lambda: T.conditional_spline_autoregressive(  # noqa: E731
                event_dim, context_dim, list(hidden), count_bins=bins
            )
        self.layers = nn.ModuleList(make() for _ in range(transforms))
        # Reversing the order between autoregressive layers lets every coordinate condition
        # on every other one.
        self.register_buffer("reverse", torch.arange(event_dim - 1, -1, -1))

    def forward(self, context: Tensor) -> Distribution:
        c = self._whiten(context)
        batch = c.shape[:-1]
        base = Independent(
            Normal(c.new_zeros(*batch, self.event_dim), c.new_ones(*batch, self.event_dim)), 1
        )
        transforms = []
        for i, layer in enumerate(self.layers):
            if i and self.event_dim > 1:
                transforms.append(T.Permute(self.reverse))
            transforms.append(layer.condition(c))
        transforms.append(AffineTransform(self.event_loc, self.event_scale, event_dim=1))
        return TransformedDistribution(base, transforms)
