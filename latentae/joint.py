"""A joint model p_model(h, x) written in Pyro, seen as the two maps of an autoencoder."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample
from torch.distributions import Distribution, constraints

from latentae._util import Seed, check_finite, seeded

if TYPE_CHECKING:
    from latentae.conditionals import Conditional

__all__ = ["ENCODER_METHODS", "JointModel", "ModelError"]

#: Encoder methods accepted by [`JointModel.encoder`][].
ENCODER_METHODS = ("enumerate", "laplace", "importance", "nuts", "amortized")

# Probe size for the validating trace: 3 is unlikely to coincide with an event dimension,
# so a misplaced plate or a missing ``.to_event`` shows up as a wrong batch shape.
_PROBE = 3
DEFAULT_SIMULATED = 2000


class ModelError(ValueError):
    """A model script or model function breaks the model-script contract.

    The message names the script (or function), the site and how to fix it.
    """


def _is_deterministic(site: dict[str, Any]) -> bool:
    return bool(site.get("infer", {}).get("_deterministic"))


class JointModel:
    """A joint p_model(h, x) given by a Pyro model ``model(n)``.

    The model draws ``n`` iid pairs inside ``pyro.plate("data", n)``, with one latent site and
    one observed site; everything but the plate dimension is an event dimension. The encoder
    p(h|x) and decoder p(x|h) of §14.3 of *Deep Learning* are derived from it.

    Args:
        model: the Pyro model, called as ``model(n)``.
        latent: name of the latent sample site.
        observed: name of the observed sample site.
        data_fn: optional ``() -> Tensor`` returning a real data set (rows are examples).
        name: a short name for reports; defaults to the function's name.

    Raises:
        ModelError: the model breaks the contract (the message says how to fix it).

    Examples:
        >>> import pyro, pyro.distributions as dist, torch
        >>> def model(n):
        ...     with pyro.plate("data", n):
        ...         h = pyro.sample("h", dist.Normal(0.0, 1.0).expand([n, 2]).to_event(1))
        ...         pyro.sample("x", dist.Normal(h @ torch.ones(2, 3), 0.5).to_event(1))
        >>> jm = JointModel(model)
        >>> h, x = jm.sample(10, seed=0)
        >>> tuple(h.shape), tuple(x.shape), tuple(jm.log_joint(h, x).shape)
        ((10, 2), (10, 3), (10,))
    """

    def __init__(
        self,
        model: Callable[[int], Any],
        latent: str = "h",
        observed: str = "x",
        data_fn: Callable[[], Any] | None = None,
        *,
        name: str | None = None,
        path: str | Path | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.name = name or (self.path.stem if self.path else getattr(model, "__name__", "model"))
        if not callable(model):
            raise ModelError(f"{self._where}: `model` must be a function model(n), got {model!r}")
        if not isinstance(latent, str) or not isinstance(observed, str):
            raise ModelError(
                f"{self._where}: site names must be strings, got {latent!r}, {observed!r}"
            )
        if latent == observed:
            raise ModelError(
                f"{self._where}: the latent and observed sites are both named {latent!r}; "
                "give them different names"
            )
        if data_fn is not None and not callable(data_fn):
            raise ModelError(f"{self._where}: `data` must be a function data() -> Tensor")
        self.model = model
        #: The executed script, for its constants (``None`` for a model function).
        self.module = None
        self.latent = latent
        self.observed = observed
        self._data_fn = data_fn
        self._validate()

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_file(cls, path: str | Path) -> JointModel:
        """Load a model script (see the model-script contract in the docs).

        The script is executed as a fresh module each time, so module constants follow the
        torch default dtype in force when it is loaded.

        Raises:
            ModelError: the file is missing, fails to execute, or breaks the contract.
        """
        path = Path(path)
        if not path.is_file():
            raise ModelError(
                f"model script {str(path)!r} does not exist; pass the path of a .py file"
            )
        if path.suffix != ".py":
            raise ModelError(f"model script {str(path)!r} is not a .py file")
        module_name = f"latentae_model_{path.stem}_{abs(hash(path.resolve()))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        # Registered while executing so that dataclasses and pickling inside the script work.
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as e:  # a script calling sys.exit() is broken too
            raise ModelError(
                f"model script {str(path)!r} failed to execute: {type(e).__name__}: {e}"
            ) from e
        finally:
            sys.modules.pop(module_name, None)
        model = getattr(module, "model", None)
        if model is None or not callable(model):
            raise ModelError(
                f"model script {str(path)!r} defines no function `model`; "
                "define `def model(n):` drawing n pairs inside pyro.plate('data', n)"
            )
        latent = getattr(module, "LATENT", "h")
        observed = getattr(module, "OBSERVED", "x")
        joint = cls(model, latent, observed, getattr(module, "data", None), path=path)
        joint.module = module
        return joint

    @property
    def _where(self) -> str:
        if self.path is not None:
            return f"model script {str(self.path)!r}"
        return f"model {self.name!r}"

    def _hint(self, attribute: str, keyword: str) -> str:
        if self.path is not None:
            return f"set {attribute} = ... in the script"
        return f"pass {keyword}=... to JointModel"

    def _trace(self, n: int, values: dict[str, torch.Tensor] | None = None) -> poutine.Trace:
        model = poutine.condition(self.model, data=values) if values else self.model
        return poutine.trace(model).get_trace(n)

    def _validate(self) -> None:
        # Two sizes: a per-example dimension left out of .to_event() that happens to equal
        # one probe size still differs from the other.
        for n in (_PROBE, _PROBE + 1):
            self._validate_at(n)

    def _validate_at(self, n: int) -> None:
        with seeded(0), pyro.validation_enabled(True):
            try:
                trace = self._trace(n)
            except Exception as e:
                hint = ""
                if "Shape mismatch inside plate" in str(e):
                    hint = (
                        "; the data plate must be the only batch dimension: declare per-example "
                        "dimensions as event dimensions with .to_event(...)"
                    )
                # Pyro appends a table of trace shapes to its shape errors: one line is enough.
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                raise ModelError(
                    f"{self._where}: model({n}) raised {type(e).__name__}: {first}{hint}"
                ) from e
        params = [name for name, s in trace.nodes.items() if s["type"] == "param"]
        if params:
            raise ModelError(
                f"{self._where}: site {params[0]!r} is a pyro.param; fixed parameters are "
                "module constants (plain tensors), not learnable Pyro parameters"
            )
        sites = {
            name: s
            for name, s in trace.nodes.items()
            if s["type"] == "sample" and not _is_deterministic(s) and not site_is_subsample(s)
        }
        for role, name, attribute, keyword in (
            ("latent", self.latent, "LATENT", "latent"),
            ("observed", self.observed, "OBSERVED", "observed"),
        ):
            if name not in sites:
                raise ModelError(
                    f"{self._where}: no sample site named {name!r} for the {role} variable "
                    f"(sample sites: {sorted(sites)}); name the {role} site {name!r} or "
                    f"{self._hint(attribute, keyword)}"
                )
        extra = sorted(set(sites) - {self.latent, self.observed})
        if extra:
            raise ModelError(
                f"{self._where}: sample site {extra[0]!r} is neither the latent site "
                f"{self.latent!r} nor the observed site {self.observed!r}; the contract allows "
                "exactly one of each: stack several latents into one site, or make a fixed "
                "quantity a module constant"
            )
        for name in (self.latent, self.observed):
            site = sites[name]
            if site["is_observed"]:
                raise ModelError(
                    f"{self._where}: site {name!r} is observed inside the script (obs=...); "
                    "observations enter by conditioning: remove obs= and pass data instead"
                )
            frames = [f for f in site["cond_indep_stack"] if f.name == "data"]
            if not frames:
                raise ModelError(
                    f"{self._where}: site {name!r} is outside pyro.plate('data', n); draw it "
                    "inside `with pyro.plate('data', n):`"
                )
            if frames[0].size != n:
                raise ModelError(
                    f"{self._where}: plate 'data' around site {name!r} has size {frames[0].size} "
                    f"but model({n}) was called; use pyro.plate('data', n) with the n argument"
                )
            fn = site["fn"]
            if tuple(fn.batch_shape) != (n,):
                raise ModelError(
                    f"{self._where}: site {name!r} has batch shape {tuple(fn.batch_shape)} in "
                    f"model({n}), expected ({n},): the data plate must be the only batch "
                    "dimension; declare per-example dimensions as event dimensions with "
                    ".to_event(...)"
                )
            value = site["value"]
            if tuple(value.shape) != (n, *fn.event_shape):
                raise ModelError(
                    f"{self._where}: site {name!r} has value shape {tuple(value.shape)}, "
                    f"expected {(n, *fn.event_shape)} (plate size, then event shape)"
                )
        h_site, x_site = sites[self.latent], sites[self.observed]
        if not torch.is_floating_point(x_site["value"]):
            raise ModelError(
                f"{self._where}: observed site {self.observed!r} has integer values "
                f"({x_site['value'].dtype}); use a distribution with floating-point values"
            )
        self.latent_shape = torch.Size(h_site["fn"].event_shape)
        self.observed_shape = torch.Size(x_site["fn"].event_shape)
        self.latent_support = h_site["fn"].support
        self.observed_support = x_site["fn"].support
        self.latent_is_discrete = bool(self.latent_support.is_discrete)
        self.dtype = x_site["value"].dtype
        self.latent_dtype = h_site["value"].dtype

    # ------------------------------------------------------------------ shapes

    @property
    def latent_dim(self) -> int:
        """Number of scalar entries in one latent value."""
        return math.prod(self.latent_shape)

    @property
    def observed_dim(self) -> int:
        """Number of scalar entries in one observation."""
        return math.prod(self.observed_shape)

    @property
    def has_data(self) -> bool:
        """Whether the script defines ``data()``."""
        return self._data_fn is not None

    def _as_observed(self, x: Any, what: str = "x") -> torch.Tensor:
        x = torch.as_tensor(x)
        if not torch.is_floating_point(x):
            x = x.to(self.dtype)
        event = tuple(self.observed_shape)
        if x.dim() < len(event) + 1 or tuple(x.shape[x.dim() - len(event) :]) != event:
            raise ValueError(
                f"{what} has shape {tuple(x.shape)} but {self._where} observes "
                f"{self.observed!r} with shape {event} per row; pass a tensor of shape "
                f"(n, {', '.join(map(str, event))})".replace(", )", ")")
            )
        return x

    def _as_latent(self, h: Any, what: str = "h") -> torch.Tensor:
        h = torch.as_tensor(h)
        event = tuple(self.latent_shape)
        if h.dim() < len(event) + 1 or tuple(h.shape[h.dim() - len(event) :]) != event:
            raise ValueError(
                f"{what} has shape {tuple(h.shape)} but {self._where} has latent "
                f"{self.latent!r} of shape {event} per row; pass a tensor of shape "
                f"(n, {', '.join(map(str, event))})".replace(", )", ")")
            )
        return h

    def _pair(self, h: Any, x: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Size]:
        h, x = self._as_latent(h), self._as_observed(x)
        hb = h.shape[: h.dim() - len(self.latent_shape)]
        xb = x.shape[: x.dim() - len(self.observed_shape)]
        try:
            batch = torch.broadcast_shapes(hb, xb)
        except RuntimeError:
            raise ValueError(
                f"h and x have batch shapes {tuple(hb)} and {tuple(xb)}, which do not broadcast"
            ) from None
        h = h.expand(*batch, *self.latent_shape)
        x = x.expand(*batch, *self.observed_shape)
        return h, x, batch

    # ------------------------------------------------------------------ densities

    def _site_log_probs(self, h: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, x, batch = self._pair(h, x)
        n = math.prod(batch)
        values = {
            self.latent: h.reshape(n, *self.latent_shape),
            self.observed: x.reshape(n, *self.observed_shape),
        }
        trace = self._trace(n, values)
        trace.compute_log_prob()
        return (
            trace.nodes[self.latent]["log_prob"].reshape(batch),
            trace.nodes[self.observed]["log_prob"].reshape(batch),
        )

    def log_joint(self, h: Any, x: Any) -> torch.Tensor:
        """log p_model(h, x) per row, shape ``(n,)`` (any leading batch shape broadcasts)."""
        lp_h, lp_x = self._site_log_probs(h, x)
        return lp_h + lp_x

    def log_prior(self, h: Any) -> torch.Tensor:
        """log p_model(h) per row."""
        h = self._as_latent(h)
        batch = h.shape[: h.dim() - len(self.latent_shape)]
        n = math.prod(batch)
        trace = self._trace(n, {self.latent: h.reshape(n, *self.latent_shape)})
        site = trace.nodes[self.latent]
        return site["fn"].log_prob(site["value"]).reshape(batch)

    def log_likelihood(self, x: Any, h: Any) -> torch.Tensor:
        """log p_model(x | h) per row."""
        return self._site_log_probs(h, x)[1]

    # ------------------------------------------------------------------ sampling

    def sample(self, n: int, *, seed: Seed = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` iid pairs ``(h, x)`` from p_model(h, x).

        Args:
            n: number of pairs.
            seed: an int or ``torch.Generator`` for reproducible draws; ``None`` uses torch's
                global RNG.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        with seeded(seed), torch.no_grad():
            trace = self._trace(n)
        return trace.nodes[self.latent]["value"], trace.nodes[self.observed]["value"]

    def prior(self, n: int = 1) -> Distribution:
        """The prior p_model(h) as a distribution with batch shape ``(n,)``."""
        with torch.no_grad():
            return self._trace(n).nodes[self.latent]["fn"]

    def data(self, n: int | None = None, *, seed: Seed = 0) -> torch.Tensor:
        """The script's data set, or ``n`` rows simulated from the model (default 2000).

        With a ``data()`` function, ``n`` takes the first ``n`` rows. The data are checked
        for shape and finite values.

        Raises:
            ModelError: ``data()`` fails or returns rows of the wrong shape or non-finite values.
        """
        if self._data_fn is None:
            return self.sample(DEFAULT_SIMULATED if n is None else n, seed=seed)[1]
        try:
            raw = self._data_fn()
            x = torch.as_tensor(raw, dtype=self.dtype) if not torch.is_tensor(raw) else raw
        except Exception as e:
            raise ModelError(f"{self._where}: data() raised {type(e).__name__}: {e}") from e
        if not torch.is_floating_point(x):
            x = x.to(self.dtype)
        if tuple(x.shape[1:]) != tuple(self.observed_shape) or x.dim() < 1:
            raise ModelError(
                f"{self._where}: data() returned shape {tuple(x.shape)}, expected "
                f"(rows, {', '.join(map(str, self.observed_shape))}) to match site "
                f"{self.observed!r}".replace(", )", ")")
            )
        try:
            check_finite(x, f"{self._where}: data()")
        except ValueError as e:
            raise ModelError(str(e)) from None
        if n is not None:
            if n > x.shape[0]:
                raise ValueError(f"asked for {n} rows but {self._where} has {x.shape[0]}")
            x = x[:n]
        return x

    # ------------------------------------------------------------------ the two maps

    def decoder(self) -> Conditional:
        """The exact decoder p_model(x | h), vectorized over rows.

        Examples:
            >>> jm = JointModel.from_file("models/ppca.py")
            >>> h, x = jm.sample(4, seed=0)
            >>> bool(torch.allclose(jm.decoder()(h).log_prob(x), jm.log_likelihood(x, h)))
            True
        """
        from latentae.posterior import ModelDecoder

        return ModelDecoder(self)

    def encoder(self, method: str = "auto", **options: Any) -> Conditional:
        """The encoder p_model(h | x) computed by ``method``.

        Args:
            method: ``"enumerate"`` (exact, finite h), ``"laplace"`` (exact for linear-Gaussian
                models), ``"importance"``, ``"nuts"``, ``"amortized"``, or ``"auto"``
                (enumerate for a discrete latent, laplace otherwise).
            **options: passed to the method's class in [`latentae.posterior`][].

        Examples:
            >>> jm = JointModel.from_file("models/mixture.py")
            >>> h, x = jm.sample(5, seed=0)
            >>> tuple(jm.encoder("enumerate")(x).probs.shape)
            (5, 3)
        """
        from latentae import amortized, posterior

        if method == "auto":
            method = "enumerate" if self.latent_is_discrete else "laplace"
        classes = {
            "enumerate": posterior.EnumerateEncoder,
            "laplace": posterior.LaplaceEncoder,
            "importance": posterior.ImportanceEncoder,
            "nuts": posterior.NUTSEncoder,
            "amortized": amortized.AmortizedEncoder.fit,
        }
        if method not in classes:
            raise ValueError(
                f"unknown encoder method {method!r}; choose one of {', '.join(ENCODER_METHODS)}"
            )
        return classes[method](self, **options)

    def exact_methods(self) -> list[str]:
        """Encoder methods that are exact (up to numerical error) for this model."""
        if self.latent_is_discrete:
            return ["enumerate"]
        return ["laplace"] if _is_linear_gaussian(self) else []

    def __repr__(self) -> str:
        return (
            f"JointModel({self.name!r}, latent={self.latent!r}{tuple(self.latent_shape)}, "
            f"observed={self.observed!r}{tuple(self.observed_shape)})"
        )


def _is_linear_gaussian(jm: JointModel) -> bool:
    """Whether h has a Gaussian prior and x|h is Gaussian with a mean affine in h.

    Checked numerically on probe points: the decoder's covariance must not depend on h and
    its mean must be affine (second differences vanish).
    """
    from pyro.distributions import MultivariateNormal, Normal

    def gaussian(d: Distribution) -> bool:
        while hasattr(d, "base_dist"):
            if not isinstance(d, torch.distributions.Independent):
                return False
            d = d.base_dist
        return isinstance(d, Normal | MultivariateNormal | torch.distributions.Normal)

    if jm.latent_support is not constraints.real and not (
        isinstance(jm.latent_support, constraints.independent)
        and jm.latent_support.base_constraint is constraints.real
    ):
        return False
    if not gaussian(jm.prior()):
        return False
    with seeded(1), torch.no_grad():
        h = jm.sample(3)[0].to(jm.dtype)
        h = torch.stack([h[0], h[1], 2 * h[1] - h[0], h[2]])
        d = jm.decoder()(h)
        if not gaussian(d):
            return False
        mean = d.mean.reshape(4, -1)
        var = d.variance.reshape(4, -1)
    scale = mean.abs().max() + 1
    affine = torch.allclose(
        mean[2] - 2 * mean[1] + mean[0], torch.zeros_like(mean[0]), atol=1e-5 * scale
    )
    homoscedastic = torch.allclose(var, var[:1].expand_as(var), rtol=1e-5)
    return bool(affine and homoscedastic)
