"""Conditionals derived from a [`JointModel`][latentae.JointModel]: the exact decoder p_model(x|h)
(eq. 14.13 of *Deep Learning*) and encoders p_model(h|x) (eq. 14.12) by five methods."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pyro.poutine as poutine
import torch
from pyro.infer import MCMC, NUTS
from torch import Tensor
from torch.distributions import (
    Categorical,
    Distribution,
    MultivariateNormal,
    Normal,
    TransformedDistribution,
    biject_to,
    constraints,
)

from latentae._util import Seed, seeded
from latentae.conditionals import (
    Conditional,
)
from latentae.distributions import Enumerated, WeightedSamples, reshape_batch
from latentae.joint import JointModel, ModelError

__all__ = [
    "EnumerateEncoder",
    "ImportanceEncoder",
    "LaplaceEncoder",
    "ModelDecoder",
    "ModelEncoder",
    "NUTSEncoder",
]

# Enumeration evaluates the joint at every support value for every row; past this many
# values importance sampling or an amortized encoder is the better tool.
MAX_SUPPORT = 4096


class _FromModel(Conditional):
    """A conditional computed from a joint model (not a learned module)."""

    def __init__(self, joint: JointModel) -> None:
        super().__init__()
        self.joint = joint

    def _flat_observed(self, x: Any) -> tuple[Tensor, torch.Size]:
        x = self.joint._as_observed(x)
        batch = x.shape[: x.dim() - len(self.joint.observed_shape)]
        return x.reshape(-1, *self.joint.observed_shape), batch

    def _rows(self, x: Any) -> Tensor:
        """Rows of ``x`` for the sampling encoders, which keep one batch dimension."""
        x, batch = self._flat_observed(x)
        if len(batch) != 1:
            raise ValueError(
                f"the {getattr(self, 'method', '')!r} encoder takes x of shape (n, ...) with one "
                f"batch dimension, got batch shape {tuple(batch)}; reshape x first"
            )
        return x

    def extra_repr(self) -> str:
        return repr(self.joint)


class ModelDecoder(_FromModel):
    """The exact decoder p_model(x | h), from one vectorized trace of the model conditioned on h.

    Examples:
        >>> jm = JointModel.from_file("models/ppca.py")
        >>> h, x = jm.sample(3, seed=0)
        >>> tuple(jm.decoder()(h).mean.shape)
        (3, 5)
    """

    def forward(self, h: Tensor) -> Distribution:
        jm = self.joint
        h = jm._as_latent(h)
        batch = h.shape[: h.dim() - len(jm.latent_shape)]
        n = math.prod(batch)
        trace = jm._trace(n, {jm.latent: h.reshape(n, *jm.latent_shape)})
        return reshape_batch(trace.nodes[jm.observed]["fn"], batch)


class ModelEncoder(_FromModel):
    """Base class of the encoders p_model(h | x) derived from a joint model."""

    #: Short name of the method, as passed to [`JointModel.encoder`][].
    method: str = ""
    #: Whether the method is exact for every model it accepts.
    exact: bool = False

    def _require_continuous(self) -> None:
        jm = self.joint
        if jm.latent_is_discrete:
            raise ModelError(
                f"{jm._where}: the {self.method!r} encoder needs a continuous latent, but "
                f"{jm.latent!r} is discrete; use encoder('enumerate')"
            )
        if len(jm.latent_shape) > 1:
            raise ModelError(
                f"{jm._where}: the {self.method!r} encoder needs a latent of shape (n,) or "
                f"(n, k), but {jm.latent!r} has event shape {tuple(jm.latent_shape)}; flatten it"
            )


class EnumerateEncoder(ModelEncoder):
    """The exact posterior of a finite latent, by evaluating the joint at every support value.

    Returns a ``Categorical`` when the support is ``{0, ..., K-1}`` and an
    [`Enumerated`][latentae.distributions.Enumerated] otherwise (e.g. a vector of binary units).

    Examples:
        >>> jm = JointModel.from_file("models/mixture.py")
        >>> h, x = jm.sample(4, seed=0)
        >>> p = jm.encoder("enumerate")(x).probs
        >>> bool(torch.allclose(p.sum(-1), torch.ones(4)))
        True
    """

    method = "enumerate"
    exact = True

    def __init__(self, joint: JointModel) -> None:
        super().__init__(joint)
        if not joint.latent_is_discrete:
            raise ModelError(
                f"{joint._where}: encoder('enumerate') needs a latent with finite support, but "
                f"{joint.latent!r} has support {joint.latent_support}; use 'laplace', "
                "'importance', 'nuts' or 'amortized'"
            )
        self.values = self._support_values(joint)
        k = self.values.shape[0]
        self._categorical = not joint.latent_shape and bool(
            (self.values == torch.arange(k, dtype=self.values.dtype)).all()
        )

    @staticmethod
    def _support_values(joint: JointModel) -> Tensor:
        fn = joint.prior(1)
        event = joint.latent_shape
        if fn.has_enumerate_support:
            values = fn.enumerate_support(expand=False)
            return values.reshape(values.shape[0], *event)
        base, where = fn, joint._where
        while isinstance(base, torch.distributions.Independent):
            base = base.base_dist
        if not base.has_enumerate_support:
            raise ModelError(
                f"{where}: encoder('enumerate') cannot list the support of {type(fn).__name__} "
                f"at site {joint.latent!r}; use a Categorical or Bernoulli latent, or another "
                "method"
            )
        per_entry = base.enumerate_support(expand=False).reshape(-1)
        size = per_entry.numel() ** joint.latent_dim
        if size > MAX_SUPPORT:
            raise ModelError(
                f"{where}: latent {joint.latent!r} has {size} joint values, more than "
                f"{MAX_SUPPORT} to enumerate; use encoder('importance') or encoder('amortized')"
            )
        grid = list(itertools.product(per_entry.tolist(), repeat=joint.latent_dim))
        return torch.tensor(grid, dtype=per_entry.dtype).reshape(size, *event)

    def forward(self, x: Tensor) -> Distribution:
        x, batch = self._flat_observed(x)
        h = self.values.reshape(-1, 1, *self.joint.latent_shape)
        logits = self.joint.log_joint(h, x.unsqueeze(0)).T  # (n, K)
        d = Categorical(logits=logits) if self._categorical else Enumerated(self.values, logits)
        return reshape_batch(d, batch)


def latent_transform(joint: JointModel) -> torch.distributions.Transform | None:
    """The bijection from R^k onto the latent's support, or ``None`` when it is all of R^k."""
    base = joint.latent_support
    while isinstance(base, constraints.independent):
        base = base.base_constraint
    return None if base is constraints.real else biject_to(joint.latent_support)


