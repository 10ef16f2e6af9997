"""Compatibility diagnostics for an encoder e(h | x) and a decoder d(x | h).

The two conditionals are compatible (there is a joint law with both as its conditionals) iff
e(h | x) / d(x | h) = a(h) b(x) (Arnold & Press 1989), i.e. iff log e − log d has no
interaction between h and x. Three diagnostics measure that interaction:

- [`cross_ratio`][]: the cross-difference of log e − log d over random pairs of sampled
  points (any h and x, only ``log_prob`` needed);
- [`interaction`][]: the mixed partial ∂²/∂x∂h (log e − log d) by autograd (continuous h and
  x);
- [`gaussian`][]: closed forms for a linear-Gaussian pair (interaction-matrix mismatch, the
  exact gap to the optimal decoder, and the stationary law of the x-chain x → h → x).

The encoder and decoder are any [`Conditional`][latentae.conditionals.Conditional] with a density:
model-derived (``jm.encoder("laplace")``, ``jm.decoder()``), learned, or a DAE's corrupted
encoder ([`corrupt`][latentae.denoising.corrupt]). Model-derived encoders such as the Laplace
encoder of PPCA return a ``MultivariateNormal`` but have no ``linear_gaussian()``, so
[`gaussian`][] applies to learned and DAE pairs; the sampled diagnostics apply to all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor

from latentae._util import Seed, check_finite, check_positive_int, seeded
from latentae.stats import (
    LinearGaussian,
    expected_conditional_kl,
    gaussian_kl,
    reverse_conditional,
    two_sample_test,
)

__all__ = [
    "CompatibilityReport",
    "CrossRatioResult",
    "GaussianResult",
    "GibbsTestResult",
    "InteractionResult",
    "check",
    "cross_ratio",
    "gaussian",
    "gibbs_test",
    "interaction",
]

# Past this dimension the (d² × d²) Kronecker system of the Lyapunov equation is replaced by
# the doubling iteration S ← S + A S Aᵀ, A ← A², which needs only d × d products.
_KRONECKER_MAX_DIM = 32
_DOUBLING_MAX_ITER = 200


# Result fields that hold the draws behind a statistic (for figures), left out of to_dict().
_SAMPLES = ("delta_e", "delta_d", "draws", "heldout")


def _json(result: Any, ints: tuple[str, ...] = ()) -> dict[str, Any]:
    """A result's fields as JSON-able Python values: the count fields named in ``ints`` as
    ints, tensors as (nested lists of) floats, everything else as floats."""
    out: dict[str, Any] = {}
    for k, v in result._asdict().items():
        if k in _SAMPLES:
            continue
        if k in ints:
            out[k] = int(v)
        elif isinstance(v, Tensor):
            out[k] = v.detach().cpu().tolist()
        else:
            out[k] = float(v)
    return out


class CrossRatioResult(NamedTuple):
    """The cross-ratio statistic: 0 iff e and d are compatible on the sampled pairs.

    Attributes:
        statistic: mean((Δe − Δd)²) / mean(½Δe² + ½Δd²), in [0, 4].
        stderr: its delta-method standard error (pairs treated as independent).
        num_pairs: number of pairs it averages over.
        delta_e, delta_d: the cross-differences of each pair, shape ``(num_pairs,)``; a
            compatible pair has them equal (not in ``to_dict()``).
    """

    statistic: float
    stderr: float
    num_pairs: int
    delta_e: Tensor | None = None
    delta_d: Tensor | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-able Python numbers."""
        return _json(self, ints=("num_pairs",))


