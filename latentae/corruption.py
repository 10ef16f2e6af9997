"""Corruption processes C(x̃ | x) of a denoising autoencoder (*Deep Learning* §14.5).

A denoising autoencoder trains on pairs (x, x̃) with x̃ ~ C(x̃ | x); the encoder composed with
the corruption is in [`latentae.denoising`][].

Rows are examples: ``x`` has shape ``(..., d)`` and log probabilities are of whole rows.
Corruptions draw from torch's global RNG; seed it with ``torch.manual_seed``.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

__all__ = ["BitFlip", "Corruption", "Gaussian", "Masking", "SaltAndPepper", "from_config"]

_REGISTRY: dict[str, type[Corruption]] = {}


def _number(
    name: str,
    value: Any,
    allowed: str,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a float after checking it is a real number in the stated range."""
    # bool is an int subclass, and True would silently mean 1.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"{name} must be a real number {allowed}, got {value!r} of type {type(value).__name__}"
        )
    v = float(value)
    too_low = v <= low if low_open else v < low
    too_high = v >= high if high_open else v > high
    if math.isnan(v) or math.isinf(v) or too_low or too_high:
        raise ValueError(f"{name} must be a real number {allowed}, got {v!r}")
    return v


def _probability(p: Any) -> float:
    return _number("p", p, "in [0, 1)", 0.0, 1.0, high_open=True)


def _check_input(x: Any, what: str, cls: str, min_dim: int = 0) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{cls}: {what} must be a torch.Tensor, not {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{cls}: {what} must be a floating-point tensor, got {x.dtype}; convert it with "
            f"{what}.to(torch.get_default_dtype())"
        )
    if x.dim() < min_dim:
        raise ValueError(
            f"{cls}: {what} must have rows as examples, shape (..., d), got a 0-dim tensor"
        )


def _where(index: tuple[int, ...]) -> str:
    if len(index) == 1:
        return f"entry {index[0]}"
    if len(index) == 2:
        return f"row {index[0]}, column {index[1]}"
    return f"row {index[0]}, column {index[-1]} (index {index})"