class _Unconstrained(ModelEncoder):
    """Shared machinery for methods that work in the latent's unconstrained space."""

    def __init__(self, joint: JointModel) -> None:
        super().__init__(joint)
        self._require_continuous()
        self.k = joint.latent_dim
        self.transform = latent_transform(joint)

    def _to_latent(self, u: Tensor) -> Tensor:
        h = u.reshape(*u.shape[:-1], *self.joint.latent_shape)
        return self.transform(h) if self.transform is not None else h

    def _wrap(self, loc: Tensor, base: Distribution, batch: torch.Size) -> Distribution:
        """Map a Gaussian on the flat unconstrained space to the latent's shape and support."""
        if not self.joint.latent_shape:
            base = Normal(loc[..., 0], base.covariance_matrix[..., 0, 0].sqrt())
        if self.transform is not None:
            base = TransformedDistribution(base, [self.transform])
        return reshape_batch(base, batch)


class LaplaceEncoder(_Unconstrained):
    """The Laplace approximation N(mode, (-Hessian)^-1) of p_model(h | x), per row.

    Newton's method with backtracking finds each row's mode (in the latent's unconstrained
    space, where the support is bounded); the Hessian comes from autograd. Exact for
    linear-Gaussian models such as PPCA and factor analysis. The returned distribution is
    differentiable in x through the implicit function theorem: one final Newton step is
    taken with the graph kept, whose derivative is exactly d mode / dx.

    Args:
        joint: the model.
        max_iter: Newton iterations at most.
        tol: convergence threshold on the Newton step, relative to the iterate; by default
            ``eps ** 0.75`` of the data's dtype.
        num_starts: prior draws per row from which the best is the starting point.
        seed: seed for those draws.

    Examples:
        >>> jm = JointModel.from_file("models/ppca.py")
        >>> h, x = jm.sample(3, seed=0)
        >>> q = jm.encoder("laplace")(x)
        >>> tuple(q.mean.shape), tuple(q.covariance_matrix.shape)
        ((3, 2), (3, 2, 2))
    """

    method = "laplace"

    def __init__(
        self,
        joint: JointModel,
        max_iter: int = 100,
        tol: float | None = None,
        num_starts: int = 128,
        seed: Seed = 0,
    ) -> None:
        super().__init__(joint)
        if not isinstance(num_starts, int) or num_starts < 1:
            raise ValueError(f"num_starts must be a positive integer, got {num_starts!r}")
        self.max_iter, self.tol, self.num_starts, self.seed = max_iter, tol, num_starts, seed
        self.exact = "laplace" in joint.exact_methods()
        if self.exact:  # a linear-Gaussian posterior has one mode: Newton needs no restarts
            self.num_starts = 1

    def _objective(self, u: Tensor, x: Tensor) -> Tensor:
        h = self._to_latent(u)
        f = self.joint.log_joint(h, x)
        if self.transform is not None:
            ladj = self.transform.log_abs_det_jacobian(u.reshape(h.shape), h)
            f = f + ladj.reshape((*f.shape, -1)).sum(-1)
        return f

    def _derivatives(self, u: Tensor, x: Tensor, create_graph: bool) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            u = u.detach().requires_grad_(True)
            f = self._objective(u, x)
            (g,) = torch.autograd.grad(f.sum(), u, create_graph=True)
            rows = []
            for j in range(self.k):
                (r,) = torch.autograd.grad(
                    g[:, j].sum(),
                    u,
                    retain_graph=True,
                    create_graph=create_graph,
                    allow_unused=True,
                )
                rows.append(torch.zeros_like(u) if r is None else r)
        return g, torch.stack(rows, dim=-2)

    def _mode(self, x: Tensor, u: Tensor) -> Tensor:
        eye = torch.eye(self.k, dtype=u.dtype, device=u.device)
        tol = self.tol if self.tol is not None else torch.finfo(u.dtype).eps ** 0.75
        with torch.no_grad():
            f = self._objective(u, x)
        for _ in range(self.max_iter):
            g, H = self._derivatives(u, x, create_graph=False)
            with torch.no_grad():
                L, info = torch.linalg.cholesky_ex(-H)
                # Rows whose Hessian is not negative definite take a gradient step instead.
                L = torch.where((info > 0)[:, None, None], eye, L)
                step = torch.cholesky_solve(g.unsqueeze(-1), L).squeeze(-1)
                alpha = torch.ones_like(f)
                for _ in range(40):  # backtracking: halve until no row gets worse
                    trial = u + alpha[:, None] * step
                    f_trial = self._objective(trial, x)
                    worse = ~(f_trial >= f - tol * f.abs())
                    if not bool(worse.any()):
                        break
                    alpha = torch.where(worse, alpha / 2, alpha)
                delta = (alpha[:, None] * step).abs().max()
                u, f = trial, f_trial
            if float(delta) <= tol * (1 + float(u.abs().max())):
                break
        return u

    def _start(self, x: Tensor) -> Tensor:
        """Per row, the best of ``num_starts`` prior draws: Newton then climbs the right hill
        of a multimodal posterior far more often than from one fixed start."""
        jm, n = self.joint, x.shape[0]
        with torch.no_grad():
            h = jm.prior(self.num_starts * n).sample().reshape(self.num_starts, n, *jm.latent_shape)
            h = h.to(x.dtype)
            best = jm.log_joint(h, x).argmax(0)
            h = h[best, torch.arange(n)]
            u = self.transform.inv(h) if self.transform is not None else h
        return u.reshape(n, self.k)

    def forward(self, x: Tensor) -> Distribution:
        jm = self.joint
        x, batch = self._flat_observed(x)
        with seeded(self.seed):
            u = self._mode(x.detach(), self._start(x.detach()))
        keep_graph = torch.is_grad_enabled() and x.requires_grad
        g, H = self._derivatives(u, x, create_graph=keep_graph)
        if not keep_graph:
            g, H = g.detach(), H.detach()
        precision = -H
        if not bool(torch.linalg.cholesky_ex(precision.detach())[1].eq(0).all()):
            raise ValueError(
                f"{jm._where}: the log posterior's Hessian is not negative definite at the "
                "mode for some rows, so the Laplace approximation is undefined there; use "
                "encoder('importance') or encoder('nuts')"
            )
        # One differentiable Newton step from the (detached) mode: its value is the mode and
        # its derivative in x is the implicit-function-theorem derivative of the mode.
        loc = u.detach() + torch.linalg.solve(precision, g.unsqueeze(-1)).squeeze(-1)
        base = MultivariateNormal(loc, precision_matrix=precision)
        return self._wrap(loc, base, batch)


