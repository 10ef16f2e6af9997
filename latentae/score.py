"""Score estimates and exact reference scores (*Deep Learning* §14.5, eq. 14.15–14.17).

A denoising autoencoder trained with Gaussian corruption of variance σ² and squared error
learns r*(x̃) = E[x | x̃] = x̃ + σ²∇log p_σ(x̃), where p_σ = p ∗ N(0, σ²I) (Tweedie's formula;
Alain & Bengio 2014), so (r(x) − x)/σ² estimates the score of the smoothed data law
([`dae_score`][]). For a model with an exact encoder the score of its own smoothed
marginal follows from Fisher's identity, ∇ₓlog p(x) = E_{p(h|x)}[∇ₓlog p(x|h)]
([`model_score`][]); smoothing a model with Gaussian observations is widening their
covariance by σ²I ([`widen`][]). [`score_error`][] compares the two.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import pyro.distributions as pdist
import torch
from pyro.distributions import Delta
from pyro.distributions.torch_distribution import ExpandedDistribution
from pyro.poutine.messenger import Messenger
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

from latentae._util import Seed, check_finite, check_points, check_positive_int, seeded
from latentae.conditionals import GaussianConditional
from latentae.corruption import Corruption, Gaussian
from latentae.denoising import CorruptedEncoder
from latentae.joint import JointModel, ModelError

__all__ = [
    "ScoreError",
    "dae_score",
    "model_score",
    "reconstruction",
    "score_error",
    "widen",
    "widened",
]

# Rows per enumerated evaluation of log p(x | h_k): K support values times this many rows
# of x are traced at once, which bounds memory for large supports.
_ENUMERATE_CELLS = 2**20


# ---------------------------------------------------------------------------- DAE estimate


def _noise_sd(sigma: Any) -> float:
    """The corruption's standard deviation from a number or a Gaussian corruption."""
    if isinstance(sigma, Corruption) and not isinstance(sigma, Gaussian):
        raise ValueError(
            f"the score estimate (r(x) - x)/sigma² holds for Gaussian corruption only, not "
            f"{sigma!r}; train the DAE with latentae.corruption.Gaussian(sigma)"
        )
    if isinstance(sigma, Gaussian):
        sigma = sigma.sigma
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise TypeError(
            f"sigma must be a positive number (the Gaussian corruption's standard deviation) "
            f"or a Gaussian corruption, not {type(sigma).__name__}"
        )
    if not 0 < float(sigma) < math.inf:
        raise ValueError(
            f"sigma must be the Gaussian corruption's standard deviation, finite and > 0, got "
            f"{sigma!r}: without corruption (r(x) - x)/sigma² estimates nothing"
        )
    return float(sigma)


def _is_point_mass(q: Distribution) -> bool:
    if isinstance(q, Delta):
        return True
    try:
        variance = q.variance
    except (NotImplementedError, AttributeError):
        return False
    return bool((variance == 0).all())


def _affine_mean(decoder: nn.Module) -> bool:
    """Whether the decoder's mean is affine in h, so that E_h[mean(h)] = mean(E[h])."""
    return isinstance(decoder, GaussianConditional) and not decoder.hidden


def _decoder_mean(d: Distribution) -> Tensor:
    try:
        return d.mean
    except NotImplementedError:
        raise ValueError(
            f"the decoder's {type(d).__name__} has no closed-form mean, which the "
            f"reconstruction r(x) = E[x | h] needs; use a decoder with a mean such as "
            "GaussianDecoder or MixtureDecoder"
        ) from None


