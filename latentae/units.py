"""The encoder and decoder families of a denoising autoencoder: the output units of §14.4 of
*Deep Learning*, each a [`Conditional`][latentae.conditionals.Conditional].

Decoders p_dec(x | h) all take the leading arguments ``(h_dim, x_dim, hidden=...)``, where
``hidden=()`` is an affine body and a tuple of widths is a multilayer perceptron:

- [`GaussianDecoder`][]: linear units (diagonal, low-rank or full covariance);
- [`BernoulliDecoder`][]: sigmoid units, for binary x;
- [`CategoricalDecoder`][]: softmax units, for x a vector of categorical variables;
- [`MixtureDecoder`][]: a mixture density network, for multimodal x | h;
- [`FlowDecoder`][]: a conditional spline flow, where more capacity is needed.

The encoder q(h | x̃) is [`GaussianEncoder`][]: a deterministic map plus injected Gaussian
noise of a fixed scale (fig. 14.2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from pyro.distributions import Delta
from torch import Tensor
from torch.distributions import (
    Categorical,
    Distribution,
    Independent,
    MixtureSameFamily,
    Normal,
)

from latentae.conditionals import (
    _SOFTPLUS_ONE,
    MLP,
    BernoulliConditional,
    CategoricalConditional,
    FlowConditional,
    GaussianConditional,
    _check_dims,
    _Standardized,
)

__all__ = [
    "UNITS",
    "BernoulliDecoder",
    "CategoricalDecoder",
    "FlowDecoder",
    "GaussianDecoder",
    "GaussianEncoder",
    "MixtureDecoder",
    "from_config",
]


def _check_hidden(hidden: Sequence[int]) -> tuple[int, ...]:
    """Return ``hidden`` as a tuple after checking that it is a sequence of positive ints."""
    if isinstance(hidden, int) or not isinstance(hidden, Sequence):
        raise ValueError(
            f"hidden must be a sequence of layer widths such as (64,) or (), got {hidden!r}"
        )
    for width in hidden:
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ValueError(
                f"hidden must contain positive integer layer widths, got {tuple(hidden)!r}"
            )
    return tuple(hidden)


class GaussianDecoder(GaussianConditional):
    """Gaussian p(x | h) = N(mu(h), Sigma(h)) with linear output units (§14.4).

    The Gaussian family of [`GaussianConditional`][latentae.conditionals.GaussianConditional] with
    the decoder's argument names. With ``hidden=()`` the mean is affine in h and the covariance is a
    free, context-independent parameter, so
    [`linear_gaussian`][latentae.conditionals.GaussianConditional.linear_gaussian] returns
    ``(W, b, Psi)`` with p(x | h) = N(W h + b, Psi). With hidden layers the covariance is
    predicted from h (heteroscedastic).

    Args:
        h_dim: dimension of the code h.
        x_dim: dimension of x.
        hidden: widths of the hidden layers; ``()`` is affine.
        cov: ``"diag"``, ``"lowrank"`` (diagonal plus rank ``rank``) or ``"full"``.
        rank: rank of the low-rank part (``cov="lowrank"`` only).

    Examples:
        >>> dec = GaussianDecoder(2, 3)
        >>> W, b, Psi = dec.linear_gaussian()
        >>> tuple(W.shape), tuple(b.shape), tuple(Psi.shape)
        ((3, 2), (3,), (3, 3))
        >>> tuple(dec(torch.randn(5, 2)).sample().shape)
        (5, 3)
    """

    def __init__(
        self,
        h_dim: int,
        x_dim: int,
        hidden: Sequence[int] = (),
        cov: str = "diag",
        rank: int | None = None,
    ) -> None:
        _check_dims(h_dim=h_dim, x_dim=x_dim)
        super().__init__(h_dim, x_dim, hidden=_check_hidden(hidden), cov=cov, rank=rank)
        self.h_dim, self.x_dim = h_dim, x_dim

    def to_config(self) -> dict[str, Any]:
        """The constructor's arguments, for [`from_config`][]."""
        return _config(self, cov=self.cov, rank=self.rank)