class ImportanceEncoder(ModelEncoder):
    """Self-normalized importance sampling of p_model(h | x), vectorized over rows.

    The proposal is the prior, or a given conditional q(h|x). Returns
    [`WeightedSamples`][latentae.distributions.WeightedSamples] (resampling, weighted moments, and
    the effective sample size ``.ess`` per row); there is no exact log density.

    Args:
        joint: the model.
        num_particles: proposals per row.
        proposal: a Conditional q(h | x) with a density; the prior when ``None``.
        seed: seed for the proposals (the same draws on every call); ``None`` uses the
            global RNG.

    Examples:
        >>> jm = JointModel.from_file("models/ppca.py")
        >>> h, x = jm.sample(2, seed=0)
        >>> q = jm.encoder("importance", num_particles=500, seed=0)(x)
        >>> tuple(q.sample().shape), tuple(q.ess.shape)
        ((2, 2), (2,))
    """

    method = "importance"
    has_log_prob = False

    def __init__(
        self,
        joint: JointModel,
        num_particles: int = 1000,
        proposal: Conditional | None = None,
        seed: Seed = None,
    ) -> None:
        super().__init__(joint)
        if not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"num_particles must be a positive integer, got {num_particles!r}")
        if proposal is not None and not getattr(proposal, "has_log_prob", False):
            raise ValueError("the proposal must be a Conditional with a log density")
        self.num_particles, self.proposal, self.seed = num_particles, proposal, seed

    @torch.no_grad()
    def forward(self, x: Tensor) -> Distribution:
        jm = self.joint
        x = self._rows(x)
        s, n = self.num_particles, x.shape[0]
        with seeded(self.seed):
            if self.proposal is None:
                h = jm.prior(s * n).sample().reshape(s, n, *jm.latent_shape)
                log_w = jm.log_likelihood(x, h)
            else:
                q = self.proposal(x)
                h = q.sample((s,))
                log_w = jm.log_joint(h, x) - q.log_prob(h)
        samples = h.movedim(0, 1)  # (n, S, *latent)
        return WeightedSamples(samples, log_w.T, method=self.method)


