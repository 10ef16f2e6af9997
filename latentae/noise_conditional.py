"""A noise-conditional denoising autoencoder: one network r(x̃, σ) trained with the denoising
criterion at a whole ladder of Gaussian noise levels (Song & Ermon 2019), so that one model
gives the score of every smoothed density p_σ = p ∗ N(0, σ²I) that annealed Langevin dynamics
([`latentae.langevin.annealed_langevin`][]) walks down.

At each level the squared-error optimum is r*(x̃, σ) = x̃ + σ²∇log p_σ(x̃) (Tweedie; Alain &
Bengio 2014), so the score estimate is (r(x̃, σ) − x̃)/σ². The loss weights level σ by
λ(σ) = σ² in score units (Song & Ermon), which in reconstruction units is
||r(x̃, σ) − x||² / σ²: every level then contributes a loss of the same order.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from latentae._util import check_finite, seeded
from latentae.conditionals import MLP, _spread
from latentae.langevin import _check_sigmas, _positive_float, _positive_int

__all__ = ["NoiseConditionalDAE", "NoiseConditionalFit", "fit_noise_conditional"]


class NoiseConditionalDAE(nn.Module):
    """A reconstruction r(x̃, σ) for x̃ = x + σ ε, for every noise level σ at once.

    The network F sees the input scaled to unit variance, x̃ / √(s² + σ²) (s the data's
    per-coordinate spread), and log σ; the reconstruction is r = x̃ + σ F. Since the optimal
    r − x̃ is of order σ at every level, F stays of order one from σ ≪ s to σ ≫ s, and the
    score (r − x̃)/σ² = F/σ has the 1/σ scaling of Song & Ermon (2020).

    Args:
        x_dim: dimension of x.
        hidden: widths of F's hidden layers.

    Examples:
        >>> model = NoiseConditionalDAE(2, hidden=(16,)).standardize(torch.randn(100, 2))
        >>> x = torch.randn(5, 2)
        >>> tuple(model(x, 0.5).shape), tuple(model.score(x, 0.5).shape)
        ((5, 2), (5, 2))
    """

    def __init__(self, x_dim: int, hidden: Sequence[int] = (128, 128)) -> None:
        super().__init__()
        if not isinstance(x_dim, int) or isinstance(x_dim, bool) or x_dim < 1:
            raise ValueError(f"x_dim must be a positive integer, got {x_dim!r}")
        if isinstance(hidden, int) or not all(
            isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in hidden
        ):
            raise ValueError(
                f"hidden must be a sequence of positive layer widths such as (128, 128), "
                f"got {hidden!r}"
            )
        self.x_dim, self.hidden = x_dim, tuple(hidden)
        self.net = MLP(x_dim + 1, x_dim, self.hidden)
        self.register_buffer("loc", torch.zeros(x_dim))
        self.register_buffer("scale", torch.ones(x_dim))

    @torch.no_grad()
    def standardize(self, data: Tensor) -> NoiseConditionalDAE:
        """Set the data's location and per-coordinate spread from example rows."""
        self._check_x(data, "data")
        self.loc.copy_(data.mean(0))
        self.scale.copy_(_spread(data))
        return self

    def _check_x(self, x: Tensor, what: str) -> None:
        if not torch.is_tensor(x):
            raise TypeError(f"{what} must be a torch.Tensor, not {type(x).__name__}")
        if x.dim() != 2 or x.shape[-1] != self.x_dim:
            raise ValueError(
                f"{what} must have shape (n, {self.x_dim}), got {tuple(x.shape)}; "
                f"this model was built for x_dim={self.x_dim}"
            )

    def _sigma(self, sigma: float | Tensor, x: Tensor) -> Tensor:
        """σ as a column ``(n, 1)`` (one level for all rows, or one per row)."""
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if s.dim() == 0:
            s = s.expand(x.shape[0])
        s = s.reshape(-1, 1)
        if s.shape[0] != x.shape[0]:
            raise ValueError(
                f"sigma must be a number or hold one level per row ({x.shape[0]}), got "
                f"shape {tuple(torch.as_tensor(sigma).shape)}"
            )
        return s

    def forward(self, x_tilde: Tensor, sigma: float | Tensor) -> Tensor:
        """r(x̃, σ), shape ``(n, x_dim)``; ``sigma`` a number or a tensor of shape ``(n,)``."""
        self._check_x(x_tilde, "x_tilde")
        s = self._sigma(sigma, x_tilde)
        c_in = torch.rsqrt(self.scale**2 + s**2)
        noise = torch.log(s / self.scale.mean())
        out = self.net(torch.cat([(x_tilde - self.loc) * c_in, noise], dim=-1))
        return x_tilde + s * out

    def score(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """The score estimate (r(x, σ) − x)/σ² of p_σ at x, shape ``(n, x_dim)``."""
        s = self._sigma(sigma, x)
        return (self(x, sigma) - x) / s**2


class NoiseConditionalFit(NamedTuple):
    """What [`fit_noise_conditional`][] returns.

    Attributes:
        model: the trained model (the module passed in, trained in place).
        loss: the training loss after every step, ``(1/2) E ||r(x̃, σ) − x||² / σ²`` over the
            batch and the sampled levels.
        seconds: wall time of the call.
    """

    model: NoiseConditionalDAE
    loss: list[float]
    seconds: float


def fit_noise_conditional(
    model: NoiseConditionalDAE,
    data: Tensor,
    sigmas: Sequence[float] | Tensor,
    *,
    steps: int = 2000,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
) -> NoiseConditionalFit:
    """Train ``model`` with the denoising criterion at every level of ``sigmas``.

    Each step draws a batch of rows, one level per row uniformly from ``sigmas``, corrupts
    x̃ = x + σ ε and minimizes (1/2) E ||r(x̃, σ) − x||² / σ² with Adam: denoising score
    matching with the weighting λ(σ) = σ² of Song & Ermon (2019).

    Args:
        model: the network to train; call its ``standardize(data)`` first.
        data: training rows, shape ``(n, x_dim)``.
        sigmas: the noise ladder (strictly decreasing, as for annealed Langevin).
        steps: optimizer steps.
        batch_size: rows per step (drawn with replacement).
        lr: Adam's learning rate.
        seed: seed of the batches, levels and noise.

    Returns:
        A [`NoiseConditionalFit`][].

    Raises:
        FloatingPointError: the loss became non-finite.

    Examples:
        >>> data = torch.randn(500, 2)
        >>> model = NoiseConditionalDAE(2, hidden=(16,)).standardize(data)
        >>> fit = fit_noise_conditional(model, data, [1.0, 0.1], steps=20, seed=0)
        >>> len(fit.loss)
        20
    """
    start = time.perf_counter()
    if not isinstance(model, NoiseConditionalDAE):
        raise TypeError(f"model must be a NoiseConditionalDAE, got {type(model).__name__}")
    model._check_x(data, "data")
    if data.shape[0] < 1:
        raise ValueError("data needs at least one row")
    check_finite(data, "data")
    ladder = _check_sigmas(sigmas)
    steps = _positive_int("steps", steps)
    batch_size = _positive_int("batch_size", batch_size)
    lr = _positive_float("lr", lr)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    param = next(model.parameters())
    data = data.to(device=param.device, dtype=param.dtype)
    levels = ladder.to(device=param.device, dtype=param.dtype)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses: list[Tensor] = []
    model.train()
    with seeded(seed):
        for _ in range(steps):
            rows = torch.randint(0, data.shape[0], (batch_size,), device=data.device)
            x = data[rows]
            s = levels[torch.randint(0, len(levels), (batch_size,), device=data.device)]
            x_tilde = x + s[:, None] * torch.randn_like(x)
            loss = 0.5 * (((model(x_tilde, s) - x) / s[:, None]) ** 2).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
    model.eval()
    history = torch.stack(losses).tolist()
    bad = next((i for i, v in enumerate(history) if not math.isfinite(v)), None)
    if bad is not None:
        raise FloatingPointError(
            f"the denoising loss became non-finite ({history[bad]}) at step {bad + 1}; lower "
            "the learning rate or check the data"
        )
    return NoiseConditionalFit(model, history, time.perf_counter() - start)