class BernoulliDecoder(BernoulliConditional):
    """Independent Bernoulli p(x | h) with sigmoid output units (§14.4), for binary x.

    ``log_prob`` accepts float tensors of zeros and ones, as DAE data are floats.

    Args:
        h_dim: dimension of the code h.
        x_dim: number of binary variables in x.
        hidden: widths of the hidden layers; ``()`` is affine (logistic regression).

    Examples:
        >>> dec = BernoulliDecoder(2, 4, hidden=(8,))
        >>> d = dec(torch.randn(5, 2))
        >>> tuple(d.log_prob(torch.ones(5, 4)).shape)
        (5,)
    """

    def __init__(self, h_dim: int, x_dim: int, hidden: Sequence[int] = ()) -> None:
        _check_dims(h_dim=h_dim, x_dim=x_dim)
        super().__init__(h_dim, x_dim, hidden=_check_hidden(hidden))
        self.h_dim, self.x_dim, self.hidden = h_dim, x_dim, tuple(hidden)

    def to_config(self) -> dict[str, Any]:
        """The constructor's arguments, for [`from_config`][]."""
        return _config(self)


class CategoricalDecoder(CategoricalConditional):
    """Softmax output units (§14.4): x is a vector of ``x_dim`` independent categorical
    variables given h, each over ``{0, ..., num_classes - 1}``.

    Returns ``Independent(Categorical(logits), 1)`` with logits of shape
    ``(*batch, x_dim, num_classes)``. ``log_prob`` accepts class indices as longs or as floats
    of integral value (DAE data tensors are float; ``Categorical.log_prob`` casts them to long
    after argument validation has checked that they are integral and in range); ``sample``
    returns longs.

    Args:
        h_dim: dimension of the code h.
        x_dim: number of categorical variables in x.
        hidden: widths of the hidden layers; ``()`` is affine (multinomial logistic regression).
        num_classes: number of classes K of each variable (keyword-only: it is a property of
            the data, so there is no default).

    Examples:
        >>> dec = CategoricalDecoder(2, 3, num_classes=4)
        >>> d = dec(torch.randn(5, 2))
        >>> tuple(d.base_dist.probs.shape), tuple(d.log_prob(torch.zeros(5, 3)).shape)
        ((5, 3, 4), (5,))
    """

    def __init__(
        self, h_dim: int, x_dim: int, hidden: Sequence[int] = (), *, num_classes: int
    ) -> None:
        _check_dims(h_dim=h_dim, x_dim=x_dim, num_classes=num_classes)
        super().__init__(h_dim, x_dim * num_classes, hidden=_check_hidden(hidden))
        self.h_dim, self.x_dim, self.hidden = h_dim, x_dim, tuple(hidden)
        self.num_classes = num_classes

    def to_config(self) -> dict[str, Any]:
        """The constructor's arguments, for [`from_config`][]."""
        return _config(self, num_classes=self.num_classes)

    def forward(self, context: Tensor) -> Distribution:
        logits = self.net(self._whiten(context)).unflatten(-1, (self.x_dim, self.num_classes))
        return Independent(Categorical(logits=logits), 1)


class MixtureDecoder(_Standardized):
    """A mixture density network p(x | h) (Bishop 1994; §14.4): a mixture of ``components``
    diagonal Gaussians whose weights, means and scales are all predicted from h.

    For x | h that is multimodal, where a single Gaussian averages the modes. The component
    means start spread out (standard-normal quantiles per coordinate, in a random order per
    coordinate, in standardized units): if they started equal, every component would get the
    same gradient and they would never separate. Scales are floored at ``min_scale`` (in
    standardized units), since a component collapsing onto one training point makes the
    likelihood unbounded.

    Args:
        h_dim: dimension of the code h.
        x_dim: dimension of x.
        hidden: widths of the hidden layers; ``()`` is affine.
        components: number of mixture components.
        min_scale: floor of every component scale, relative to x's standardization scale.

    Examples:
        >>> dec = MixtureDecoder(2, 3, hidden=(16,), components=4)
        >>> d = dec(torch.randn(5, 2))
        >>> tuple(d.batch_shape), tuple(d.event_shape), tuple(d.log_prob(d.sample()).shape)
        ((5,), (3,), (5,))
    """

    def __init__(
        self,
        h_dim: int,
        x_dim: int,
        hidden: Sequence[int] = (64,),
        components: int = 5,
        min_scale: float = 1e-3,
    ) -> None:
        _check_dims(h_dim=h_dim, x_dim=x_dim, components=components)
        if not isinstance(min_scale, int | float) or not 0 < min_scale < math.inf:
            raise ValueError(f"min_scale must be a positive finite number, got {min_scale!r}")
        super().__init__(h_dim, x_dim)
        self.h_dim, self.x_dim, self.hidden = h_dim, x_dim, _check_hidden(hidden)
        self.components, self.min_scale = components, float(min_scale)
        k, d = components, x_dim
        self.net = MLP(h_dim, k * (1 + 2 * d), self.hidden)
        # Output layout: [logits (k) | means (k, d) | raw scales (k, d)]. Equal weights, unit
        # scales, and means at the k standard-normal quantiles, shuffled per coordinate so the
        # means do not all lie on one line.
        out = self.net[-1]
        with torch.no_grad():
            out.bias.zero_()
            p = (torch.arange(k, dtype=out.bias.dtype) + 0.5) / k
            quantiles = math.sqrt(2) * torch.erfinv(2 * p - 1)
            order = torch.argsort(torch.rand(d, k), dim=-1)
            out.bias[k : k + k * d] = quantiles[order].T.reshape(-1).to(out.bias)

    def to_config(self) -> dict[str, Any]:
        """The constructor's arguments, for [`from_config`][]."""
        return _config(self, components=self.components, min_scale=self.min_scale)

    def forward(self, context: Tensor) -> Distribution:
        k, d = self.components, self.x_dim
        out = self.net(self._whiten(context))
        logits = out[..., :k]
        loc = self.event_loc + self.event_scale * out[..., k : k + k * d].unflatten(-1, (k, d))
        raw = out[..., k + k * d :].unflatten(-1, (k, d))
        scale = self.event_scale * (F.softplus(raw + _SOFTPLUS_ONE) + self.min_scale)
        return MixtureSameFamily(Categorical(logits=logits), Independent(Normal(loc, scale), 1))