class NUTSEncoder(ModelEncoder):
    """Pyro's NUTS run on each observation row: the slow gold standard.

    Calling it runs ``num_chains`` chains per row and returns their pooled draws as
    [`WeightedSamples`][latentae.distributions.WeightedSamples] (equal weights; no log density).
    [`sample_chains`][] keeps the chains apart, with divergences, for ArviZ.

    Args:
        joint: the model.
        num_samples: draws kept per chain.
        warmup_steps: adaptation steps per chain.
        num_chains: chains per row (run one after another, each seeded).
        seed: seed of the first chain.
        progress: show Pyro's progress bar.
        **nuts_options: passed to ``pyro.infer.NUTS`` (e.g. ``target_accept_prob``).
    """

    method = "nuts"
    has_log_prob = False

    def __init__(
        self,
        joint: JointModel,
        num_samples: int = 500,
        warmup_steps: int = 500,
        num_chains: int = 1,
        seed: Seed = None,
        progress: bool = False,
        **nuts_options: Any,
    ) -> None:
        super().__init__(joint)
        if joint.latent_is_discrete:
            raise ModelError(
                f"{joint._where}: NUTS needs a continuous latent, but {joint.latent!r} is "
                "discrete; use encoder('enumerate')"
            )
        for name, value in (("num_samples", num_samples), ("num_chains", num_chains)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.num_samples, self.warmup_steps, self.num_chains = num_samples, warmup_steps, num_chains
        self.seed, self.progress, self.nuts_options = seed, progress, nuts_options

    def sample_chains(
        self,
        x_row: Tensor,
        num_samples: int | None = None,
        num_chains: int | None = None,
        seed: Seed = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Run the chains for one observation.

        ``seed=None`` continues the current random stream (so consecutive rows get
        independent chains); the encoder's own ``seed`` applies to whole calls of the encoder.

        Returns:
            ``(draws, stats)``: draws of shape ``(chains, samples, *latent_shape)`` and
            sample statistics of shape ``(chains, samples)`` (``diverging``).
        """
        jm = self.joint
        x_row = jm._as_observed(torch.as_tensor(x_row).reshape(1, *jm.observed_shape), "x_row")
        num_samples = num_samples or self.num_samples
        num_chains = num_chains or self.num_chains
        model = poutine.condition(jm.model, data={jm.observed: x_row})
        draws, diverging = [], []
        # NUTS needs gradients even when the caller samples under torch.no_grad().
        with seeded(seed), torch.enable_grad():
            for _ in range(num_chains):
                kernel = NUTS(model, **self.nuts_options)
                mcmc = MCMC(
                    kernel,
                    num_samples=num_samples,
                    warmup_steps=self.warmup_steps,
                    num_chains=1,
                    disable_progbar=not self.progress,
                )
                mcmc.run(1)
                draws.append(mcmc.get_samples()[jm.latent][:, 0])
                flags = torch.zeros(num_samples, dtype=torch.bool)
                divergent = mcmc.diagnostics().get("divergences", {}).get("chain 0", [])
                flags[torch.as_tensor(divergent, dtype=torch.long)] = True
                diverging.append(flags)
        return torch.stack(draws), {"diverging": torch.stack(diverging)}

    def forward(self, x: Tensor) -> Distribution:
        rows = []
        with seeded(self.seed):
            for row in self._rows(x):
                draws, _ = self.sample_chains(row)
                rows.append(draws.reshape(-1, *self.joint.latent_shape))
        samples = torch.stack(rows)
        return WeightedSamples(samples, samples.new_zeros(samples.shape[:2]), method=self.method)
