"""Helpers shared by the subcommands: printing, number formatting, device checks, versions."""

from __future__ import annotations

import argparse
import contextlib
import math
import platform
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


PROG = "latentae"

# Errors that mean "the input is wrong", not "latentae is broken": ModelError is a ValueError,
# FileNotFoundError and PermissionError are OSErrors, FloatingPointError an ArithmeticError;
# a RuntimeError mostly comes from torch evaluating the user's model on bad shapes or values.
USER_ERRORS = (ValueError, OSError, ArithmeticError, RuntimeError)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("latentae")
    except PackageNotFoundError:  # running from a source tree that was never installed
        from latentae import __version__

        return __version__


def _say(args: argparse.Namespace, text: str = "") -> None:
    if not getattr(args, "quiet", False):
        print(text)


def _describe_support(constraint: Any) -> str:
    """A short human name for a torch constraint ("real", "integers 0..2", ...)."""
    from torch.distributions import constraints

    while isinstance(constraint, constraints.independent):
        constraint = constraint.base_constraint
    if constraint is constraints.real:
        return "real"
    if isinstance(constraint, constraints.boolean.__class__):
        return "{0, 1}"
    lower = getattr(constraint, "lower_bound", None)
    upper = getattr(constraint, "upper_bound", None)
    if isinstance(constraint, constraints.integer_interval):
        return f"integers {_num(lower)}..{_num(upper)}"
    if isinstance(constraint, constraints.interval | constraints.half_open_interval):
        return f"interval [{_num(lower)}, {_num(upper)}]"
    if isinstance(constraint, constraints.greater_than):
        return f"greater than {_num(lower)}"
    return str(constraint)


def _num(value: Any) -> str:
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value)


def _finite_or_none(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _tolist(t: torch.Tensor) -> Any:
    """A tensor as (nested lists of) floats, with non-finite values as ``None`` for JSON."""
    values = t.double().tolist()
    if isinstance(values, float):
        return _finite_or_none(values)

    def clean(v: Any) -> Any:
        return [clean(u) for u in v] if isinstance(v, list) else _finite_or_none(v)

    return clean(values)


def _check_device(device: str, learned: str | None) -> str:
    """Check ``--device``; ``learned`` names what would run on it (``None``: nothing)."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a torch device; use cpu or cuda") from None
    if dev.type != "cpu" and learned is None:
        raise ValueError(
            f"--device {device} applies only to learned networks (--method amortized or the "
            "DAE); this run evaluates the model on the CPU and trains nothing, so drop --device"
        )
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: torch sees no CUDA device here; use --device cpu")
    return device


def _import_arviz() -> Any:
    # The command draws into files only: ArviZ's pyplot figures need no window.
    import matplotlib

    matplotlib.use("Agg")
    # arviz 0.23 announces its 1.0 refactor with a FutureWarning on import: noise for a
    # command-line user, who cannot act on it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
        warnings.filterwarnings("ignore", message=".*ArviZ is undergoing", category=FutureWarning)
        import arviz as az
    return az


def _versions(az: Any) -> dict[str, str]:
    """Versions of what a result depends on (arviz only where it was used)."""
    import pyro
    import torch

    versions = {"latentae": _version(), "torch": torch.__version__, "pyro": pyro.__version__}
    if az is not None:
        versions["arviz"] = az.__version__
    return {**versions, "python": platform.python_version()}


def _interrupted(error: KeyboardInterrupt) -> str:
    """The one line for Ctrl-C: where the checkpoint is and how to go on, if one was written."""
    dae = sys.modules.get("latentae.dae")
    if dae is None or not isinstance(error, dae.TrainingInterrupted):
        return f"{PROG}: interrupted"
    if error.checkpoint is None:
        return f"{PROG}: training interrupted at step {error.step}; no checkpoint was written"
    return (
        f"{PROG}: training interrupted at step {error.step}; checkpoint written to "
        f"{str(error.checkpoint)!r}; rerun the same command with --resume to continue"
    )


def _flat(values: Any) -> list[Any]:
    if isinstance(values, list):
        return [v for u in values for v in _flat(u)]
    return [values]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _convergence(az: Any, idata: Any) -> dict[str, dict[str, Any]]:
    """Per posterior variable: the largest R-hat and the smallest bulk ESS over its entries.

    A row whose draws are all equal (a discrete posterior concentrated on one value) has an
    undefined R-hat; such entries are counted apart and left out of the maximum.
    """
    import numpy as np

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # arviz divides by a zero within-chain variance for constant draws.
        warnings.simplefilter("ignore", RuntimeWarning)
        rhat = az.rhat(idata)
        ess = az.ess(idata, method="bulk")
    out = {}
    for name in idata.posterior.data_vars:
        r = np.asarray(rhat[name].values, dtype=float).reshape(-1)
        e = np.asarray(ess[name].values, dtype=float).reshape(-1)
        fr, fe = r[np.isfinite(r)], e[np.isfinite(e)]
        out[name] = {
            "r_hat_max": float(fr.max()) if fr.size else None,
            "ess_bulk_min": float(fe.min()) if fe.size else None,
            "r_hat_undefined": int(r.size - fr.size),
            "entries": int(r.size),
        }
    return out


def _model_data(jm: Any, args: argparse.Namespace) -> tuple[Any, str]:
    """The rows a command works on and where they came from: ``--data PATH`` (checked
    against the model's observed site), else the script's ``data()``, else rows simulated
    from the model."""
    path = getattr(args, "data", None)
    if path is not None:
        from latentae.data import load_table

        return load_table(path, jm), str(path)
    return jm.data(seed=args.seed), "script" if jm.has_data else "simulated"


@contextlib.contextmanager
def _writing(out: Path) -> Iterator[None]:
    """Hold ``out``'s lock (two runs pointed at one folder would mix their files) while a
    command writes there; a folder this made and that is still empty at the end (the command
    failed before writing anything) is removed again, so a failed run leaves no trace."""
    from latentae.locking import output_lock

    existed = out.exists()
    try:
        with output_lock(out):
            yield
    finally:
        if not existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def _model_and_out(args: argparse.Namespace, learned: str | None) -> tuple[Any, Path]:
    """Load ``args.model``, check ``--device`` (``learned``: what would run on it) and
    resolve ``--out`` (default ``runs/<model name>``), which must not be a file."""
    from latentae.joint import JointModel

    jm = JointModel.from_file(args.model)
    _check_device(args.device, learned)
    out = args.out if args.out is not None else Path("runs") / jm.name
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {str(out)!r} is a file, not a folder")
    return jm, out