class FlowDecoder(FlowConditional):
    """A conditional spline flow p(x | h), for x | h beyond a Gaussian's or a mixture's capacity.

    [`FlowConditional`][latentae.conditionals.FlowConditional] with the decoder's argument names.

    Args:
        h_dim: dimension of the code h.
        x_dim: dimension of x.
        hidden: widths of each transform's conditioner network.
        transforms: number of spline transforms.
        bins: spline bins per transform.

    Examples:
        >>> dec = FlowDecoder(2, 3, hidden=(16,), transforms=2)
        >>> d = dec(torch.randn(5, 2))
        >>> tuple(d.log_prob(d.sample()).shape)
        (5,)
    """

    def __init__(
        self,
        h_dim: int,
        x_dim: int,
        hidden: Sequence[int] = (64, 64),
        transforms: int = 4,
        bins: int = 8,
    ) -> None:
        _check_dims(h_dim=h_dim, x_dim=x_dim)
        hidden = _check_hidden(hidden)
        if not hidden:
            raise ValueError("FlowDecoder needs at least one hidden layer, e.g. hidden=(64,)")
        super().__init__(h_dim, x_dim, hidden=hidden, transforms=transforms, bins=bins)
        self.h_dim, self.x_dim, self.hidden = h_dim, x_dim, hidden
        self.transforms, self.bins = transforms, bins

    def to_config(self) -> dict[str, Any]:
        """The constructor's arguments, for [`from_config`][]."""
        return _config(self, transforms=self.transforms, bins=self.bins)