class Corruption:
    """A corruption process C(x̃ | x), applied independently to every row of ``x``.

    Subclasses set `name` (their key in [`from_config`][]), store each constructor
    parameter as an attribute of the same name (the default [`to_config`][] reads them
    back) and implement [`sample`][] and [`log_prob`][]. Two corruptions are equal when
    their configurations are.

    Examples:
        >>> c = from_config({"name": "masking", "p": 0.25})
        >>> c, c == Masking(0.25)
        (Masking(p=0.25), True)
    """

    #: The key of this process in configurations.
    name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            _REGISTRY[cls.name] = cls

    def sample(self, x: Tensor) -> Tensor:
        """Draw x̃ ~ C(· | x) from torch's global RNG: same shape, dtype and device as ``x``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement sample()")

    def log_prob(self, x_tilde: Tensor, x: Tensor) -> Tensor:
        """log C(x̃ | x) of whole rows, summed over the last dimension.

        ``x_tilde`` and ``x`` broadcast; the result has their broadcast shape less the last
        dimension.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement log_prob()")

    @classmethod
    def _signature(cls) -> list[tuple[str, bool]]:
        """(name, required) for each constructor parameter, in order."""
        params = inspect.signature(cls).parameters.values()
        return [(p.name, p.default is inspect.Parameter.empty) for p in params]

    def to_config(self) -> dict[str, Any]:
        """A plain, JSON-serializable description, inverted by [`from_config`][]."""
        return {"name": self.name, **{k: getattr(self, k) for k, _ in self._signature()}}

    def _params(self) -> dict[str, Any]:
        config = self.to_config()
        config.pop("name", None)
        return config

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Corruption):
            return NotImplemented
        return self.to_config() == other.to_config()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.to_config().items())))

    def _broadcast(self, x_tilde: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        cls = type(self).__name__
        _check_input(x_tilde, "x_tilde", cls, min_dim=1)
        _check_input(x, "x", cls, min_dim=1)
        try:
            return torch.broadcast_tensors(x_tilde, x)
        except RuntimeError:
            raise ValueError(
                f"{cls}.log_prob: x_tilde of shape {tuple(x_tilde.shape)} does not broadcast "
                f"with x of shape {tuple(x.shape)}"
            ) from None


def from_config(config: Mapping[str, Any]) -> Corruption:
    """The corruption that a configuration from [`Corruption.to_config`][] describes.

    Raises:
        ValueError: the name is unknown, a parameter is missing or unexpected, or a value is
            out of range.

    Examples:
        >>> from_config({"name": "salt_and_pepper", "p": 0.1})
        SaltAndPepper(p=0.1, low=0.0, high=1.0)
    """
    if not isinstance(config, Mapping):
        raise ValueError(
            f"a corruption config must be a mapping such as {{'name': 'gaussian', "
            f"'sigma': 0.5}}, got {type(config).__name__}"
        )
    params = dict(config)
    known = ", ".join(repr(k) for k in sorted(_REGISTRY))
    if "name" not in params:
        raise ValueError(f"a corruption config needs a 'name' key, one of {known}")
    name = params.pop("name")
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown corruption {name!r}; known corruptions: {known}")
    cls = _REGISTRY[name]
    signature = cls._signature()
    expected = [k for k, _ in signature]
    required = [k for k, needed in signature if needed]
    unexpected = sorted(set(params) - set(expected), key=str)
    missing = [k for k in required if k not in params]
    if unexpected or missing:
        problems = []
        if unexpected:
            problems.append("unexpected " + ", ".join(repr(k) for k in unexpected))
        if missing:
            problems.append("missing " + ", ".join(repr(k) for k in missing))
        raise ValueError(
            f"bad parameters for corruption {name!r} ({'; '.join(problems)}); it takes "
            + ", ".join(expected)
        )
    return cls(**params)


class Gaussian(Corruption):
    """Additive isotropic Gaussian noise: x̃ = x + sigma·ε, ε ~ N(0, I).

    ``sigma = 0`` is the identity, which switches the noise off; it is a point mass, so
    `log_prob` then raises ``NotImplementedError``.

    Args:
        sigma: the noise standard deviation, finite and >= 0.

    Examples:
        >>> from latentae._util import seeded
        >>> with seeded(0):
        ...     x_tilde = Gaussian(0.5).sample(torch.zeros(4, 3))
        >>> x_tilde.shape, Gaussian(0.5).log_prob(x_tilde, torch.zeros(4, 3)).shape
        (torch.Size([4, 3]), torch.Size([4]))
    """

    name = "gaussian"

    def __init__(self, sigma: float) -> None:
        self.sigma = _number("sigma", sigma, "that is finite and >= 0", 0.0)

    def _check_representable(self, x: Tensor) -> None:
        # Below the smallest normal number the noise underflows and the corruption would
        # silently become the identity (and its density NaN).
        if 0 < self.sigma < torch.finfo(x.dtype).tiny:
            raise ValueError(
                f"Gaussian(sigma={self.sigma}) underflows in {x.dtype}; use sigma=0 for the "
                "identity, a larger sigma, or data in a wider dtype"
            )

    def sample(self, x: Tensor) -> Tensor:
        _check_input(x, "x", "Gaussian")
        if self.sigma == 0:
            return x.clone()
        self._check_representable(x)
        return x + self.sigma * torch.randn(x.shape, dtype=x.dtype, device=x.device)

    def log_prob(self, x_tilde: Tensor, x: Tensor) -> Tensor:
        if self.sigma == 0:
            raise NotImplementedError(
                "Gaussian(sigma=0) is the identity, a point mass with no density; use "
                "sigma > 0 where a log density is needed"
            )
        x_tilde, x = self._broadcast(x_tilde, x)
        self._check_representable(x)
        # Standardize before squaring and take log(sigma) in Python, so that a sigma whose
        # square underflows in x's dtype still gives a finite density.
        z = (x_tilde - x) / self.sigma
        d = x.shape[-1]
        return -0.5 * (z * z).sum(-1) - d * (math.log(self.sigma) + 0.5 * math.log(2 * math.pi))


class Masking(Corruption):
    """Masking noise (Vincent et al. 2010): each entry is set to 0 with probability ``p``.

    `log_prob` is a probability mass, relative to counting measure on each entry's
    two-point set {x_j, 0}: an entry with x_j != 0 is 0 with probability p and x_j with
    probability 1 - p; an entry with x_j = 0 stays 0. Anything else has log mass -inf.

    Args:
        p: the masking probability, in [0, 1).

    Examples:
        >>> x = torch.tensor([[1.0, 2.0]])
        >>> Masking(0.25).log_prob(torch.tensor([[0.0, 2.0]]), x).exp()
        tensor([0.1875])
    """

    name = "masking"

    def __init__(self, p: float) -> None:
        self.p = _probability(p)

    def sample(self, x: Tensor) -> Tensor:
        _check_input(x, "x", "Masking")
        drop = torch.rand(x.shape, dtype=x.dtype, device=x.device) < self.p
        # where, not multiplication: 0 * inf would be NaN.
        return torch.where(drop, torch.zeros((), dtype=x.dtype, device=x.device), x)

    def log_prob(self, x_tilde: Tensor, x: Tensor) -> Tensor:
        x_tilde, x = self._broadcast(x_tilde, x)
        zero = x_tilde == 0
        kept = x_tilde == x
        nonzero = x != 0
        mass = torch.where(
            nonzero,
            zero.to(x.dtype) * self.p + kept.to(x.dtype) * (1 - self.p),
            zero.to(x.dtype),
        )
        return mass.log().sum(-1)


class SaltAndPepper(Corruption):
    """Salt-and-pepper noise: with probability ``p`` an entry is replaced by ``low`` or
    ``high``, each with probability 1/2.

    `log_prob` is a probability mass per entry: x̃_j = x_j has mass 1 - p (plus p/2 when
    x_j is ``low`` or ``high``), x̃_j = ``low`` or ``high`` otherwise p/2, anything else 0.

    Args:
        p: the replacement probability, in [0, 1).
        low: the "pepper" value.
        high: the "salt" value, greater than ``low``.

    Examples:
        >>> x = torch.tensor([[0.5, 1.0]])
        >>> SaltAndPepper(0.2).log_prob(torch.tensor([[0.0, 1.0]]), x).exp()
        tensor([0.0900])
    """

    name = "salt_and_pepper"

    def __init__(self, p: float, low: float = 0.0, high: float = 1.0) -> None:
        self.p = _probability(p)
        self.low = _number("low", low, "that is finite")
        self.high = _number("high", high, "that is finite")
        if not self.low < self.high:
            raise ValueError(f"low must be less than high, got low={self.low}, high={self.high}")

    def sample(self, x: Tensor) -> Tensor:
        _check_input(x, "x", "SaltAndPepper")
        u = torch.rand(x.shape, dtype=x.dtype, device=x.device)
        # One uniform per entry decides both whether and what: [0, p/2) low, [p/2, p) high.
        noise = torch.full(x.shape, self.high, dtype=x.dtype, device=x.device)
        noise = noise.masked_fill(u < self.p / 2, self.low)
        return torch.where(u < self.p, noise, x)

    def log_prob(self, x_tilde: Tensor, x: Tensor) -> Tensor:
        x_tilde, x = self._broadcast(x_tilde, x)
        dtype = x.dtype
        mass = (
            (x_tilde == x).to(dtype) * (1 - self.p)
            + (x_tilde == self.low).to(dtype) * (self.p / 2)
            + (x_tilde == self.high).to(dtype) * (self.p / 2)
        )
        return mass.log().sum(-1)


class BitFlip(Corruption):
    """Bit-flip noise for binary data: each entry of x ∈ {0, 1}^d flips with probability ``p``.

    Flipping with p >= 1/2 destroys more information than it keeps, but is allowed.

    Args:
        p: the flip probability, in [0, 1).

    Examples:
        >>> x = torch.tensor([[0.0, 1.0, 1.0]])
        >>> BitFlip(0.1).log_prob(torch.tensor([[1.0, 1.0, 1.0]]), x).exp()
        tensor([0.0810])
    """

    name = "bit_flip"

    def __init__(self, p: float) -> None:
        self.p = _probability(p)

    @staticmethod
    def _check_binary(x: Tensor, what: str) -> None:
        bad = (x != 0) & (x != 1)
        if not bool(bad.any()):
            return
        index = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"BitFlip needs binary {what} with entries 0 or 1, but {_where(index)} is "
            f"{x[index].item()!r}; binarize the data first (e.g. (x > 0.5).to(x.dtype))"
        )

    def sample(self, x: Tensor) -> Tensor:
        _check_input(x, "x", "BitFlip")
        self._check_binary(x, "x")
        flip = torch.rand(x.shape, dtype=x.dtype, device=x.device) < self.p
        return torch.where(flip, 1 - x, x)

    def log_prob(self, x_tilde: Tensor, x: Tensor) -> Tensor:
        x_tilde, x = self._broadcast(x_tilde, x)
        self._check_binary(x, "x")
        dtype = x.dtype
        mass = (x_tilde == x).to(dtype) * (1 - self.p) + (x_tilde == 1 - x).to(dtype) * self.p
        return mass.log().sum(-1)