def reconstruction(
    encoder: nn.Module,
    decoder: nn.Module,
    x: Tensor,
    *,
    num_samples: int = 64,
    seed: Seed = 0,
) -> Tensor:
    """The DAE's reconstruction function r(x) = E_{h ~ q(h|x)}[E_dec[x | h]], shape ``(n, d)``.

    ``x`` is fed to the encoder as the corrupted input x̃, as in eq. 14.15: r is the
    denoising map. A deterministic encoder (a point mass, e.g. ``GaussianEncoder(noise=0)``)
    gives r(x) = mean of p_dec(x | f(x)) exactly; so does a stochastic one when the decoder's
    mean is affine in h (``hidden=()``). Otherwise r(x) is the Monte Carlo average over
    ``num_samples`` draws h ~ q(h | x), with standard error std/√num_samples per coordinate.

    Gradients flow to ``x`` and the parameters as the caller's grad mode allows.

    Args:
        encoder: q(h | x̃), a [`Conditional`][latentae.conditionals.Conditional] (not the corrupted
            encoder: r takes x as the corrupted input itself).
        decoder: p_dec(x | h), whose distributions have a ``mean``.
        x: inputs, shape ``(n, d)``.
        num_samples: draws of h per row for a stochastic encoder.
        seed: seed of those draws; ``None`` uses torch's global RNG.

    Raises:
        TypeError: ``encoder`` is a
            [`CorruptedEncoder`][latentae.denoising.CorruptedEncoder], or ``x`` is not a
            floating-point tensor.
        ValueError: ``x`` is not ``(n, d)`` or not finite, the decoder has no mean, or its
            reconstructions do not have the shape of ``x``.

    Examples:
        >>> from latentae.units import GaussianDecoder, GaussianEncoder
        >>> enc, dec = GaussianEncoder(3, 4, noise=0.0), GaussianDecoder(4, 3)
        >>> tuple(reconstruction(enc, dec, torch.randn(5, 3)).shape)
        (5, 3)
    """
    if isinstance(encoder, CorruptedEncoder):
        raise TypeError(
            "encoder is a CorruptedEncoder, which corrupts x again; pass the encoder q(h|x̃) "
            "itself (corrupted.encoder): r(x) feeds x to it as the corrupted input"
        )
    x = check_points(x)
    num_samples = check_positive_int("num_samples", num_samples)
    q = encoder(x)
    r = None
    if _is_point_mass(q) or _affine_mean(decoder):
        try:
            code = q.mean
        except NotImplementedError:  # no closed-form mean of h: average draws instead
            code = None
        if code is not None:
            r = _decoder_mean(decoder(code))
    if r is None:
        with seeded(seed):
            h = q.rsample((num_samples,)) if q.has_rsample else q.sample((num_samples,))
        flat = h.reshape(num_samples * x.shape[0], *h.shape[2:])
        r = _decoder_mean(decoder(flat))
        r = r.reshape(num_samples, x.shape[0], *r.shape[1:]).mean(0)
    if r.shape != x.shape:
        raise ValueError(
            f"the decoder reconstructs rows of shape {tuple(r.shape[1:])} but x has rows of "
            f"shape {tuple(x.shape[1:])}; pair the encoder with a decoder of the same x_dim"
        )
    return r


def dae_score(
    encoder: nn.Module,
    decoder: nn.Module,
    x: Tensor,
    sigma: float | Gaussian,
    *,
    num_samples: int = 64,
    seed: Seed = 0,
) -> Tensor:
    """The DAE's score estimate (r(x) − x)/σ² of ∇ₓlog p_σ(x), shape ``(n, d)`` (eq. 14.16).

    Exact for the optimal DAE trained with Gaussian corruption of standard deviation σ:
    r*(x) = x + σ²∇log p_σ(x) with p_σ = p_data ∗ N(0, σ²I). See [`reconstruction`][] for
    how r(x) is computed.

    Args:
        encoder: q(h | x̃) of the trained DAE.
        decoder: p_dec(x | h) of the trained DAE.
        x: where to estimate the score, shape ``(n, d)``.
        sigma: the training corruption's standard deviation, or the ``Gaussian`` corruption.
        num_samples: draws of h per row for a stochastic encoder.
        seed: seed of those draws.

    Raises:
        ValueError: ``sigma`` is not a positive finite number or the corruption is not
            Gaussian, or [`reconstruction`][] refuses the inputs.

    Examples:
        >>> from latentae.units import GaussianDecoder, GaussianEncoder
        >>> enc, dec = GaussianEncoder(2, 2, noise=0.0), GaussianDecoder(2, 2)
        >>> tuple(dae_score(enc, dec, torch.randn(4, 2), sigma=0.5).shape)
        (4, 2)
    """
    s = _noise_sd(sigma)
    r = reconstruction(encoder, decoder, x, num_samples=num_samples, seed=seed)
    return (r - x) / s**2


# ---------------------------------------------------------------------------- exact score


