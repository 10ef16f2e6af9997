"""Langevin samplers driven by a score ∇log p: plain unadjusted Langevin dynamics and the
annealed Langevin dynamics of Song & Ermon (2019), which runs down a ladder of noise levels.

A denoising autoencoder trained with Gaussian corruption of scale σ estimates the score of the
smoothed density p_σ = p ∗ N(0, σ²I) as (r(x) − x)/σ² (Alain & Bengio 2014), so these
samplers turn a DAE (one per noise level, or one noise-conditional network, see
[`latentae.noise_conditional`][]) into a generative model without its encoder-decoder chain.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from latentae._util import Seed, seeded

__all__ = [
    "AnnealedLangevinResult",
    "LangevinResult",
    "annealed_langevin",
    "geometric_sigmas",
    "langevin",
]

ScoreFn = Callable[[Tensor], Tensor]
NoiseScoreFn = Callable[[Tensor, float], Tensor]


class LangevinResult(NamedTuple):
    """What [`langevin`][] returns.

    Attributes:
        x: the final states, shape ``(num_chains, *x_shape)``.
        draws: the kept states, shape ``(num_kept, num_chains, *x_shape)`` (every ``thin``-th
            state after ``burn_in``, the last one always included), or ``None`` when no
            ``thin`` was given.
    """

    x: Tensor
    draws: Tensor | None


class AnnealedLangevinResult(NamedTuple):
    """What [`annealed_langevin`][] returns.

    Attributes:
        x: the final states, shape ``(num_chains, *x_shape)`` (after the denoising step when
            one was asked for).
        levels: the states at the end of each noise level, shape
            ``(L, num_chains, *x_shape)``: how the samples sharpen as σ decreases.
        step_sizes: the step size α_i = ε σ_i² / σ_L² used at each level, shape ``(L,)``.
    """

    x: Tensor
    levels: Tensor
    step_sizes: Tensor


def _positive_int(name: str, value: Any, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return int(value)


def _positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    return v


def _check_states(x0: Any) -> Tensor:
    if not torch.is_tensor(x0):
        raise TypeError(
            f"x0 must be a torch.Tensor of shape (num_chains, *x_shape), not "
            f"{type(x0).__name__}; convert it with torch.as_tensor(x0)"
        )
    if x0.dim() < 1 or x0.shape[0] < 1:
        raise ValueError(
            f"x0 must have shape (num_chains, *x_shape) with at least one chain, got shape "
            f"{tuple(x0.shape)}"
        )
    if not x0.is_floating_point():
        raise TypeError(
            f"x0 must be a floating-point tensor, got {x0.dtype}; convert it with "
            "x0.to(torch.get_default_dtype())"
        )
    if not bool(torch.isfinite(x0).all()):
        raise ValueError("x0 has non-finite values; start the chains from finite states")
    return x0


def _check_sigmas(sigmas: Any) -> Tensor:
    """The noise ladder as a float64 CPU tensor, after checking it is a non-empty sequence of
    positive finite numbers in strictly decreasing order (σ_1 > ... > σ_L)."""
    try:
        s = torch.as_tensor(sigmas, dtype=torch.float64, device="cpu").reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"sigmas must be a sequence of positive numbers, got {sigmas!r}") from None
    if s.numel() == 0:
        raise ValueError("sigmas must hold at least one noise level")
    if not bool((torch.isfinite(s) & (s > 0)).all()):
        raise ValueError(f"sigmas must be positive and finite, got {s.tolist()}")
    if s.numel() > 1 and not bool((s[1:] < s[:-1]).all()):
        raise ValueError(
            f"sigmas must decrease strictly (largest noise first), got {s.tolist()}; "
            "e.g. geometric_sigmas(20.0, 0.01, 10)"
        )
    return s


def geometric_sigmas(sigma_max: float, sigma_min: float, num_levels: int) -> Tensor:
    """The geometric noise ladder σ_1 = ``sigma_max`` > ... > σ_L = ``sigma_min`` of Song &
    Ermon (2019), as a float64 tensor of shape ``(num_levels,)``.

    Examples:
        >>> geometric_sigmas(10.0, 0.1, 3)
        tensor([10.0000,  1.0000,  0.1000], dtype=torch.float64)
    """
    hi = _positive_float("sigma_max", sigma_max)
    lo = _positive_float("sigma_min", sigma_min)
    n = _positive_int("num_levels", num_levels)
    if n == 1:
        if hi != lo:
            raise ValueError("one noise level needs sigma_max == sigma_min")
        return torch.tensor([hi], dtype=torch.float64)
    if not hi > lo:
        raise ValueError(f"sigma_max ({hi}) must be larger than sigma_min ({lo})")
    return torch.logspace(math.log10(hi), math.log10(lo), n, dtype=torch.float64)


def _score(score_fn: Callable[..., Tensor], x: Tensor, *args: float) -> Tensor:
    s = score_fn(x, *args)
    if not torch.is_tensor(s) or s.shape != x.shape:
        got = tuple(s.shape) if torch.is_tensor(s) else type(s).__name__
        raise ValueError(
            f"score_fn returned {got} for states of shape {tuple(x.shape)}; it must return "
            "one score per state, a tensor of the states' shape"
        )
    return s


def _nonfinite(step: int, step_size: float) -> FloatingPointError:
    return FloatingPointError(
        f"the Langevin chains became non-finite by step {step} (step size {step_size:g}); use "
        "a smaller step size: the unadjusted chain is unstable for steps beyond 4/L when the "
        "score is L-Lipschitz (4 s^2 on N(0, s^2))"
    )


def _run(
    score: Callable[[Tensor], Tensor],
    x: Tensor,
    step_size: float,
    num_steps: int,
    first_step: int,
    keep: Callable[[int], bool] = lambda step: False,
    kept: list[Tensor] | None = None,
) -> Tensor:
    """Steps ``first_step, ..., first_step + num_steps - 1`` of x ← x + (ε/2) score(x) + √ε z,
    appending to ``kept`` the states of the steps that ``keep`` selects."""
    half, root = 0.5 * step_size, math.sqrt(step_size)
    for step in range(first_step, first_step + num_steps):
        x = x + half * score(x) + root * torch.randn_like(x)
        if kept is not None and keep(step):
            kept.append(x)
    if not bool(torch.isfinite(x).all()):
        raise _nonfinite(first_step + num_steps - 1, step_size)
    return x


def langevin(
    score_fn: ScoreFn,
    x0: Tensor,
    step_size: float,
    num_steps: int,
    *,
    burn_in: int = 0,
    thin: int | None = None,
    seed: Seed = None,
) -> LangevinResult:
    """Unadjusted Langevin dynamics x ← x + (ε/2) ∇log p(x) + √ε z, z ~ N(0, I), run on all
    chains at once (one ``score_fn`` call per step).

    Without a Metropolis correction the chain's stationary law is p only as ε → 0: on
    N(0, s²) it is N(0, s²/(1 − ε/(4s²))), and it diverges for ε ≥ 4s².

    The score is evaluated under ``torch.no_grad()`` (a network's forward pass builds no
    graph); a score computed by autograd must switch gradients on itself
    (``torch.enable_grad()``).

    Args:
        score_fn: x ↦ ∇log p(x) for a batch ``(num_chains, *x_shape)``, returning that shape.
        x0: starting states, shape ``(num_chains, *x_shape)``; their dtype and device are kept.
        step_size: ε > 0.
        num_steps: steps to run.
        burn_in: steps before the first kept draw (with ``thin``).
        thin: keep every ``thin``-th state after ``burn_in`` in ``draws``; ``None`` keeps none.
        seed: seed for the noise.

    Returns:
        A [`LangevinResult`][].

    Raises:
        FloatingPointError: the chains became non-finite (the step size is too large).

    Examples:
        >>> result = langevin(lambda x: -x, torch.zeros(1000, 2), 0.1, 200, seed=0)
        >>> tuple(result.x.shape), result.draws is None
        ((1000, 2), True)
    """
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable (x -> score), got {type(score_fn).__name__}")
    x = _check_states(x0)
    eps = _positive_float("step_size", step_size)
    num_steps = _positive_int("num_steps", num_steps)
    burn_in = _positive_int("burn_in", burn_in, least=0)
    if thin is not None:
        thin = _positive_int("thin", thin)
        if burn_in >= num_steps:
            raise ValueError(f"burn_in ({burn_in}) must be smaller than num_steps ({num_steps})")

    def keep(step: int) -> bool:
        return step > burn_in and ((step - burn_in) % thin == 0 or step == num_steps)

    kept: list[Tensor] | None = [] if thin is not None else None
    with seeded(seed), torch.no_grad():
        x = _run(lambda y: _score(score_fn, y), x, eps, num_steps, 1, keep, kept)
    return LangevinResult(x, torch.stack(kept) if kept is not None else None)


def _level_scores(
    score_fn: NoiseScoreFn | Mapping[float, ScoreFn], sigmas: Tensor
) -> list[Callable[[Tensor], Tensor]]:
    """One x ↦ score(x, σ_i) per level, from a noise-conditional score or a mapping σ ↦ score."""
    if isinstance(score_fn, Mapping):
        keys = list(score_fn)
        scores = []
        for sigma in sigmas.tolist():
            match = [k for k in keys if math.isclose(float(k), sigma, rel_tol=1e-9)]
            if not match:
                raise ValueError(
                    f"score_fn has no score for sigma={sigma:g}; it has {sorted(keys)}: give "
                    "one score function per noise level, keyed by the sigmas passed"
                )
            fn = score_fn[match[0]]
            if not callable(fn):
                raise TypeError(
                    f"score_fn[{match[0]!r}] must be callable (x -> score), got {type(fn).__name__}"
                )
            scores.append(lambda x, fn=fn: _score(fn, x))
        return scores
    if not callable(score_fn):
        raise TypeError(
            "score_fn must be callable as score_fn(x, sigma) or a mapping sigma -> score "
            f"function, got {type(score_fn).__name__}"
        )
    return [lambda x, s=s: _score(score_fn, x, s) for s in sigmas.tolist()]


def annealed_langevin(
    score_fn: NoiseScoreFn | Mapping[float, ScoreFn],
    x0: Tensor,
    sigmas: Sequence[float] | Tensor,
    step_size: float,
    steps_per_level: int,
    *,
    denoise: bool = False,
    seed: Seed = None,
) -> AnnealedLangevinResult:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1): for each noise level
    σ_1 > ... > σ_L in turn, T steps of Langevin dynamics on p_σi with step size
    α_i = ε σ_i² / σ_L², each chain starting where the previous level left it.

    Large noise levels smooth the density into one broad bump, so chains started anywhere
    reach every mode in proportion to its mass before the modes separate at small σ; a single
    Langevin chain at small noise would keep the proportions of its starting points instead.
    The rule α_i ∝ σ_i² keeps the ratio of step to local variance, and so the mixing per step,
    the same at every level.

    Args:
        score_fn: the score of p_σ, either a callable ``score_fn(x, sigma)`` (a
            noise-conditional network such as
            [`latentae.noise_conditional.NoiseConditionalDAE.score`][], or a closed form) or
            a mapping ``{sigma: score_fn(x)}`` with one score per level (one DAE trained per
            noise level). ``sigma`` is passed as a Python float.
        x0: starting states, shape ``(num_chains, *x_shape)``; their dtype and device are kept.
        sigmas: the noise ladder, strictly decreasing (e.g. [`geometric_sigmas`][]).
        step_size: ε, the step size at the smallest level σ_L.
        steps_per_level: T.
        denoise: end with one Tweedie step x + σ_L² score(x, σ_L), the posterior mean of the
            clean sample, which removes the last level's noise (Song & Ermon 2020).
        seed: seed for the noise.

    Returns:
        An [`AnnealedLangevinResult`][].

    Raises:
        FloatingPointError: the chains became non-finite (the step size is too large).

    Examples:
        >>> score = lambda x, sigma: -x / (1 + sigma**2)  # N(0, I) smoothed by N(0, sigma^2 I)
        >>> sigmas = geometric_sigmas(10.0, 0.1, 5)
        >>> result = annealed_langevin(score, torch.zeros(500, 2), sigmas, 1e-3, 50, seed=0)
        >>> tuple(result.x.shape), tuple(result.levels.shape), round(float(result.step_sizes[0]))
        ((500, 2), (5, 500, 2), 10)
    """
    x = _check_states(x0)
    ladder = _check_sigmas(sigmas)
    eps = _positive_float("step_size", step_size)
    steps = _positive_int("steps_per_level", steps_per_level)
    if not isinstance(denoise, bool):
        raise TypeError(f"denoise must be True or False, got {denoise!r}")
    scores = _level_scores(score_fn, ladder)
    alphas = eps * (ladder / ladder[-1]) ** 2
    levels = []
    with seeded(seed), torch.no_grad():
        for i, (score, alpha) in enumerate(zip(scores, alphas.tolist(), strict=True)):
            x = _run(score, x, alpha, steps, i * steps + 1)
            levels.append(x)
        if denoise:
            x = x + float(ladder[-1]) ** 2 * scores[-1](x)
    return AnnealedLangevinResult(x, torch.stack(levels), alphas)