class InteractionResult(NamedTuple):
    """The relative mean-square mixed partial of log e − log d: 0 iff compatible.

    Attributes:
        statistic: mean ‖∂²ₓₕ(log e − log d)‖²_F / mean(½‖∂²ₓₕ log e‖²_F + ½‖∂²ₓₕ log d‖²_F).
        stderr: its delta-method standard error over the points.
        num_points: number of points (x_i, h_i) it averages over.
    """

    statistic: float
    stderr: float
    num_points: int

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-able Python numbers."""
        return _json(self, ints=("num_points",))


class GaussianResult(NamedTuple):
    """Closed-form compatibility of a linear-Gaussian pair e(h|x) = N(Vx + c, Σ),
    d(x|h) = N(Wh + b, Ψ), against the data law N(x̄, Ĉ) (sample mean and covariance of x).

    These are exact functions of the parameters and of (x̄, Ĉ), so there is no Monte Carlo
    standard error; the only sampling error is that of x̄ and Ĉ themselves.

    Attributes:
        mismatch: ‖Σ⁻¹V − WᵀΨ⁻¹‖_F / ‖Σ⁻¹V‖_F, 0 iff compatible.
        decoder_kl: E_h KL(q(x|h) ‖ d(x|h)) in nats, with q(x|h) the reverse conditional of
            N(x̄, Ĉ) e(h|x) (the optimal decoder for that encoder) and h from its marginal.
        stationary_kl: KL(N(m_s, S) ‖ N(x̄, Ĉ)) in nats, with N(m_s, S) the stationary law
            of the chain x → h → x.
        stationary_mean: m_s = (I − A)⁻¹(Wc + b), A = WV.
        stationary_cov: S solving S = A S Aᵀ + WΣWᵀ + Ψ.
    """

    mismatch: float
    decoder_kl: float
    stationary_kl: float
    stationary_mean: Tensor
    stationary_cov: Tensor

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-able Python numbers (tensors as nested lists of floats)."""
        return _json(self)


# --- helpers ------------------------------------------------------------------------------------