def _widen_distribution(d: Distribution, variance: float, site: str) -> Distribution:
    """``d`` with σ² added to its covariance, through ``Independent`` and expansion."""
    if isinstance(d, torch.distributions.Independent):
        base = _widen_distribution(d.base_dist, variance, site)
        return pdist.Independent(base, d.reinterpreted_batch_ndims)
    if isinstance(d, ExpandedDistribution):
        return _widen_distribution(d.base_dist, variance, site).expand(d.batch_shape)
    if isinstance(d, torch.distributions.Normal):
        return pdist.Normal(d.loc, (d.scale**2 + variance).sqrt())
    if isinstance(d, torch.distributions.LowRankMultivariateNormal):
        return pdist.LowRankMultivariateNormal(d.loc, d.cov_factor, d.cov_diag + variance)
    if isinstance(d, torch.distributions.MultivariateNormal):
        eye = torch.eye(d.event_shape[-1], dtype=d.loc.dtype, device=d.loc.device)
        return pdist.MultivariateNormal(
            d.loc, covariance_matrix=d.covariance_matrix + variance * eye
        )
    raise ValueError(
        f"cannot widen site {site!r}: its distribution is {type(d).__name__}, and only "
        "Gaussian observations (Normal, MultivariateNormal, LowRankMultivariateNormal, "
        "optionally wrapped in .to_event(...)) can be widened by sigma²; the smoothed "
        "marginal p ∗ N(0, sigma² I) of other observation models has no such closed form"
    )


