"""Posterior sampling from an encoder, with ArviZ output."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from latentae import arviz as lae_arviz
from latentae._util import Seed, seeded
from latentae.conditionals import Conditional

if TYPE_CHECKING:
    import arviz

__all__ = ["sample_posterior"]


def sample_posterior(
    encoder: Conditional,
    x_obs: Any,
    num_samples: int = 1000,
    num_chains: int = 4,
    seed: Seed = None,
    *,
    latent: str | None = None,
    observed: str | None = None,
) -> arviz.InferenceData:
    """Draw from p(h | x) for each row of ``x_obs`` and return ArviZ ``InferenceData``.

    An encoder that runs Markov chains (``"nuts"``) runs ``num_chains`` real chains per row,
    with divergences in ``sample_stats``; an encoder that draws independently fills
    ``num_chains x num_samples`` iid draws, so R-hat and ESS then check the sampler itself.
    The ``posterior`` group has dims ``(chain, draw, obs, <latent>_dim)``, the
    ``observed_data`` group holds ``x_obs``.

    Args:
        encoder: a Conditional p(h | x), e.g. ``jm.encoder("laplace")``.
        x_obs: observations, shape ``(rows, *observed_shape)``.
        num_samples: draws per chain.
        num_chains: chains.
        seed: seed for the draws.
        latent: the latent's name in the output; the model's site name when the encoder
            comes from a JointModel, else ``"h"``.
        observed: the observation's name, likewise (``"x"``).

    Example:
        >>> import latentae as lae
        >>> jm = lae.JointModel.from_file("models/ppca.py")
        >>> x = jm.sample(3, seed=0)[1]
        >>> idata = sample_posterior(jm.encoder("laplace"), x, num_samples=100, seed=1)
        >>> dict(idata.posterior.sizes)
        {'chain': 4, 'draw': 100, 'obs': 3, 'h_dim': 2}
    """
    for name, value in (("num_samples", num_samples), ("num_chains", num_chains)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    joint = getattr(encoder, "joint", None)
    latent = latent or (joint.latent if joint is not None else "h")
    observed = observed or (joint.observed if joint is not None else "x")
    x = joint._as_observed(x_obs, "x_obs") if joint is not None else torch.as_tensor(x_obs)
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"x_obs needs at least one row, got shape {tuple(x.shape)}")
    stats: dict[str, Tensor] = {}
    with seeded(seed), torch.no_grad():
        if hasattr(encoder, "sample_chains"):
            rows = [encoder.sample_chains(row, num_samples, num_chains) for row in x]
            draws = torch.stack([r[0] for r in rows], dim=2)  # (chain, draw, rows, ...)
            for key in rows[0][1]:
                # a draw is divergent (etc.) if it is in any row's chain
                stats[key] = torch.stack([r[1][key] for r in rows]).any(0)
        else:
            d = encoder(x)
            draws = d.sample((num_chains, num_samples))
            if hasattr(d, "ess"):
                stats["weights_ess"] = d.ess.expand(num_chains, num_samples, -1)
    attrs = {"encoder": getattr(encoder, "method", type(encoder).__name__)}
    if joint is not None:
        attrs["model"] = joint.name
    return lae_arviz.from_draws(
        {latent: draws}, observed={observed: x}, sample_stats=stats, attrs=attrs
    )