class GaussianEncoder(_Standardized):
    """A DAE encoder q(h | x̃) with injected Gaussian noise (fig. 14.2): h = f(x̃) + noise·ε,
    ε ~ N(0, I), i.e. ``Independent(Normal(f(x̃), noise), 1)``.

    The noise scale is a fixed hyperparameter, not learned: the denoising criterion
    −log p_dec(x | h) only gets worse with noise in h (it blurs the code the decoder
    reconstructs from), so learning the scale by that criterion drives it to zero and the
    encoder to a deterministic map. For the same reason, keep the code's scale bounded (e.g. a
    bounded or regularized decoder): otherwise f can grow to make a fixed noise negligible.

    ``noise=0`` is a deterministic encoder: a ``pyro.distributions.Delta`` at f(x̃), which
    samples (``rsample`` too) but has no density; [`has_log_prob`][] is then ``False``.

    Args:
        x_dim: dimension of x̃.
        h_dim: dimension of the code h.
        hidden: widths of f's hidden layers; ``()`` is affine, and then
            [`linear_gaussian`][latentae.units.GaussianEncoder.linear_gaussian] gives the
            closed form.
        noise: standard deviation of the injected noise, ``>= 0``.

    Examples:
        >>> enc = GaussianEncoder(3, 2, noise=0.5)
        >>> V, c, Sigma = enc.linear_gaussian()
        >>> Sigma
        tensor([[0.2500, 0.0000],
                [0.0000, 0.2500]])
        >>> tuple(enc(torch.randn(5, 3)).rsample().shape)
        (5, 2)
    """

    # h has no data to standardize against; only x̃ is whitened.
    _standardizes_event = False

    def __init__(
        self, x_dim: int, h_dim: int, hidden: Sequence[int] = (), noise: float = 0.1
    ) -> None:
        _check_dims(x_dim=x_dim, h_dim=h_dim)
        super().__init__(x_dim, h_dim)
        self.x_dim, self.h_dim, self.hidden = x_dim, h_dim, _check_hidden(hidden)
        self.noise = noise
        self.net = MLP(x_dim, h_dim, self.hidden)

    def to_config(self) -> dict[str, Any]:
        """The constructor's arguments, for [`from_config`][]."""
        return _config(self, noise=self._noise)

    @property
    def noise(self) -> float:
        """Standard deviation of the injected noise (validated when set)."""
        return self._noise

    @noise.setter
    def noise(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"noise must be a number >= 0, got {value!r}")
        if not 0 <= value < math.inf:
            raise ValueError(f"noise must be finite and >= 0, got {value!r}")
        self._noise = float(value)

    @property
    def has_log_prob(self) -> bool:  # type: ignore[override]
        """``False`` for ``noise=0``, whose point mass has no density."""
        return self._noise > 0

    def mean_map(self, context: Tensor) -> Tensor:
        """The deterministic part f(x̃), of shape ``(*batch, h_dim)``."""
        return self.net(self._whiten(context))

    def forward(self, context: Tensor) -> Distribution:
        loc = self.mean_map(context)
        if self._noise == 0:
            return Delta(loc, event_dim=1)
        return Independent(Normal(loc, self._noise), 1)

    def linear_gaussian(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(V, c, Sigma)`` with q(h | x̃) = N(V x̃ + c, Sigma), Sigma = noise² I, for an
        affine encoder. With ``noise=0``, Sigma is the zero matrix (a point mass at V x̃ + c).

        Raises:
            ValueError: the encoder has hidden layers, so it is not linear-Gaussian.
        """
        if self.hidden:
            raise ValueError("linear_gaussian() needs an affine encoder (hidden=())")
        (layer,) = self.net
        A, a = layer.weight, layer.bias
        V = A / self.context_scale
        c = a - A @ (self.context_loc / self.context_scale)
        Sigma = self._noise**2 * torch.eye(self.h_dim, dtype=A.dtype, device=A.device)
        return V, c, Sigma


def _config(unit: Any, **options: Any) -> dict[str, Any]:
    """``{"name": <class>, <the leading dims>, "hidden": [...], **options}``, JSON-able."""
    first, second = ("x_dim", "h_dim") if isinstance(unit, GaussianEncoder) else ("h_dim", "x_dim")
    return {
        "name": type(unit).__name__,
        first: getattr(unit, first),
        second: getattr(unit, second),
        "hidden": list(unit.hidden),
        **options,
    }


#: The encoder and decoder classes that [`from_config`][] rebuilds, by name.
UNITS: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        GaussianDecoder,
        BernoulliDecoder,
        CategoricalDecoder,
        MixtureDecoder,
        FlowDecoder,
        GaussianEncoder,
    )
}


def from_config(config: Mapping[str, Any]) -> Any:
    """Build an untrained encoder or decoder from its ``to_config()`` (e.g. as a checkpoint
    records it); load the trained weights with ``load_state_dict``.

    Raises:
        ValueError: the config names no known unit or holds arguments it does not take.

    Examples:
        >>> dec = GaussianDecoder(2, 3, hidden=(8,), cov="full")
        >>> config = dec.to_config()
        >>> config["name"], config["hidden"], config["cov"]
        ('GaussianDecoder', [8], 'full')
        >>> type(from_config(config)).__name__, from_config(config).cov
        ('GaussianDecoder', 'full')
    """
    if not isinstance(config, Mapping) or config.get("name") not in UNITS:
        name = config.get("name") if isinstance(config, Mapping) else config
        raise ValueError(
            f"unknown encoder or decoder {name!r}; a unit config needs a 'name' among "
            f"{sorted(UNITS)}, as written by to_config()"
        )
    options = {k: v for k, v in config.items() if k != "name"}
    if "hidden" in options:
        options["hidden"] = tuple(options["hidden"])
    try:
        return UNITS[config["name"]](**options)
    except TypeError as e:
        raise ValueError(f"bad config for {config['name']}: {e}") from None