# Lower case, like the poutine handlers it is used beside (condition, trace, block).
class widen(Messenger):
    """Effect handler: widen a Gaussian observation site's covariance by σ²I.

    Under it the site ``site`` draws from Normal(loc, √(scale² + σ²)) instead of
    Normal(loc, scale), and from MultivariateNormal(loc, Σ + σ²I) instead of
    MultivariateNormal(loc, Σ), also inside ``.to_event(...)``. The model's marginal of x
    becomes p_σ = p ∗ N(0, σ²I), the law of x + σε: the smoothed law that a DAE with
    Gaussian corruption σ learns the score of. Use it as a context manager or decorator.

    Args:
        sigma: the standard deviation of the added noise, finite and ``>= 0``.
        site: the observed site's name.

    Raises:
        ValueError: (when the site runs) its distribution is not Gaussian.

    Examples:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     return pyro.sample("x", dist.Normal(torch.zeros(2), 0.3).to_event(1))
        >>> tr = pyro.poutine.trace(widen(0.4)(model)).get_trace()
        >>> tr.nodes["x"]["fn"].base_dist.scale
        tensor([0.5000, 0.5000])
    """

    def __init__(self, sigma: float, site: str = "x") -> None:
        super().__init__()
        if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
            raise TypeError(f"sigma must be a number >= 0, not {type(sigma).__name__}")
        if not 0 <= float(sigma) < math.inf:
            raise ValueError(f"sigma must be finite and >= 0, got {sigma!r}")
        if not isinstance(site, str):
            raise TypeError(f"site must be a site name (a string), not {type(site).__name__}")
        self.sigma, self.site = float(sigma), site

    def _process_message(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "sample" and msg["name"] == self.site:
            msg["fn"] = _widen_distribution(msg["fn"], self.sigma**2, self.site)


def widened(joint: JointModel, sigma: float) -> JointModel:
    """The model with its Gaussian observation noise widened by σ²: x ~ p_σ = p ∗ N(0, σ²I).

    Raises:
        ValueError: the observation distribution is not Gaussian, or ``sigma < 0``.
        TypeError: ``joint`` is not a JointModel.

    Examples:
        >>> jm = JointModel.from_file("models/ppca.py")
        >>> float(widened(jm, 0.3).decoder()(torch.zeros(1, 2)).variance[0, 0])  # 0.5² + 0.3²
        0.34
    """
    if not isinstance(joint, JointModel):
        raise TypeError(f"joint must be a JointModel, not {type(joint).__name__}")
    handler = widen(sigma, joint.observed)
    # The observation's distribution is checked here, so a non-Gaussian one fails with the
    # handler's own message rather than inside the JointModel's contract check.
    with torch.no_grad(), seeded(0):
        h = joint.sample(1)[0]
        _widen_distribution(joint.decoder()(h), handler.sigma**2, joint.observed)
    name = f"{joint.name} widened by sigma={handler.sigma:g}"
    return JointModel(handler(joint.model), joint.latent, joint.observed, name=name)


def _real_observations(joint: JointModel) -> None:
    support = joint.observed_support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    if support is not constraints.real:
        raise ValueError(
            f"{joint._where}: observed site {joint.observed!r} has support "
            f"{joint.observed_support}, not all of R^d, so log p(x) has no gradient in x; "
            "the score is defined for real-valued observations only"
        )


def model_score(joint: JointModel, x: Tensor, sigma: float | Gaussian = 0.0) -> Tensor:
    """The exact score ∇ₓlog p_σ(x) of a model with an exact encoder, by Fisher's identity.

    ∇ₓlog p_σ(x) = E_{p_σ(h|x)}[∇ₓlog p_σ(x | h)], where p_σ is the model with its Gaussian
    observation noise widened by σ² ([`widened`][]), i.e. the law of x + σε. The expectation
    is exact: for a finite latent (``"enumerate"``) it is the posterior-weighted sum over the
    support; for a linear-Gaussian model (``"laplace"``) ∇ₓlog p_σ(x | h) is affine in h, so
    its expectation is its value at the posterior mean of the widened model. This is the
    reference that [`dae_score`][] estimates for data drawn from the model.

    Args:
        joint: a model whose
            [`exact_methods`][latentae.joint.JointModel.exact_methods] is not empty.
        x: points, shape ``(n, *observed_shape)``.
        sigma: the smoothing standard deviation, ``>= 0`` (0: the model's own score), or
            the DAE's ``Gaussian`` corruption.

    Returns:
        The score, the shape of ``x``, detached.

    Raises:
        ValueError: the model has no exact encoder, its observations are not real-valued or
            (for ``sigma > 0``) not Gaussian, ``sigma < 0``, or ``x`` has the wrong shape.

    Examples:
        >>> jm = JointModel.from_file("models/ppca.py")
        >>> C = jm.module.W @ jm.module.W.T + jm.module.NOISE**2 * torch.eye(5)
        >>> x = jm.sample(3, seed=0)[1]
        >>> exact = -(x - jm.module.MU) @ torch.linalg.inv(C + 0.09 * torch.eye(5))
        >>> torch.allclose(model_score(jm, x, sigma=0.3), exact, atol=1e-5)
        True
    """
    if not isinstance(joint, JointModel):
        raise TypeError(f"joint must be a JointModel, not {type(joint).__name__}")
    if isinstance(sigma, Gaussian):
        sigma = sigma.sigma
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise TypeError(
            f"sigma must be a number >= 0 or a Gaussian corruption, not {type(sigma).__name__}"
        )
    if not 0 <= float(sigma) < math.inf:
        raise ValueError(f"sigma must be finite and >= 0, got {sigma!r}")
    methods = joint.exact_methods()
    if not methods:
        raise ValueError(
            f"{joint._where} has no exact encoder (exact_methods() is empty: its latent is "
            "continuous and the model is not linear-Gaussian), so its exact score is not "
            "available; estimate the score with dae_score from a DAE trained on its data"
        )
    _real_observations(joint)
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, not {type(x).__name__}")
    x = joint._as_observed(x)
    event = len(joint.observed_shape)
    if x.dim() != event + 1 or x.shape[0] == 0:
        raise ValueError(
            f"x must have shape (n, {', '.join(map(str, joint.observed_shape))}) with one "
            f"row per point, got {tuple(x.shape)}".replace(", )", ")")
        )
    check_finite(x, "x")
    model = widened(joint, sigma) if sigma > 0 else joint
    x = x.detach()
    if methods[0] == "enumerate":
        return _enumerated_score(model, x)
    return _linear_gaussian_score(model, x)


def _grad_log_likelihood(joint: JointModel, h: Tensor, x: Tensor, weights: Tensor) -> Tensor:
    """Σ_k w_k ∇ₓlog p(x | h_k), with the weights and h held fixed (Fisher's identity)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        log_lik = joint.log_likelihood(x, h)
        (grad,) = torch.autograd.grad((weights * log_lik).sum(), x)
    return grad


def _enumerated_score(joint: JointModel, x: Tensor) -> Tensor:
    from latentae.posterior import EnumerateEncoder

    encoder = EnumerateEncoder(joint)
    values = encoder.values.reshape(-1, 1, *joint.latent_shape)  # (K, 1, ...)
    k = values.shape[0]
    step = max(1, _ENUMERATE_CELLS // k)
    chunks = []
    for rows in x.split(step):
        with torch.no_grad():
            weights = encoder(rows).probs.T  # (K, n): p_σ(h_k | x)
        chunks.append(_grad_log_likelihood(joint, values, rows.unsqueeze(0), weights)[0])
    return torch.cat(chunks)


def _linear_gaussian_score(joint: JointModel, x: Tensor) -> Tensor:
    from latentae.posterior import LaplaceEncoder

    encoder = LaplaceEncoder(joint)
    if not encoder.exact:
        raise ModelError(f"{joint._where}: the widened model is no longer linear-Gaussian")
    with torch.no_grad():
        mean = encoder(x).mean
    return _grad_log_likelihood(joint, mean, x, x.new_ones(x.shape[0]))


# ---------------------------------------------------------------------------- comparison


class ScoreError(NamedTuple):
    """How far a score estimate is from a reference, overall and per point.

    Attributes:
        relative: ‖e − r‖ / ‖r‖ over all points (Frobenius norms).
        per_point: ‖e_i − r_i‖ / ‖r_i‖ per point, shape ``(n,)`` (NaN where r_i = 0).
        median_relative: the median of ``per_point``.
        cosine: cos∠(e_i, r_i) per point, shape ``(n,)`` (NaN where either is 0).
        median_cosine: the median of ``cosine``.
        norm_ratio: ‖e‖ / ‖r‖ over all points: below 1, the estimate is shrunk.
    """

    relative: float
    per_point: Tensor
    median_relative: float
    cosine: Tensor
    median_cosine: float
    norm_ratio: float


def score_error(estimate: Tensor, reference: Tensor) -> ScoreError:
    """Compare a score estimate with a reference score at the same points.

    Args:
        estimate: e.g. [`dae_score`][], shape ``(n, ...)``; each row is one point.
        reference: e.g. [`model_score`][], the same shape.

    Raises:
        TypeError: either is not a floating-point tensor.
        ValueError: their shapes differ, they are empty, or the reference is all zero.

    Examples:
        >>> r = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> err = score_error(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), r)
        >>> round(err.relative, 4), err.cosine.tolist(), err.per_point.tolist()
        (0.4472, [1.0, 1.0], [0.0, 0.5])
    """
    for name, t in (("estimate", estimate), ("reference", reference)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            kind = type(t).__name__ if not isinstance(t, Tensor) else str(t.dtype)
            raise TypeError(f"{name} must be a floating-point torch.Tensor, got {kind}")
    if estimate.shape != reference.shape:
        raise ValueError(
            f"estimate has shape {tuple(estimate.shape)} but reference has shape "
            f"{tuple(reference.shape)}; evaluate both scores at the same points"
        )
    if estimate.dim() < 1 or estimate.shape[0] == 0:
        raise ValueError(
            f"the scores must have one row per point, got shape {tuple(estimate.shape)}"
        )
    e = estimate.detach().reshape(estimate.shape[0], -1)
    r = reference.detach().reshape(reference.shape[0], -1).to(e.dtype)
    total = float(r.norm())
    if total == 0:
        raise ValueError("the reference score is zero everywhere, so relative errors are undefined")
    e_norm, r_norm = e.norm(dim=1), r.norm(dim=1)
    nan = torch.tensor(math.nan, dtype=e.dtype, device=e.device)
    per_point = torch.where(r_norm > 0, (e - r).norm(dim=1) / r_norm, nan)
    both = (e_norm > 0) & (r_norm > 0)
    # Rounding can put a cosine just outside [-1, 1].
    cosine = torch.where(both, ((e * r).sum(1) / (e_norm * r_norm)).clamp(-1, 1), nan)
    return ScoreError(
        relative=float((e - r).norm()) / total,
        per_point=per_point,
        median_relative=float(per_point.nanmedian()),
        cosine=cosine,
        median_cosine=float(cosine.nanmedian()),
        norm_ratio=float(e.norm()) / total,
    )
