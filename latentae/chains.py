"""Posterior sampling from an encoder, with ArviZ output, and x-chains x -> h -> x: exact
Gibbs sampling of a joint model and the Markov chain of a denoising autoencoder (a GSN)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor

from latentae import arviz as lae_arviz
from latentae._util import Seed, seeded
from latentae.conditionals import Conditional
from latentae.denoising import corrupt

if TYPE_CHECKING:
    from collections.abc import Callable

    import arviz

    from latentae.corruption import Corruption
    from latentae.joint import JointModel

__all__ = ["GibbsResult", "exact_gibbs", "gibbs_chain", "gsn_chain", "sample_posterior"]


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

    Examples:
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

    Examples:
        >>> import latentae as lae
        >>> jm = lae.JointModel.from_file("models/ppca.py")
        >>> enc, dec = jm.encoder("laplace"), jm.decoder()
        >>> result = gibbs_chain(enc, dec, torch.zeros(100, 5), 10, seed=0)
        >>> tuple(result.x.shape), tuple(result.h.shape)
        ((10, 100, 5), (100, 2))
    """
    return _run_chains(lambda x: encoder(x).sample(), decoder, x0, num_steps, burn_in, thin, seed)


def _run_chains(
    encode: Callable[[Tensor], Tensor],
    decoder: Conditional,
    x0: Tensor,
    num_steps: int,
    burn_in: int,
    thin: int,
    seed: Seed,
) -> GibbsResult:
    """The loop behind [`gibbs_chain`][] and [`gsn_chain`][]: ``encode`` draws h given x."""
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
            h = encode(x)
            x = decoder(h).sample()
            if step > burn_in and ((step - burn_in) % thin == 0 or step == num_steps):
                kept.append(x)
    return GibbsResult(torch.stack(kept), h)


def exact_gibbs(joint: JointModel, x0: Tensor, num_steps: int, **options: Any) -> GibbsResult:
    """Gibbs sampling of a joint model with its exact encoder and decoder: the x-marginal of
    the chain is p_model(x). ``options`` go to [`gibbs_chain`][].

    Raises:
        ValueError: no exact encoder exists for the model (see ``joint.exact_methods()``).

    Examples:
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


def _starts(x0: Any, num_chains: int | None) -> Tensor:
    """The chains' starting states, ``(num_chains, *x_shape)``, from ``x0`` of that shape or
    of shape ``(*x_shape,)`` (one state, broadcast to ``num_chains`` chains)."""
    if not torch.is_tensor(x0):
        raise TypeError(
            f"x0 must be a torch.Tensor of starting states, not {type(x0).__name__}; "
            "convert it with torch.as_tensor(x0)"
        )
    if num_chains is not None and (
        not isinstance(num_chains, int) or isinstance(num_chains, bool) or num_chains < 1
    ):
        raise ValueError(f"num_chains must be a positive integer or None, got {num_chains!r}")
    if x0.dim() == 0:
        raise ValueError("x0 must have shape (num_chains, *x_shape) or (*x_shape,), got a scalar")
    if num_chains is None:
        if x0.dim() == 1:
            raise ValueError(
                f"x0 of shape {tuple(x0.shape)} is one state; give num_chains=... to start that "
                "many chains from it, or x0 of shape (num_chains, *x_shape)"
            )
        return x0
    if x0.dim() == 1:
        return x0.expand(num_chains, *x0.shape)
    if x0.shape[0] == num_chains:
        return x0
    if x0.shape[0] == 1:
        return x0.expand(num_chains, *x0.shape[1:])
    raise ValueError(
        f"x0 has {x0.shape[0]} rows but num_chains={num_chains}; give one row per chain, one "
        "state to broadcast, or num_chains=None"
    )


def gsn_chain(
    encoder: Conditional,
    decoder: Conditional,
    corruption: Corruption | dict[str, Any],
    x0: Tensor,
    num_steps: int,
    num_chains: int | None = None,
    *,
    burn_in: int = 0,
    thin: int = 1,
    seed: Seed = None,
    name: str = "x",
) -> arviz.InferenceData:
    """Sample a trained denoising autoencoder through its Markov chain (Bengio et al. 2013,
    generative stochastic networks): x → x̃ ~ C(x̃ | x) → h ~ q(h | x̃) → x ~ p_dec(x | h).

    When the decoder is the exact reverse conditional of the pair's joint (the limit of
    denoising training), the chain's stationary law is the data law. This is
    [`gibbs_chain`][] with the encoder ``corrupt(encoder, corruption)``: one corruption,
    one encoder and one decoder call per step on all chains together, and only the kept
    draws are stored.

    Args:
        encoder: q(h | x̃), the DAE's encoder (without the corruption).
        decoder: p_dec(x | h).
        corruption: C(x̃ | x) the DAE was trained with (or its config dict).
        x0: starting states, shape ``(num_chains, *x_shape)``, or one state of shape
            ``(*x_shape,)`` (or ``(1, *x_shape)``) started in ``num_chains`` chains.
        num_steps: steps after which the chains stop.
        num_chains: number of chains; ``None`` takes it from ``x0``'s leading dimension.
        burn_in: steps before the first kept draw.
        thin: keep every ``thin``-th state after ``burn_in``; the last state is always kept.
        seed: seed for the chains.
        name: the variable's name in the output.

    Returns:
        ``InferenceData`` whose ``posterior`` group holds ``name`` with dims
        ``(chain, draw, <name>_dim...)``; its attributes record the sampler and settings.

    Examples:
        >>> import latentae as lae
        >>> from latentae.corruption import Gaussian
        >>> enc, dec = lae.GaussianEncoder(2, 2, hidden=(8,)), lae.GaussianDecoder(2, 2)
        >>> idata = gsn_chain(enc, dec, Gaussian(0.5), torch.zeros(2), 20, num_chains=3,
        ...                   burn_in=10, thin=5, seed=0)
        >>> dict(idata.posterior.sizes)
        {'chain': 3, 'draw': 2, 'x_dim': 2}
    """
    if not callable(encoder) or not callable(decoder):
        raise TypeError(
            "encoder and decoder must be Conditionals (called on a batch, returning a "
            f"distribution), got {type(encoder).__name__} and {type(decoder).__name__}"
        )
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    x = _starts(x0, num_chains)
    dae_encoder = corrupt(encoder, corruption)  # checks the corruption, reads a config dict
    corruption = dae_encoder.corruption

    # Sampling p_enc(h | x) needs only x~ ~ C(x~ | x), then h ~ q(h | x~): calling the
    # corrupted encoder would also build its log-density machinery, ~25% of a step.
    def encode(x: Tensor) -> Tensor:
        return encoder(corruption.sample(x)).sample()

    result = _run_chains(encode, decoder, x, num_steps, burn_in, thin, seed)
    attrs = {
        "sampler": "gsn",
        "corruption": repr(dae_encoder.corruption),
        "num_steps": num_steps,
        "burn_in": burn_in,
        "thin": thin,
    }
    draws = result.x.movedim(0, 1)  # (draw, chain, ...) -> (chain, draw, ...)
    return lae_arviz.from_draws({name: draws}, row_dim=None, attrs=attrs)