def _check_x(x: Any, what: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor of shape (n, ...), not {type(x).__name__}")
    if x.dim() < 1 or x.shape[0] < 2:
        raise ValueError(f"{what} needs x with at least 2 rows, got shape {tuple(x.shape)}")
    return x


def _check_densities(encoder: Any, decoder: Any, what: str) -> None:
    for name, cond in (("encoder", encoder), ("decoder", decoder)):
        if not callable(cond):
            raise TypeError(
                f"{name} must be a Conditional (called on a batch, returning a distribution), "
                f"not {type(cond).__name__}"
            )
        if not getattr(cond, "has_log_prob", True):
            raise ValueError(
                f"{what} needs log densities, but the {name} {type(cond).__name__} has none "
                "(e.g. a deterministic encoder with noise=0)"
            )


def _ratio(num: Tensor, den: Tensor) -> tuple[float, float]:
    """Ratio of means R = mean(num)/mean(den) with its delta-method standard error.

    For i.i.d. pairs (a_k, b_k), R = ā / b̄ and, to first order, R − ρ ≈ (ā − ρ b̄) / E b, so
    se(R) = sd(a − R b) / (√n · b̄), with sd the sample standard deviation (ddof 1).
    Both means zero (no interaction in e nor in d) counts as compatible: R = 0, se = 0.
    """
    n = num.shape[0]
    mean_den = den.mean()
    if float(mean_den) == 0.0:
        return 0.0, 0.0
    r = num.mean() / mean_den
    resid = num - r * den
    se = resid.std(correction=1) / (math.sqrt(n) * mean_den) if n > 1 else torch.nan
    return float(r), float(se)


# --- 1. cross-ratio -----------------------------------------------------------------------------


def cross_ratio(
    encoder: Any, decoder: Any, x: Tensor, num_pairs: int = 1000, seed: Seed = None
) -> CrossRatioResult:
    """The cross-ratio diagnostic of compatibility, for any h and x with log densities.

    With h_i ~ e(·|x_i) for the rows of x and random pairs (i, j), i ≠ j,
    Δe = log e(h_i|x_i) + log e(h_j|x_j) − log e(h_j|x_i) − log e(h_i|x_j) and Δd likewise with
    log d(x|h). If e/d = a(h) b(x) the two cross-differences are equal, so the statistic
    mean((Δe − Δd)²) / mean(½Δe² + ½Δd²) is 0 iff e and d are compatible on what was
    sampled; it is at most 4. The four log-density terms of each kind are evaluated in two
    batched calls of 2·num_pairs rows.

    The standard error is the delta method for a ratio of means (see ``_ratio``), treating the
    pairs as independent; pairs that share a row are weakly dependent, so it is approximate
    when num_pairs is large compared with the number of rows.

    Args:
        encoder: e(h | x), a Conditional with ``log_prob``.
        decoder: d(x | h), a Conditional with ``log_prob``.
        x: data, shape ``(n, ...)`` with n ≥ 2.
        num_pairs: number of random pairs.
        seed: seed for the draws of h and of the pairs (``None``: torch's global stream).

    Returns:
        CrossRatioResult with the statistic and its standard error.

    Examples:
        >>> from latentae import GaussianConditional, GaussianDecoder
        >>> enc, dec = GaussianConditional(3, 2), GaussianDecoder(2, 3)
        >>> r = cross_ratio(enc, dec, torch.randn(50, 3), num_pairs=100, seed=0)
        >>> r.statistic > 0, r.num_pairs
        (True, 100)
    """
    num_pairs = check_positive_int("num_pairs", num_pairs)
    x = _check_x(x, "cross_ratio")
    _check_densities(encoder, decoder, "cross_ratio")
    n = x.shape[0]
    with seeded(seed), torch.no_grad():
        h = encoder(x).sample()
        i = torch.randint(0, n, (num_pairs,), device=x.device)
        j = (i + torch.randint(1, n, (num_pairs,), device=x.device)) % n  # j ≠ i
        xs, hs = torch.cat([x[i], x[j]]), torch.cat([h[i], h[j]])  # rows (x_i; x_j), (h_i; h_j)
        xc, hc = torch.cat([x[j], x[i]]), torch.cat([h[j], h[i]])  # the crossed partners
        e = encoder(xs)
        le_same, le_cross = e.log_prob(hs), e.log_prob(hc)  # log e(h_i|x_i), log e(h_j|x_i) ...
        d = decoder(hs)
        ld_same, ld_cross = d.log_prob(xs), d.log_prob(xc)  # log d(x_i|h_i), log d(x_j|h_i) ...
        p = num_pairs
        # Grouped as [log e(h_i|x_i) − log e(h_i|x_j)] + [log e(h_j|x_j) − log e(h_j|x_i)], so a
        # conditional that ignores its context gives exactly 0 rather than rounding noise.
        delta_e = (le_same[:p] - le_cross[p:]) + (le_same[p:] - le_cross[:p])
        delta_d = (ld_same[:p] - ld_cross[p:]) + (ld_same[p:] - ld_cross[:p])
        num = (delta_e - delta_d) ** 2
        den = 0.5 * (delta_e**2 + delta_d**2)
    if not bool(torch.isfinite(num).all() & torch.isfinite(den).all()):
        raise ValueError(
            "cross_ratio: some log densities are not finite (a sampled h or x outside the "
            "other conditional's support?)"
        )
    statistic, stderr = _ratio(num, den)
    return CrossRatioResult(statistic, stderr, num_pairs, delta_e, delta_d)


# --- 2. interaction -----------------------------------------------------------------------------


def _is_discrete(dist: Any) -> bool:
    try:
        return bool(dist.support.is_discrete)
    except (AttributeError, NotImplementedError):
        return False


def _mixed_partials(f: Tensor, x: Tensor, h: Tensor) -> Tensor:
    """Per point, the (k × d) matrix ∂²f_i/∂h_i∂x_i of f_i = f(h_i, x_i), shape (n, k, d).

    Rows are independent, so ∂/∂x of Σ_i g_ij with g = ∂(Σ f)/∂h gives row j for all points.
    """
    n = x.shape[0]
    (g,) = torch.autograd.grad(f.sum(), h, create_graph=True, allow_unused=True)
    if g is None:
        return x.new_zeros(n, h[0].numel(), x[0].numel())
    g = g.reshape(n, -1)
    rows = []
    for j in range(g.shape[1]):
        if not g.requires_grad:
            rows.append(x.new_zeros(n, x[0].numel()))
            continue
        (r,) = torch.autograd.grad(g[:, j].sum(), x, retain_graph=True, allow_unused=True)
        rows.append(x.new_zeros(n, x[0].numel()) if r is None else r.reshape(n, -1))
    return torch.stack(rows, dim=1)


def interaction(
    encoder: Any, decoder: Any, x: Tensor, num_points: int = 256, seed: Seed = None
) -> InteractionResult:
    """The mixed-partial diagnostic of compatibility, for continuous h and x.

    log e(h|x) − log d(x|h) = α(h) + β(x) iff compatible, iff its mixed partial ∂²/∂x∂h
    vanishes. At points (x_i, h_i ~ e(·|x_i)) this computes the k × d mixed partials of
    log e and log d by autograd and reports
    mean ‖∂²ₓₕ(log e − log d)‖²_F / mean(½‖∂²ₓₕ log e‖²_F + ½‖∂²ₓₕ log d‖²_F), which is at
    most 4, with its delta-method standard error over the points (see ``_ratio``). Both
    conditionals must be differentiable in their context and value.

    Args:
        encoder: e(h | x), a Conditional with a differentiable ``log_prob``.
        decoder: d(x | h), a Conditional with a differentiable ``log_prob``.
        x: data, shape ``(n, ...)``, floating point.
        num_points: points used, drawn without replacement from the rows (all rows if fewer).
        seed: seed for the choice of rows and the draws of h.

    Returns:
        InteractionResult with the statistic and its standard error.

    Raises:
        ValueError: h or x is discrete.

    Examples:
        >>> from latentae import GaussianConditional, GaussianDecoder
        >>> enc, dec = GaussianConditional(3, 2), GaussianDecoder(2, 3)
        >>> r = interaction(enc, dec, torch.randn(40, 3), num_points=20, seed=0)
        >>> r.statistic > 0, r.num_points
        (True, 20)
    """
    num_points = check_positive_int("num_points", num_points)
    x = _check_x(x, "interaction")
    _check_densities(encoder, decoder, "interaction")
    if not torch.is_floating_point(x):
        raise ValueError(
            f"interaction needs continuous x, but x has dtype {x.dtype}; use cross_ratio for "
            "discrete data"
        )
    n = x.shape[0]
    with seeded(seed):
        with torch.no_grad():
            if num_points < n:
                x = x[torch.randperm(n, device=x.device)[:num_points]]
            e = encoder(x)
            if _is_discrete(e):
                raise ValueError(
                    "interaction needs a continuous latent h, but the encoder's distribution "
                    f"{type(e).__name__} has discrete support; use cross_ratio instead"
                )
            h = e.sample()
        if not torch.is_floating_point(h):
            raise ValueError(
                f"interaction needs a continuous latent h, but the encoder samples {h.dtype}; "
                "use cross_ratio instead"
            )
        with torch.enable_grad():
            xg = x.detach().clone().requires_grad_(True)
            hg = h.detach().clone().requires_grad_(True)
            d = decoder(hg)
            if _is_discrete(d):
                raise ValueError(
                    "interaction needs continuous x, but the decoder's distribution "
                    f"{type(d).__name__} has discrete support; use cross_ratio instead"
                )
            mixed_e = _mixed_partials(encoder(xg).log_prob(hg), xg, hg).detach()
            mixed_d = _mixed_partials(d.log_prob(xg), xg, hg).detach()
    num = (mixed_e - mixed_d).square().sum((-2, -1))
    den = 0.5 * (mixed_e.square().sum((-2, -1)) + mixed_d.square().sum((-2, -1)))
    statistic, stderr = _ratio(num, den)
    return InteractionResult(statistic, stderr, int(x.shape[0]))


# --- 4. gaussian closed forms -------------------------------------------------------------------


def _linear_gaussian(cond: Any, name: str) -> LinearGaussian:
    method = getattr(cond, "linear_gaussian", None)
    if method is None:
        raise ValueError(
            f"gaussian needs a linear-Gaussian {name} with a linear_gaussian() method; "
            f"{type(cond).__name__} has none (model-derived encoders such as "
            "jm.encoder('laplace') have none: use cross_ratio or interaction)"
        )
    return LinearGaussian(*(t.detach() for t in method()))


def _stationary_cov(a: Tensor, q: Tensor) -> Tensor:
    """The solution S of the discrete Lyapunov equation S = A S Aᵀ + Q (spectral radius < 1).

    Small d: vec(S) = (I − A⊗A)⁻¹ vec(Q) (row-major vec: vec(A S Aᵀ) = (A⊗A) vec(S)).
    Larger d: the doubling iteration S_{k+1} = S_k + A_k S_k A_kᵀ, A_{k+1} = A_k², whose
    S_k = Σ_{t < 2^k} Aᵗ Q Aᵗᵀ converges quadratically.
    """
    d = a.shape[0]
    if d <= _KRONECKER_MAX_DIM:
        eye = torch.eye(d * d, dtype=a.dtype, device=a.device)
        s = torch.linalg.solve(eye - torch.kron(a, a), q.reshape(-1)).reshape(d, d)
    else:
        s, ak = q.clone(), a.clone()
        for _ in range(_DOUBLING_MAX_ITER):
            step = ak @ s @ ak.T
            s = s + step
            ak = ak @ ak
            if float(step.abs().max()) <= torch.finfo(a.dtype).eps * float(s.abs().max()):
                break
    return 0.5 * (s + s.T)


def gaussian(encoder: Any, decoder: Any, x: Tensor) -> GaussianResult:
    """Closed-form compatibility diagnostics of a linear-Gaussian pair.

    With e(h|x) = N(Vx + c, Σ) from ``encoder.linear_gaussian()`` and d(x|h) = N(Wh + b, Ψ)
    from ``decoder.linear_gaussian()``, and the data law taken Gaussian N(x̄, Ĉ) with x's
    sample mean and covariance:

    - ``mismatch``: ‖Σ⁻¹V − WᵀΨ⁻¹‖_F / ‖Σ⁻¹V‖_F; the pair is compatible iff Σ⁻¹V = WᵀΨ⁻¹
      (the h–x block of a joint precision);
    - ``decoder_kl``: E_h KL(q(x|h) ‖ d(x|h)), q the reverse conditional of N(x̄, Ĉ) e(h|x);
    - ``stationary_kl``: the chain x → h → x is the VAR(1) x' = A x + m + noise with A = WV,
      m = Wc + b and noise covariance Q = WΣWᵀ + Ψ; its stationary law N((I − A)⁻¹m, S),
      S = A S Aᵀ + Q, is compared with N(x̄, Ĉ) by KL(stationary ‖ data).

    All three are exact (no standard errors).

    Args:
        encoder: an affine Gaussian encoder with ``linear_gaussian()`` (e.g.
            [`GaussianEncoder`][latentae.GaussianEncoder], or ``corrupt(enc, Gaussian(σ))``).
        decoder: an affine Gaussian decoder with ``linear_gaussian()``.
        x: data, shape ``(n, d)``, n > d so that the sample covariance is positive definite.

    Returns:
        GaussianResult.

    Raises:
        ValueError: either conditional has no ``linear_gaussian()``, or the chain is not
            stable (the spectral radius of WV is ≥ 1, so it has no stationary law).

    Examples:
        >>> from latentae import GaussianDecoder, GaussianEncoder
        >>> enc, dec = GaussianEncoder(3, 2, noise=0.5), GaussianDecoder(2, 3)
        >>> with torch.no_grad():
        ...     _ = enc.net[0].weight.mul_(0.1)
        >>> r = gaussian(enc, dec, torch.randn(200, 3))
        >>> r.mismatch > 0, tuple(r.stationary_cov.shape)
        (True, (3, 3))
    """
    x = _check_x(x, "gaussian")
    v, c, sigma = _linear_gaussian(encoder, "encoder")
    w, b, psi = _linear_gaussian(decoder, "decoder")
    if x.dim() != 2 or x.shape[1] != w.shape[0] or v.shape[1] != w.shape[0]:
        raise ValueError(
            f"gaussian needs x of shape (n, {w.shape[0]}) matching the decoder's output and "
            f"the encoder's input ({v.shape[1]}), got {tuple(x.shape)}"
        )
    with torch.no_grad():
        x = x.detach().to(w.dtype)
        x_mean, x_cov = x.mean(0), torch.cov(x.T).reshape(x.shape[1], x.shape[1])
        enc_side = torch.linalg.solve(sigma, v)  # Σ⁻¹V
        dec_side = torch.linalg.solve(psi, w).T  # WᵀΨ⁻¹ (Ψ symmetric)
        mismatch = (enc_side - dec_side).norm() / enc_side.norm()

        optimal, h_mean, h_cov = reverse_conditional(x_mean, x_cov, LinearGaussian(v, c, sigma))
        decoder_kl = expected_conditional_kl(h_mean, h_cov, optimal, LinearGaussian(w, b, psi))

        d = w.shape[0]
        a = w @ v
        radius = float(torch.linalg.eigvals(a).abs().max())
        if radius >= 1:
            raise ValueError(
                f"gaussian: the chain x -> h -> x is x' = A x + m + noise with A = WV of "
                f"spectral radius {radius:.4g} >= 1, so it has no stationary law"
            )
        q = w @ sigma @ w.T + psi
        s = _stationary_cov(a, 0.5 * (q + q.T))
        eye = torch.eye(d, dtype=a.dtype, device=a.device)
        s_mean = torch.linalg.solve(eye - a, w @ c + b)
        stationary_kl = gaussian_kl(s_mean, s, x_mean, x_cov)
    return GaussianResult(float(mismatch), float(decoder_kl), float(stationary_kl), s_mean, s)


class GibbsTestResult(NamedTuple):
    """Two-sample tests of an x-chain's late draws against held-out data, beside the same
    tests between two halves of the training data (the noise floor).

    Attributes:
        mmd, mmd_pvalue: unbiased MMD² (median-heuristic Gaussian kernel) of one late draw
            per chain against held-out rows, and its permutation p-value.
        energy, energy_pvalue: the energy distance and its permutation p-value.
        floor_mmd, floor_mmd_pvalue, floor_energy, floor_energy_pvalue: the same statistics
            between two disjoint halves of the training rows.
        num_chains: chains run (one draw kept from each).
        burn_in: steps each chain ran.
        draws: the late draw of each chain, shape ``(num_chains, *x_shape)``, and
        heldout: the held-out rows they were tested against (neither in ``to_dict()``).
    """

    mmd: float
    mmd_pvalue: float
    energy: float
    energy_pvalue: float
    floor_mmd: float
    floor_mmd_pvalue: float
    floor_energy: float
    floor_energy_pvalue: float
    num_chains: int
    burn_in: int
    draws: Tensor | None = None
    heldout: Tensor | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-able Python numbers."""
        return _json(self, ints=("num_chains", "burn_in"))


def gibbs_test(
    encoder: Any,
    decoder: Any,
    x_train: Tensor,
    x_heldout: Tensor,
    corruption: Any = None,
    num_chains: int = 1000,
    burn_in: int = 100,
    num_permutations: int = 200,
    seed: Seed = None,
) -> GibbsTestResult:
    """Run independent chains x → h ~ e(h|x) → x ~ d(x|h) and test whether their late
    draws differ from held-out data (DESIGN diagnostic 3).

    Chains start at random training rows, so a compatible pair whose joint has the data law
    as x-marginal starts at stationarity and stays there, while an incompatible pair drifts
    away within ``burn_in`` steps. With ``corruption`` (a DAE pair given as q(h|x̃) and its
    corruption), each step corrupts x first: the encoder is ``corrupt(encoder, corruption)``.

    Examples:
        >>> import latentae as lae
        >>> jm = lae.JointModel.from_file("models/ppca.py")
        >>> _, x = jm.sample(400, seed=0)
        >>> r = gibbs_test(jm.encoder("laplace"), jm.decoder(), x[:200], x[200:], num_chains=100,
        ...                burn_in=5, num_permutations=50, seed=0)
        >>> 0 < r.energy_pvalue <= 1
        True
    """
    from latentae.chains import gibbs_chain
    from latentae.denoising import corrupt

    x_train = _check_x(x_train, "gibbs_test")
    x_heldout = _check_x(x_heldout, "gibbs_test")
    num_chains = check_positive_int("num_chains", num_chains)
    burn_in = check_positive_int("burn_in", burn_in)
    if x_train.shape[1:] != x_heldout.shape[1:]:
        raise ValueError(
            f"x_train rows have shape {tuple(x_train.shape[1:])} but x_heldout rows "
            f"{tuple(x_heldout.shape[1:])}"
        )
    if len(x_train) < 4:
        raise ValueError("gibbs_test needs at least 4 training rows for the noise floor")
    enc = corrupt(encoder, corruption) if corruption is not None else encoder
    with seeded(seed):
        starts = x_train[torch.randint(len(x_train), (num_chains,))]
        draws = gibbs_chain(enc, decoder, starts, burn_in, burn_in=burn_in - 1).x[-1]
        m = min(num_chains, len(x_heldout))
        held = x_heldout[torch.randperm(len(x_heldout))[:m]]
        half = min(len(x_train) // 2, num_chains)
        order = torch.randperm(len(x_train))
        a, b = x_train[order[:half]], x_train[order[half : 2 * half]]
        flat = [t.reshape(len(t), -1).to(torch.float64) for t in (draws, held, a, b)]
        tests = [
            two_sample_test(p, q, statistic, num_permutations=num_permutations)
            for p, q in (flat[:2], flat[2:])
            for statistic in ("mmd", "energy")
        ]
    (mmd, energy, floor_mmd, floor_energy) = tests
    return GibbsTestResult(
        float(mmd.statistic), mmd.pvalue, float(energy.statistic), energy.pvalue,
        float(floor_mmd.statistic), floor_mmd.pvalue,
        float(floor_energy.statistic), floor_energy.pvalue, num_chains, burn_in, draws, held,
    )  # fmt: skip


@dataclass
class CompatibilityReport:
    """Every diagnostic that applied to a pair, and why the others did not.

    Attributes:
        results: diagnostic name (``cross_ratio``, ``interaction``, ``gibbs``, ``gaussian``)
            -> its result.
        skipped: diagnostic name -> the reason it does not apply to this pair.
    """

    results: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.results[name]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able figures: ``{"results": {...}, "skipped": {...}}``."""
        return {
            "results": {name: r.to_dict() for name, r in self.results.items()},
            "skipped": dict(self.skipped),
        }


def check(
    encoder: Any,
    decoder: Any,
    data: Tensor,
    *,
    heldout: Tensor | None = None,
    corruption: Any = None,
    num_pairs: int = 1000,
    num_points: int = 256,
    num_chains: int = 1000,
    burn_in: int = 100,
    seed: Seed = None,
) -> CompatibilityReport:
    """Run every compatibility diagnostic that applies to ``encoder`` and ``decoder``.

    For a DAE pair pass q(h|x̃) as ``encoder`` and its ``corruption``: the diagnostics then
    use p_enc(h|x) = ``corrupt(encoder, corruption)``. Without ``heldout`` the Gibbs test
    holds out a seeded half of ``data``. A diagnostic that does not apply (no density, a
    discrete variable, no closed form) is listed in ``skipped`` with the reason.

    Examples:
        >>> import latentae as lae
        >>> jm = lae.JointModel.from_file("models/ppca.py")
        >>> _, x = jm.sample(400, seed=0)
        >>> report = check(jm.encoder("laplace"), jm.decoder(), x, num_pairs=100,
        ...                num_points=20, num_chains=100, burn_in=5, seed=0)
        >>> sorted(report.results), sorted(report.skipped)
        (['cross_ratio', 'gibbs', 'interaction'], ['gaussian'])
    """
    from latentae.denoising import corrupt

    data = _check_x(data, "check")
    check_finite(data.reshape(len(data), -1), "data")
    enc = corrupt(encoder, corruption) if corruption is not None else encoder
    report = CompatibilityReport()
    with seeded(seed):
        if heldout is None:
            order = torch.randperm(len(data))
            train, heldout = data[order[: len(data) // 2]], data[order[len(data) // 2 :]]
        else:
            train = data
        runs = {
            "cross_ratio": lambda: cross_ratio(enc, decoder, data, num_pairs=num_pairs),
            "interaction": lambda: interaction(enc, decoder, data, num_points=num_points),
            "gibbs": lambda: gibbs_test(
                enc, decoder, train, heldout, num_chains=num_chains, burn_in=burn_in
            ),
            "gaussian": lambda: gaussian(enc, decoder, data),
        }
        for name, run in runs.items():
            try:
                report.results[name] = run()
            except ValueError as e:  # the diagnostic's own "does not apply" message
                report.skipped[name] = str(e)
    return report
