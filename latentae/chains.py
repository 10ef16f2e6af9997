"""Posterior sampling from an encoder, with ArviZ output, and x-chains x -> h -> x."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor

from latentae import arviz as lae_arviz
from latentae._util import Seed, seeded
from latentae.conditionals import Conditional

if TYPE_CHECKING:
    import arviz

    from latentae.joint import JointModel

__all__ = ["GibbsResult", "exact_gibbs", "gibbs_chain", "sample_posterior"]


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


class GibbsResult(NamedTuple):
    """Draws of an x-chain x -> h -> x.

    Attributes:
        x: kept draws of x, shape ``(num_kept, num_chains, *x_shape)``: every ``thin``-th
            state after ``burn_in`` steps, the last state always included.
        h: the last latent draws, shape ``(num_chains, *h_shape)``.
    """

    x: Tensor
    h: Tensor


def gibbs_chain(
    encoder: Conditional,
    decoder: Conditional,
    x0: Tensor,
    num_steps: int,
    *,
    burn_in: int = 0,
    thin: int = 1,
    seed: Seed = None,
) -> GibbsResult:
    """Run independent chains x -> h ~ e(h | x) -> x ~ d(x | h), vectorized over chains.

    With the exact encoder and decoder of a joint model this is Gibbs sampling, whose
    x-marginal is p_model(x); with a DAE pair (encoder ``corrupt(q, C)``) it is the DAE's
    Markov chain, whose stationary law tends to the data law (Bengio et al. 2013). Each step
    calls the encoder and the decoder once on all chains (one model trace each for
    model-derived conditionals), never once per chain.

    Args:
        encoder: e(h | x).
        decoder: d(x | h).
        x0: the chains' starting states, shape ``(num_chains, *x_shape)``.
        num_steps: steps after which the chains stop.
        burn_in: steps before the first kept draw.
        thin: keep every ``thin``-th state after ``burn_in``.
        seed: seed for the chains.

    Example:
        >>> import latentae as lae
        >>> jm = lae.JointModel.from_file("models/ppca.py")
        >>> enc, dec = jm.encoder("laplace"), jm.decoder()
        >>> result = gibbs_chain(enc, dec, torch.zeros(100, 5), 10, seed=0)
        >>> tuple(result.x.shape), tuple(result.h.shape)
        ((10, 100, 5), (100, 2))
    """
    for name, value, least in (
        ("num_steps", num_steps, 1),
        ("thin", thin, 1),
        ("burn_in", burn_in, 0),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if burn_in >= num_steps:
        raise ValueError(f"burn_in ({burn_in}) must be smaller than num_steps ({num_steps})")
    x = torch.as_tensor(x0)
    kept = []
    with seeded(seed), torch.no_grad():
        for step in range(1, num_steps + 1):
            h = encoder(x).sample()
            x = decoder(h).sample()
            if step > burn_in and ((step - burn_in) % thin == 0 or step == num_steps):
                kept.append(x)
    return GibbsResult(torch.stack(kept), h)


def exact_gibbs(joint: JointModel, x0: Tensor, num_steps: int, **options: Any) -> GibbsResult:
    """Gibbs sampling of a joint model with its exact encoder and decoder: the x-marginal of
    the chain is p_model(x). ``options`` go to :func:`gibbs_chain`.

    Raises:
        ValueError: no exact encoder exists for the model (see ``joint.exact_methods()``).

    Example:
        >>> import latentae as lae
        >>> jm = lae.JointModel.from_file("models/mixture.py")
        >>> exact_gibbs(jm, torch.zeros(50, 2), 5, seed=0).x.shape
        torch.Size([5, 50, 2])
    """
    methods = joint.exact_methods()
    if not methods:
        raise ValueError(
            f"{joint._where} has no exact encoder (enumerate needs a finite latent, laplace a "
            "linear-Gaussian model); run gibbs_chain with an approximate encoder instead"
        )
    return gibbs_chain(joint.encoder(methods[0]), joint.decoder(), x0, num_steps, **options)
