"""The DAE's stochastic encoder: q(h | x̃) with injected noise (fig. 14.2 of *Deep Learning*)
composed with the corruption,

    p_enc(h | x) = E_{x̃ ~ C(· | x)} q(h | x̃).

:func:`corrupt` builds that map. Sampling it is exact; its log density is a Monte Carlo
estimate over corruption draws (:class:`CorruptionMarginal`), except for an affine Gaussian
encoder under Gaussian corruption, where it is the exact Gaussian.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, MultivariateNormal

from latentae._util import seeded
from latentae.conditionals import Conditional
from latentae.corruption import Corruption, Gaussian, _check_input, from_config
from latentae.distributions import reshape_batch

__all__ = ["CorruptedEncoder", "CorruptionMarginal", "corrupt"]


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class CorruptionMarginal(Distribution):
    """p_enc(h | x) = E_{x̃ ~ C(· | x)} q(h | x̃), one distribution per row of ``x``.

    Sampling is exact: each draw corrupts x afresh, then draws h ~ q(h | x̃). :meth:`rsample`
    is reparametrized through q (it exists when q's distributions have ``rsample``); the
    corruption noise itself is not differentiated, though x̃ stays differentiable in x.

    :meth:`log_prob` is a **Monte Carlo estimate**, log (1/S) Σ_s q(h | x̃_s) over S =
    ``num_corruptions`` corruption draws: consistent as S grows, and (by Jensen) biased low
    in expectation for finite S. :attr:`mean` is an estimate too, the average of q's means
    over the same draws. The S draws are fixed when the distribution is made (common random
    numbers), so repeated calls give the same smooth function of h and x, differentiable in
    both by autograd.

    Args:
        encoder: q(h | x̃), a :class:`~latentae.conditionals.Conditional` or any callable
            taking contexts of shape ``(N, d)`` and returning a distribution of batch ``(N,)``.
        corruption: C(x̃ | x).
        x: the clean inputs, shape ``(*batch, d)``.
        num_corruptions: S, the corruption draws behind :meth:`log_prob` and :attr:`mean`.

    Example:
        >>> from latentae.conditionals import GaussianConditional
        >>> from latentae.corruption import Masking
        >>> q = GaussianConditional(3, 2, hidden=(8,))
        >>> d = CorruptionMarginal(q, Masking(0.3), torch.randn(5, 3), num_corruptions=16)
        >>> tuple(d.batch_shape), tuple(d.sample((4,)).shape), tuple(d.log_prob(d.sample()).shape)
        ((5,), (4, 5, 2), (5,))
    """

    arg_constraints: dict = {}  # noqa: RUF012  (torch's own annotation)

    def __init__(
        self,
        encoder: Any,
        corruption: Corruption,
        x: Tensor,
        num_corruptions: int = 64,
    ) -> None:
        _check_input(x, "x", "CorruptionMarginal", min_dim=1)
        self.encoder, self.corruption, self.x = encoder, corruption, x
        self.num_corruptions = _check_positive_int("num_corruptions", num_corruptions)
        # One row is enough to learn the event shape, support and rsample of q.
        probe = encoder(x.reshape(-1, x.shape[-1])[:1])
        self._support = probe.support
        self.has_rsample = probe.has_rsample
        # Draw a seed now rather than the corruptions themselves: log_prob re-draws the same
        # x̃_s from it each call, so x̃ is rebuilt from x in a fresh autograd graph every time.
        self._seed = int(torch.randint(0, 2**62, ()))
        super().__init__(x.shape[:-1], probe.event_shape, validate_args=False)

    @property
    def support(self):
        return self._support

    def _encode(self, x_tilde: Tensor, prefix: torch.Size) -> Distribution:
        """q(· | x̃) for x̃ of shape ``(*prefix, *batch, d)``, with batch ``(*prefix, *batch)``."""
        q = self.encoder(x_tilde.reshape(-1, x_tilde.shape[-1]))
        return reshape_batch(q, torch.Size(prefix) + self.batch_shape)

    def corruptions(self) -> Tensor:
        """The S fixed corruption draws x̃_s, shape ``(S, *batch, d)``."""
        with seeded(self._seed):
            return self.corruption.sample(self.x.expand(self.num_corruptions, *self.x.shape))

    def _draw(self, sample_shape: torch.Size, reparametrized: bool) -> Tensor:
        shape = torch.Size(sample_shape)
        x_tilde = self.corruption.sample(self.x.expand(*shape, *self.x.shape))
        q = self._encode(x_tilde, shape)
        return q.rsample() if reparametrized else q.sample()

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        with torch.no_grad():
            return self._draw(sample_shape, reparametrized=False)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        if not self.has_rsample:
            raise NotImplementedError(
                "the encoder's distributions have no rsample, so neither does the corrupted "
                "encoder; use sample()"
            )
        return self._draw(sample_shape, reparametrized=True)

    def log_prob(self, value: Tensor) -> Tensor:
        """Monte Carlo estimate of log p_enc(h | x): logsumexp_s log q(h | x̃_s) − log S."""
        event, batch = self.event_shape, self.batch_shape
        shape = torch.broadcast_shapes(value.shape, batch + event)
        value = value.expand(shape)
        prefix = len(shape) - len(batch) - len(event)
        q = self._encode(self.corruptions(), torch.Size([self.num_corruptions]))
        lp = q.log_prob(value.unsqueeze(prefix))  # (*sample, S, *batch)
        return lp.logsumexp(prefix) - math.log(self.num_corruptions)

    @property
    def mean(self) -> Tensor:
        """An estimate of E[h | x]: the average of q's means over the S corruption draws."""
        return self._encode(self.corruptions(), torch.Size([self.num_corruptions])).mean.mean(0)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(batch_shape={tuple(self.batch_shape)}, "
            f"corruption={self.corruption!r}, num_corruptions={self.num_corruptions})"
        )


class CorruptedEncoder(Conditional):
    """The DAE's stochastic encoder p_enc(h | x) = E_{x̃ ~ C(· | x)} q(h | x̃) (fig. 14.2).

    Called on x of shape ``(n, d)``, it returns a distribution with batch shape ``(n,)``: the
    exact ``MultivariateNormal(x Vᵀ + c, Σ + σ² V Vᵀ)`` when the encoder is affine Gaussian
    (its ``linear_gaussian()`` gives q(h | x̃) = N(V x̃ + c, Σ)) and the corruption is
    ``Gaussian(σ)``; otherwise a :class:`CorruptionMarginal`, whose sampling is exact and whose
    ``log_prob`` is a Monte Carlo estimate. Build it with :func:`corrupt`.

    Args:
        encoder: q(h | x̃), held as a submodule.
        corruption: C(x̃ | x).
        num_corruptions: corruption draws behind the Monte Carlo ``log_prob``.

    Example:
        >>> from latentae.conditionals import GaussianConditional
        >>> enc = CorruptedEncoder(GaussianConditional(3, 2), Gaussian(0.5))
        >>> type(enc(torch.randn(4, 3))).__name__
        'MultivariateNormal'
    """

    def __init__(
        self, encoder: nn.Module, corruption: Corruption, num_corruptions: int = 64
    ) -> None:
        super().__init__()
        if not callable(encoder):
            raise TypeError(
                f"encoder must be a Conditional (called on x̃, returning a distribution), not "
                f"{type(encoder).__name__}"
            )
        if isinstance(corruption, Mapping):
            corruption = from_config(corruption)
        if not isinstance(corruption, Corruption):
            raise TypeError(
                "corruption must be a Corruption such as Gaussian(0.5) or a config dict, not "
                f"{type(corruption).__name__}"
            )
        self.encoder = encoder
        self.corruption = corruption
        self.num_corruptions = _check_positive_int("num_corruptions", num_corruptions)
        self.has_log_prob = getattr(encoder, "has_log_prob", True)

    def linear_gaussian(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(V, c, Σ + σ² V Vᵀ)``: p_enc(h | x) = N(V x + c, Σ + σ² V Vᵀ), exactly.

        Raises:
            ValueError: the encoder is not affine Gaussian or the corruption is not Gaussian.
        """
        if not isinstance(self.corruption, Gaussian):
            raise ValueError(
                f"linear_gaussian() needs Gaussian corruption, not {self.corruption!r}"
            )
        method = getattr(self.encoder, "linear_gaussian", None)
        if method is None:
            raise ValueError(
                "linear_gaussian() needs an affine Gaussian encoder with a linear_gaussian() "
                f"method; {type(self.encoder).__name__} has none"
            )
        v, c, sigma = method()
        return v, c, sigma + self.corruption.sigma**2 * (v @ v.T)

    def forward(self, x: Tensor) -> Distribution:
        _check_input(x, "x", type(self).__name__, min_dim=1)
        try:
            v, c, cov = self.linear_gaussian()
        except ValueError:
            # Not a linear-Gaussian pair (e.g. an encoder with hidden layers): no closed form.
            pass
        else:
            if x.shape[-1] != v.shape[-1]:
                raise ValueError(
                    f"{type(self).__name__} expects inputs with {v.shape[-1]} features in the "
                    f"last dimension, got shape {tuple(x.shape)}"
                )
            return MultivariateNormal(x @ v.T + c, covariance_matrix=cov)
        return CorruptionMarginal(self.encoder, self.corruption, x, self.num_corruptions)

    def extra_repr(self) -> str:
        return f"corruption={self.corruption!r}, num_corruptions={self.num_corruptions}"


def corrupt(
    encoder: nn.Module, corruption: Corruption, num_corruptions: int = 64
) -> CorruptedEncoder:
    """The stochastic encoder of a DAE: ``encoder`` q(h | x̃) composed with ``corruption``.

    Args:
        encoder: q(h | x̃), e.g. a :class:`~latentae.conditionals.GaussianConditional`.
        corruption: C(x̃ | x), or its config dict.
        num_corruptions: corruption draws behind the Monte Carlo ``log_prob``.

    Example:
        >>> from latentae.conditionals import GaussianConditional
        >>> from latentae.corruption import Masking
        >>> enc = corrupt(GaussianConditional(3, 2, hidden=(8,)), Masking(0.2))
        >>> d = enc(torch.randn(5, 3))
        >>> tuple(d.batch_shape), tuple(d.log_prob(d.sample()).shape)
        ((5,), (5,))
    """
    return CorruptedEncoder(encoder, corruption, num_corruptions)
