"""The DAE's stochastic encoder: q(h | x̃) with injected noise (fig. 14.2 of *Deep Learning*)
composed with the corruption,

    p_enc(h | x) = E_{x̃ ~ C(· | x)} q(h | x̃).

[`corrupt`][] builds that map. Sampling it is exact; its log density is a Monte Carlo
estimate over corruption draws ([`CorruptionMarginal`][]), except for an affine Gaussian
encoder under Gaussian corruption, where it is the exact Gaussian.

Two estimators of log p_enc(h | x) are available. ``"prior"`` averages q(h | x̃_s) over draws x̃_s ~
C(· | x): simple, but for a pair (x, h) far apart (as the cross-ratio's crossed pairs are) no draw
lands where q(h | x̃) has its mass, and the estimate is too low by hundreds of nats. ``"laplace"``
(Gaussian corruption and an encoder N(f(x̃), τ²I), such as
[`GaussianEncoder`][latentae.units.GaussianEncoder]) importance-samples x̃ from a Gaussian at the
mode of N(x̃; x, σ²I) q(h | x̃), found by Gauss-Newton, with the Gauss-Newton covariance, mixed with
the corruption itself as a defensive component (Hesterberg 1995), which bounds the weights. For an
affine encoder the target is Gaussian and the estimate exact up to the defensive component's small
weight noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, MultivariateNormal

from latentae._util import check_positive_int, rowwise_jacobian, seeded
from latentae.conditionals import Conditional
from latentae.corruption import Corruption, Gaussian, _check_input, from_config
from latentae.distributions import reshape_batch

__all__ = ["ESTIMATORS", "CorruptedEncoder", "CorruptionMarginal", "corrupt"]

#: Estimators of log p_enc(h | x): "auto" is "laplace" where it applies, else "prior".
ESTIMATORS = ("auto", "prior", "laplace")
# Gauss-Newton iterations for the proposal's mode, each with step halving (1, 1/2, ..., 1/16)
# per row: a smooth MLP's mode is found to ~1e-6 relative in well under 20 iterations.
_GN_ITERATIONS, _GN_HALVINGS = 20, 5
# Share of the defensive component (the corruption C(· | x)) in the proposal, and the
# Gauss-Newton starts (x and corruption draws) whose modes share the rest.
_DEFENSIVE = 0.2
_STARTS = 4


def _split(total: int, defensive: float, parts: int) -> list[int]:
    """Draws per mixture component: about ``defensive * total`` for the corruption (at least
    one when total > parts), the rest shared by the parts as evenly as possible."""
    first = min(max(round(defensive * total), 1 if total > parts else 0), total)
    rest = total - first
    return [first] + [rest // parts + (1 if k < rest % parts else 0) for k in range(parts)]


def _laplace_applies(encoder: Any, corruption: Corruption) -> bool:
    """Whether the "laplace" estimator applies: Gaussian corruption and q(h | x̃) =
    N(f(x̃), τ²I) with f given by ``mean_map`` and τ = ``noise`` > 0."""
    noise = getattr(encoder, "noise", None)
    return (
        isinstance(corruption, Gaussian)
        and corruption.sigma > 0
        and callable(getattr(encoder, "mean_map", None))
        and isinstance(noise, float | int)
        and noise > 0
    )


def _check_estimator(estimator: Any, encoder: Any, corruption: Corruption) -> str:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    applies = _laplace_applies(encoder, corruption)
    if estimator == "laplace" and not applies:
        raise ValueError(
            "the 'laplace' estimator needs Gaussian corruption with sigma > 0 and an encoder "
            "N(f(x~), noise^2 I) with a mean_map() and noise > 0 (a GaussianEncoder); use "
            "estimator='prior'"
        )
    if estimator == "auto":
        return "laplace" if applies else "prior"
    return estimator


def _laplace_proposal(
    f: Any, x: Tensor, h: Tensor, sigma: float, tau: float, start: Tensor
) -> tuple[Tensor, Tensor]:
    """A mode of N(x̃; x, σ²I) N(h; f(x̃), τ²I) over x̃ (rows of x and h paired), reached by
    Gauss-Newton from ``start``, and the Cholesky factor of the Gauss-Newton covariance
    (I/σ² + JᵀJ/τ²)⁻¹ there."""

    def objective(z: Tensor, fz: Tensor) -> Tensor:
        return ((z - x) ** 2).sum(-1) / (2 * sigma**2) + ((h - fz) ** 2).sum(-1) / (2 * tau**2)

    def gauss_newton(jac: Tensor) -> Tensor:
        eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
        return eye / sigma**2 + jac.transpose(1, 2) @ jac / tau**2

    z = start.clone()
    with torch.no_grad():
        fz, jac = rowwise_jacobian(f, z, "encoder mean")
        for _ in range(_GN_ITERATIONS):
            grad = (z - x) / sigma**2 - (jac.transpose(1, 2) @ (h - fz).unsqueeze(-1)).squeeze(
                -1
            ) / tau**2
            step = torch.linalg.solve(gauss_newton(jac), grad.unsqueeze(-1)).squeeze(-1)
            best, best_z = objective(z, fz), z
            for k in range(_GN_HALVINGS):
                cand = z - step / 2**k
                value = objective(cand, f(cand))
                better = value < best
                best = torch.where(better, value, best)
                best_z = torch.where(better.unsqueeze(-1), cand, best_z)
            if torch.equal(best_z, z):
                break
            z = best_z
            fz, jac = rowwise_jacobian(f, z, "encoder mean")  # at the new z, used next
        hess = gauss_newton(jac)
        scale = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hess)))
    return z, scale


class CorruptionMarginal(Distribution):
    """p_enc(h | x) = E_{x̃ ~ C(· | x)} q(h | x̃), one distribution per row of ``x``.

    Sampling is exact: each draw corrupts x afresh, then draws h ~ q(h | x̃). `rsample`
    is reparametrized through q (it exists when q's distributions have ``rsample``); the
    corruption noise itself is not differentiated, though x̃ stays differentiable in x.

    [`log_prob`][] is a **Monte Carlo estimate**, log (1/S) Σ_s q(h | x̃_s) over S =
    ``num_corruptions`` corruption draws: consistent as S grows, and (by Jensen) biased low
    in expectation for finite S. `mean` is an estimate too, the average of q's means
    over the same draws. The S draws are fixed when the distribution is made (common random
    numbers), so repeated calls give the same smooth function of h and x, differentiable in
    both by autograd.

    Args:
        encoder: q(h | x̃), a [`Conditional`][latentae.conditionals.Conditional] or any callable
            taking contexts of shape ``(N, d)`` and returning a distribution of batch ``(N,)``.
        corruption: C(x̃ | x).
        x: the clean inputs, shape ``(*batch, d)``.
        num_corruptions: S, the corruption draws behind [`log_prob`][] and `mean`.
        estimator: ``"prior"``, ``"laplace"`` or ``"auto"`` (see the module docstring).

    Examples:
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
        estimator: str = "auto",
    ) -> None:
        _check_input(x, "x", "CorruptionMarginal", min_dim=1)
        self.encoder, self.corruption, self.x = encoder, corruption, x
        self.num_corruptions = check_positive_int("num_corruptions", num_corruptions)
        self.estimator = _check_estimator(estimator, encoder, corruption)
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
        """Monte Carlo estimate of log p_enc(h | x) over S draws: with the ``"prior"``
        estimator logsumexp_s log q(h | x̃_s) − log S, x̃_s ~ C(· | x); with ``"laplace"`` the
        importance-weighted average over x̃_s from the Gauss-Newton proposal."""
        return self.log_weights(value).logsumexp(0) - math.log(self.num_corruptions)

    def log_weights(self, value: Tensor) -> Tensor:
        """The S log importance weights behind [`log_prob`][], shape ``(S, *shape)`` where
        ``shape`` is that of ``log_prob(value)``: log q(h | x̃_s) for the ``"prior"``
        estimator, log C(x̃_s | x) q(h | x̃_s) / r(x̃_s) for ``"laplace"``. Their spread gives
        the estimate's standard error, sd(w) / (mean(w) √S) by the delta method."""
        event, batch = self.event_shape, self.batch_shape
        shape = torch.broadcast_shapes(value.shape, batch + event)
        value = value.expand(shape)
        prefix = len(shape) - len(batch) - len(event)
        if self.estimator == "laplace":
            return self._laplace_log_weights(value, shape)
        q = self._encode(self.corruptions(), torch.Size([self.num_corruptions]))
        return q.log_prob(value.unsqueeze(prefix)).movedim(prefix, 0)  # (S, *sample, *batch)

    def _laplace_log_weights(self, value: Tensor, shape: torch.Size) -> Tensor:
        d = self.x.shape[-1]
        sigma, tau = float(self.corruption.sigma), float(self.encoder.noise)
        out_shape = shape[:-1]
        x = self.x.expand(*out_shape, d).reshape(-1, d)
        h = value.reshape(-1, value.shape[-1])
        s = self.num_corruptions
        with seeded(self._seed):  # common random numbers: a smooth function of (x, h)
            eps = torch.randn(s, *x.shape, dtype=x.dtype, device=x.device)
            starts = torch.randn(_STARTS - 1, *x.shape, dtype=x.dtype, device=x.device)
        # Gauss-Newton from x and from corruption draws: the target can have several modes
        # (x̃ near x, or near another preimage of h), and each start finds one.
        starts = torch.cat([x.detach()[None], x.detach() + sigma * starts])
        found = [
            _laplace_proposal(self.encoder.mean_map, x.detach(), h.detach(), sigma, tau, z0)
            for z0 in starts
        ]
        modes = torch.stack([m for m, _ in found])  # (K, N, d)
        scales = torch.stack([c for _, c in found])  # (K, N, d, d)
        # A deterministic mixture (Owen & Zhou 2000): exactly s_0 of the S draws come from the
        # corruption and s_k from N(mode_k, L_k L_kᵀ), and every draw is weighted by the
        # mixture density with weights s_k / S: unbiased, without the binomial noise of
        # drawing the components. The corruption as a defensive component (Hesterberg 1995)
        # bounds the weights C q / r by q S / s_0.
        counts = _split(s, _DEFENSIVE, len(starts))
        chunks = eps.split(counts)
        parts = [x.detach() + sigma * chunks[0]] + [
            modes[k] + (scales[k] @ chunks[k + 1].unsqueeze(-1)).squeeze(-1)
            for k in range(len(starts))
        ]
        x_tilde = torch.cat(parts).detach()  # (S, N, d)
        log_r = [torch.distributions.Normal(x.detach(), sigma).log_prob(x_tilde).sum(-1)] + [
            MultivariateNormal(modes[k], scale_tril=scales[k]).log_prob(x_tilde)
            for k in range(len(starts))
        ]
        log_r = torch.stack(
            [lr + math.log(c / s) for lr, c in zip(log_r, counts, strict=True) if c > 0]
        ).logsumexp(0)
        log_c = torch.distributions.Normal(x, sigma).log_prob(x_tilde).sum(-1)
        q = self.encoder(x_tilde.reshape(-1, d))
        log_q = q.log_prob(h.expand(s, *h.shape).reshape(-1, h.shape[-1])).reshape(s, -1)
        return (log_c + log_q - log_r).reshape(s, *out_shape)

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
    ``Gaussian(σ)``; otherwise a [`CorruptionMarginal`][], whose sampling is exact and whose
    ``log_prob`` is a Monte Carlo estimate. Build it with [`corrupt`][].

    Args:
        encoder: q(h | x̃), held as a submodule.
        corruption: C(x̃ | x).
        num_corruptions: corruption draws behind the Monte Carlo ``log_prob``.
        estimator: ``"prior"``, ``"laplace"`` or ``"auto"``, see [`corrupt`][].

    Examples:
        >>> from latentae.conditionals import GaussianConditional
        >>> enc = CorruptedEncoder(GaussianConditional(3, 2), Gaussian(0.5))
        >>> type(enc(torch.randn(4, 3))).__name__
        'MultivariateNormal'
    """

    def __init__(
        self,
        encoder: nn.Module,
        corruption: Corruption,
        num_corruptions: int = 64,
        estimator: str = "auto",
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
        self.num_corruptions = check_positive_int("num_corruptions", num_corruptions)
        self.estimator = estimator
        _check_estimator(estimator, encoder, corruption)
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
        return CorruptionMarginal(
            self.encoder, self.corruption, x, self.num_corruptions, self.estimator
        )

    def extra_repr(self) -> str:
        return (
            f"corruption={self.corruption!r}, num_corruptions={self.num_corruptions}, "
            f"estimator={self.estimator!r}"
        )


def corrupt(
    encoder: nn.Module, corruption: Corruption, num_corruptions: int = 64, estimator: str = "auto"
) -> CorruptedEncoder:
    """The stochastic encoder of a DAE: ``encoder`` q(h | x̃) composed with ``corruption``.

    Args:
        encoder: q(h | x̃), e.g. a
            [`GaussianConditional`][latentae.conditionals.GaussianConditional].
        corruption: C(x̃ | x), or its config dict.
        num_corruptions: corruption draws behind the Monte Carlo ``log_prob``.
        estimator: how ``log_prob`` estimates log p_enc(h | x): ``"prior"`` (corruption
            draws), ``"laplace"`` (importance sampling around the mode, for Gaussian
            corruption and a GaussianEncoder) or ``"auto"`` (``"laplace"`` where it applies).

    Examples:
        >>> from latentae.conditionals import GaussianConditional
        >>> from latentae.corruption import Masking
        >>> enc = corrupt(GaussianConditional(3, 2, hidden=(8,)), Masking(0.2))
        >>> d = enc(torch.randn(5, 3))
        >>> tuple(d.batch_shape), tuple(d.log_prob(d.sample()).shape)
        ((5,), (5,))
    """
    return CorruptedEncoder(encoder, corruption, num_corruptions, estimator)
