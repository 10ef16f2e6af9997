"""The ``latentae`` command.

Each subcommand is a pair: ``_add_<name>(subparsers, parents)`` declares its arguments and
``_cmd_<name>(args) -> int`` runs it. Flags shared by several subcommands live in the parent
parsers built by :func:`_parents`, so a new subcommand composes them instead of redeclaring.
Commands print; the library functions they call return results and never print.

Errors a user can fix (a broken model script, a bad argument, an unwritable folder, a corrupt
checkpoint, a diverged training run) become one line on stderr, ``latentae: error: <message>``,
and exit code 2; ``--debug`` adds the traceback. Ctrl-C during DAE training writes a checkpoint
and exits with code 130, saying how to resume.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from latentae.joint import ENCODER_METHODS

if TYPE_CHECKING:
    import torch

    from latentae.corruption import Corruption
    from latentae.dae import FitResult
    from latentae.joint import JointModel

__all__ = ["main"]

PROG = "latentae"
RUN_METHODS = ("auto", *ENCODER_METHODS)
# Errors that mean "the input is wrong", not "latentae is broken": ModelError is a ValueError,
# FileNotFoundError and PermissionError are OSErrors, FloatingPointError an ArithmeticError;
# a RuntimeError mostly comes from torch evaluating the user's model on bad shapes or values.
USER_ERRORS = (ValueError, OSError, ArithmeticError, RuntimeError)
# Draws per chunk when evaluating the decoder, so memory stays bounded for many draws.
_LOGLIK_CHUNK = 1000
# Vehtari et al. (2021) recommend R-hat < 1.01; below ~100 effective particles an importance
# estimate is unreliable (Owen 2013, ch. 9).
_RHAT_LIMIT = 1.01
_WEIGHTS_ESS_LIMIT = 100
# Latent entries per row shown in the printed summary; report.json has them all.
_SHOWN = 4

# DAE training defaults. 3000 steps of batch 128 is ~200 passes over 2000 rows: enough for
# the loss of the bundled models to flatten, and `latentae run models/ppca.py` stays well
# under a minute on 2 CPU cores.
DEFAULT_STEPS = 3000
DEFAULT_BATCH_SIZE = 128
DEFAULT_LR = 1e-3
DEFAULT_HIDDEN = (64, 64)
# The encoder's injected noise (fig. 14.2), in the code's units.
ENCODER_NOISE = 0.1
# Default corruption: bit flips for binary x; otherwise Gaussian noise at this fraction of
# the data's mean per-feature standard deviation, small enough that x̃ stays near the data
# manifold, so (r(x) - x) / sigma^2 estimates the score (Alain & Bengio 2014).
DEFAULT_BIT_FLIP = 0.1
DEFAULT_SIGMA_FRACTION = 0.1
# A discrete latent has no continuous code to copy: the DAE gets a code this wide.
DISCRETE_CODE_DIM = 2
# Intra-op threads for DAE training on the CPU. Networks of a few thousand weights on batches
# of 128 rows cost less per op than the threads' synchronization: on 2 cores, 1 thread ran
# ppca's DAE at ~1.5 ms/step and 2 threads at ~20 ms/step while the other core was busy.
DEFAULT_THREADS = 1
# Fraction of the training rows that fit() holds out to score the validation NLL.
VALIDATION_FRACTION = 0.1
# The "final" training loss is also reported as the mean over this many last steps.
_FINAL_WINDOW = 100
# Each corruption's one parameter in --corruption NAME:VALUE.
_CORRUPTIONS = {"gaussian": "sigma", "masking": "p", "salt_and_pepper": "p", "bit_flip": "p"}
_CORRUPTION_FORMS = "gaussian:SIGMA, masking:P, salt_and_pepper:P or bit_flip:P"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _int_at_least(least: int, what: str) -> Callable[[str], int]:
    """An argparse type for integers >= ``least``, with ``what`` in its error messages."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonnegative_int = _int_at_least(0, "a non-negative integer")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def _hidden_arg(text: str) -> tuple[int, ...]:
    """``"64,64"`` -> ``(64, 64)``; the empty string is an affine map, ``()``."""
    if not text.strip():
        return ()
    widths = []
    for part in text.split(","):
        try:
            width = int(part.strip())
        except ValueError:
            width = 0
        if width < 1:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated positive layer widths such as 64,64 (or '' for an "
                f"affine map), got {text!r}"
            )
        widths.append(width)
    return tuple(widths)


def _corruption_arg(text: str) -> Corruption:
    """``"masking:0.25"`` -> ``Masking(0.25)``: a corruption name and its one parameter."""
    name, _, value = text.partition(":")
    key = name.strip().lower().replace("-", "_")
    if key not in _CORRUPTIONS:
        raise argparse.ArgumentTypeError(
            f"unknown corruption {name.strip()!r} in {text!r}; use {_CORRUPTION_FORMS}"
        )
    param = _CORRUPTIONS[key]
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} needs a number after the colon, the {param}: write {key}:"
            f"{param.upper()}, e.g. {key}:0.1"
        ) from None
    from latentae.corruption import from_config

    try:
        return from_config({"name": key, param: number})
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("latentae")
    except PackageNotFoundError:  # running from a source tree that was never installed
        from latentae import __version__

        return __version__


# ---------------------------------------------------------------------------- parsers


def _parents() -> dict[str, argparse.ArgumentParser]:
    """Parent parsers holding the flags that subcommands share.

    ``base``: ``--quiet``, ``--debug`` (every subcommand). ``output``: ``--out``, ``--seed``,
    ``--device`` (subcommands that compute and write results). ``train``: the DAE training
    flags (subcommands that train a denoising autoencoder).
    """
    base = _Parser(add_help=False)
    group = base.add_argument_group("common options")
    group.add_argument("--quiet", action="store_true", help="print nothing on success")
    group.add_argument(
        "--debug", action="store_true", help="show the full traceback when a command fails"
    )
    output = _Parser(add_help=False)
    group = output.add_argument_group("output and randomness")
    group.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder for the results (default: runs/<model name>/)",
    )
    group.add_argument(
        "--seed", type=int, default=0, metavar="INT", help="seed for every random draw (default: 0)"
    )
    group.add_argument(
        "--device",
        default="cpu",
        help="torch device for learned networks (the DAE, --method amortized), e.g. cuda "
        "(default: cpu); model-derived computations run on the CPU",
    )
    train = _Parser(add_help=False)
    group = train.add_argument_group(
        "DAE training",
        "The DAE is a GaussianEncoder q(h | x~) with injected noise 0.1 and a code as wide as\n"
        "the model's latent (a discrete latent: max(2, its entries)), and a decoder from the\n"
        "observed site's support: BernoulliDecoder for binary x, else GaussianDecoder with\n"
        "diagonal covariance. 10% of the training rows are held out for the validation NLL.",
    )
    group.add_argument(
        "--steps",
        type=_positive_int,
        default=DEFAULT_STEPS,
        metavar="INT",
        help=f"optimizer steps (default: {DEFAULT_STEPS})",
    )
    group.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULT_BATCH_SIZE,
        metavar="INT",
        help=f"rows per step (default: {DEFAULT_BATCH_SIZE})",
    )
    group.add_argument(
        "--lr",
        type=_positive_float,
        default=DEFAULT_LR,
        metavar="FLOAT",
        help=f"Adam learning rate (default: {DEFAULT_LR:g})",
    )
    group.add_argument(
        "--corruption",
        type=_corruption_arg,
        default=None,
        metavar="NAME:VALUE",
        help=f"the corruption C(x~ | x): {_CORRUPTION_FORMS} (default: "
        f"bit_flip:{DEFAULT_BIT_FLIP:g} for binary x, else gaussian with sigma = "
        f"{DEFAULT_SIGMA_FRACTION:g} x the mean per-feature standard deviation of the "
        "training data)",
    )
    group.add_argument(
        "--hidden",
        type=_hidden_arg,
        default=DEFAULT_HIDDEN,
        metavar="W1,W2,...",
        help="hidden layer widths of the encoder and the decoder; '' for affine maps "
        f"(default: {','.join(map(str, DEFAULT_HIDDEN))})",
    )
    group.add_argument(
        "--walkback",
        type=_nonnegative_int,
        default=0,
        metavar="INT",
        help="walkback steps per example (Bengio et al. 2013; default: 0, a plain DAE)",
    )
    group.add_argument(
        "--threads",
        type=_positive_int,
        default=DEFAULT_THREADS,
        metavar="INT",
        help="CPU threads for DAE training (default: 1; the default networks are so small "
        "that more threads mostly add synchronization; try more for wide --hidden)",
    )
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/checkpoint.pt, written by an earlier (or interrupted) run with "
        "the same settings; a finished checkpoint is just reloaded",
    )
    return {"base": base, "output": output, "train": train}


def _subparser(
    subparsers: Any,
    name: str,
    parents: Sequence[argparse.ArgumentParser],
    summary: str,
    description: str,
    example: str,
) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name,
        parents=list(parents),
        help=summary,
        description=f"{description}\n\nexample:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_run(subparsers: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = _subparser(
        subparsers,
        "run",
        [parents["base"], parents["output"], parents["train"]],
        "sample the posterior of held-out rows, train a DAE, write report.json and plots",
        "Load a model script, take its data (data() or 2000 rows simulated from the model),\n"
        "hold out the last rows, draw from the encoder p(h | x) for each held-out row and\n"
        "write posterior.nc (ArviZ InferenceData) and report.json (posterior means and sds,\n"
        "R-hat, ESS, the held-out log-likelihood, timings) into --out. Then train a\n"
        "denoising autoencoder on the other rows (as 'latentae fit' does), write\n"
        'checkpoint.pt and loss.png and add its figures to report.json under "dae"\n'
        "(--no-dae skips it).",
        "latentae run models/ppca.py --out runs/ppca --num-samples 1000 --seed 1",
    )
    p.add_argument("model", type=Path, metavar="MODEL.py", help="the model script")
    p.add_argument(
        "--method",
        choices=RUN_METHODS,
        default="auto",
        help="how to compute p(h | x): auto = enumerate for a discrete latent, else laplace "
        "(default: auto)",
    )
    p.add_argument(
        "--num-heldout",
        type=_positive_int,
        default=5,
        metavar="INT",
        help="rows held out at the end of the data (default: 5)",
    )
    p.add_argument(
        "--num-samples",
        type=_positive_int,
        default=1000,
        metavar="INT",
        help="posterior draws per chain (default: 1000)",
    )
    p.add_argument(
        "--num-chains",
        type=_positive_int,
        default=4,
        metavar="INT",
        help="chains per held-out row (default: 4)",
    )
    p.add_argument(
        "--no-dae",
        action="store_true",
        help="skip the DAE training: write only posterior.nc and report.json",
    )
    p.set_defaults(func=_cmd_run)


def _add_fit(subparsers: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = _subparser(
        subparsers,
        "fit",
        [parents["base"], parents["output"], parents["train"]],
        "train a denoising autoencoder on a model's data; write checkpoint.pt and loss.png",
        "Load a model script, take all its data (data() or 2000 rows simulated from the\n"
        "model) and train an encoder q(h | x~) and a decoder p(x | h) as a denoising\n"
        "autoencoder (eq. 14.14 of Deep Learning). Writes into --out: checkpoint.pt (load it\n"
        "with latentae.load_checkpoint), loss.png (training loss and validation NLL per\n"
        "step) and training.json (steps, final losses, wall time, steps/s, the full\n"
        "configuration). Ctrl-C writes the checkpoint first; rerun with --resume to go on.",
        "latentae fit models/binary.py --out runs/binary --steps 5000 --hidden 128,128",
    )
    p.add_argument("model", type=Path, metavar="MODEL.py", help="the model script")
    p.set_defaults(func=_cmd_fit)


def _add_info(subparsers: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = _subparser(
        subparsers,
        "info",
        [parents["base"]],
        "show a model script's sites, shapes, supports and exact encoders",
        "Load a model script, check it against the model-script contract and describe it:\n"
        "its latent and observed sites with their shapes and supports, whether it has real\n"
        "data, and which encoder methods are exact for it. With --quiet it only checks the\n"
        "script: exit code 0 if it meets the contract, 2 with the reason on stderr if not.",
        "latentae info models/mixture.py",
    )
    p.add_argument("model", type=Path, metavar="MODEL.py", help="the model script")
    p.set_defaults(func=_cmd_info)


_COMMANDS: tuple[Callable[[Any, dict[str, argparse.ArgumentParser]], None], ...] = (
    _add_run,
    _add_fit,
    _add_info,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``latentae`` argument parser with every subcommand."""
    parser = _Parser(
        prog=PROG,
        description="latentae: latent-variable models as stochastic autoencoders.",
        epilog="run 'latentae COMMAND --help' for a command's options and an example",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(
        title="commands", metavar="COMMAND", dest="command", required=True, parser_class=_Parser
    )
    parents = _parents()
    for add in _COMMANDS:
        add(subparsers, parents)
    return parser


# ---------------------------------------------------------------------------- helpers


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


def _resolve_method(jm: JointModel, method: str) -> str:
    if method == "auto":
        return "enumerate" if jm.latent_is_discrete else "laplace"
    return method


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
    # arviz 0.23 announces its 1.0 refactor with a FutureWarning on import: noise for a
    # command-line user, who cannot act on it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
        warnings.filterwarnings("ignore", message=".*ArviZ is undergoing", category=FutureWarning)
        import arviz as az
    return az


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


def _sample_stats_summary(idata: Any) -> dict[str, Any]:
    """Sample statistics in one figure each: how many divergent draws, the lowest ESS."""
    import numpy as np

    if "sample_stats" not in idata.groups():
        return {}
    out: dict[str, Any] = {}
    for name, var in idata.sample_stats.data_vars.items():
        values = np.asarray(var.values)
        if values.dtype == bool:
            out[f"{name}_count"] = int(values.sum())
        else:
            out[f"{name}_min"] = _finite_or_none(np.nanmin(values.astype(float)))
    return out


def _run_warnings(convergence: dict[str, dict[str, Any]], stats: dict[str, Any]) -> list[str]:
    """Plain-language warnings about draws that should not be trusted as they are."""
    out = []
    for name, c in convergence.items():
        if c["r_hat_max"] is not None and c["r_hat_max"] > _RHAT_LIMIT:
            out.append(
                f"r_hat of {name!r} reaches {c['r_hat_max']:.3g} > {_RHAT_LIMIT}: the chains "
                "disagree (a multimodal posterior or too few draws); raise --num-samples or "
                "compare methods"
            )
    ess = stats.get("weights_ess_min")
    if ess is not None and ess < _WEIGHTS_ESS_LIMIT:
        out.append(
            f"the importance weights' effective sample size drops to {ess:.3g} for some row: "
            "the draws repeat a few particles, so R-hat and ESS overstate their quality; "
            "use --method nuts or amortized"
        )
    if stats.get("diverging_count"):
        out.append(
            f"{stats['diverging_count']} divergent NUTS transitions: the draws may be biased"
        )
    return out


def _heldout_loglik(jm: JointModel, draws: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """E_{h ~ draws} log p(x | h) per held-out row, from draws shaped (S, rows, *latent)."""
    import torch

    dec = jm.decoder()
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    with torch.no_grad():
        for chunk in draws.split(_LOGLIK_CHUNK):
            total += dec(chunk).log_prob(x).double().sum(0)
    return total / draws.shape[0]


def _posterior_rows(jm: JointModel, draws: torch.Tensor, rows: Sequence[int]) -> list[dict]:
    """Per held-out row: the posterior mean and sd of h from the draws (and the mode for a
    discrete latent, where the mean of labels is rarely what one wants)."""
    import torch

    values = draws.double()
    mean, sd = values.mean(0), values.std(0)
    out = []
    for i, row in enumerate(rows):
        entry: dict[str, Any] = {"row": int(row), "mean": _tolist(mean[i]), "sd": _tolist(sd[i])}
        if jm.latent_is_discrete:
            flat = draws[:, i].reshape(draws.shape[0], -1)
            unique, counts = torch.unique(flat, dim=0, return_counts=True)
            best = int(counts.argmax())
            mode = unique[best].reshape(jm.latent_shape)
            entry["mode"] = mode.item() if mode.dim() == 0 else mode.tolist()
            entry["mode_frequency"] = float(counts[best]) / draws.shape[0]
        out.append(entry)
    return out


def _versions(az: Any) -> dict[str, str]:
    """Versions of what a result depends on (arviz only where it was used)."""
    import pyro
    import torch

    versions = {"latentae": _version(), "torch": torch.__version__, "pyro": pyro.__version__}
    if az is not None:
        versions["arviz"] = az.__version__
    return {**versions, "python": platform.python_version()}


# ---------------------------------------------------------------------------- DAE training


@dataclass
class _DAEPlan:
    """Everything a DAE training run needs, checked before anything is written."""

    encoder: Any
    decoder: Any
    corruption: Corruption
    corruption_source: str
    x: torch.Tensor
    checkpoint: Path
    resumed_from: int | None


def _spec(corruption: Corruption) -> str:
    """A corruption as --corruption writes it, e.g. ``masking:0.25``."""
    config = corruption.to_config()
    name = config.pop("name")
    return ":".join([name, *(f"{v:g}" for v in config.values())][:2])


def _is_binary(support: Any) -> bool:
    from torch.distributions import constraints

    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return isinstance(support, constraints.boolean.__class__)


def _code_dim(jm: JointModel) -> int:
    """Width of the DAE's code h: the model's latent dimension, or for a discrete latent (a
    label, with no continuous code to copy) a small continuous code."""
    if jm.latent_is_discrete:
        return max(DISCRETE_CODE_DIM, jm.latent_dim)
    return jm.latent_dim


def _default_corruption(jm: JointModel, x: torch.Tensor) -> tuple[Corruption, str]:
    from latentae.corruption import BitFlip, Gaussian

    if _is_binary(jm.observed_support):
        return BitFlip(DEFAULT_BIT_FLIP), "default for binary x"
    spread = float(x.double().std(0).mean())
    sigma = DEFAULT_SIGMA_FRACTION * spread
    if not 0 < sigma < math.inf:
        raise ValueError(
            f"the training data of {jm._where} have no spread (mean feature sd {spread:g}), so "
            "the default Gaussian corruption is undefined; pass --corruption NAME:VALUE"
        )
    source = f"default: {DEFAULT_SIGMA_FRACTION:g} x the mean per-feature sd {spread:.4g}"
    return Gaussian(sigma), source


def _prepare_dae(jm: JointModel, x: torch.Tensor, args: argparse.Namespace, out: Path) -> _DAEPlan:
    """Choose and build the DAE for ``jm``'s training rows ``x``; check the corruption on
    the data and any checkpoint to resume, so that a bad setting fails before training."""
    import torch

    from latentae._util import seeded
    from latentae.checkpoint import load_checkpoint
    from latentae.units import BernoulliDecoder, GaussianDecoder, GaussianEncoder

    if x.shape[0] == 0:
        raise ValueError(
            "no rows are left to train the DAE on; hold out fewer rows (--num-heldout) or "
            "pass --no-dae"
        )
    x = x.reshape(x.shape[0], -1)
    if args.corruption is not None:
        corruption, source = args.corruption, "--corruption"
    else:
        corruption, source = _default_corruption(jm, x)
    x_dim, h_dim = x.shape[1], _code_dim(jm)
    with seeded(args.seed), torch.no_grad():
        try:
            x_tilde = corruption.sample(x)
        except ValueError as e:
            raise ValueError(
                f"--corruption {_spec(corruption)} does not fit the data of {jm._where}: {e}; "
                "or pick another --corruption"
            ) from None
        encoder = GaussianEncoder(x_dim, h_dim, hidden=args.hidden, noise=ENCODER_NOISE)
        if _is_binary(jm.observed_support):
            decoder = BernoulliDecoder(h_dim, x_dim, hidden=args.hidden)
        else:
            decoder = GaussianDecoder(h_dim, x_dim, hidden=args.hidden, cov="diag")
        encoder, decoder = encoder.to(x.dtype), decoder.to(x.dtype)
        # The encoder sees corrupted rows, so it is standardized on them (a feature that is
        # constant in the data is not constant in x~). The decoder's input is the code: it
        # is standardized on the codes the untrained encoder gives, its output on x.
        encoder.standardize(x_tilde)
        decoder.standardize(encoder(x_tilde).sample(), x)
    checkpoint = out / "checkpoint.pt"
    resumed_from = None
    if args.resume and checkpoint.exists():
        state = load_checkpoint(checkpoint)
        # fit() checks the training settings; the networks' shapes are checked here, so a
        # different --hidden gets a plain message instead of load_state_dict's key lists.
        for role, module in (("encoder", encoder), ("decoder", decoder)):
            saved = {k: tuple(v.shape) for k, v in state.get(role, {}).items()}
            built = {k: tuple(v.shape) for k, v in module.state_dict().items()}
            if saved != built:
                raise ValueError(
                    f"the {role} in checkpoint {str(checkpoint)!r} has other shapes than "
                    f"this run's {type(module).__name__} with --hidden "
                    f"{','.join(map(str, args.hidden)) or repr('')}; resume with the "
                    "settings it was written with, or drop --resume to start afresh"
                )
        resumed_from = int(state["step"])
    return _DAEPlan(encoder, decoder, corruption, source, x, checkpoint, resumed_from)


def _unit_info(module: Any) -> dict[str, Any]:
    info: dict[str, Any] = {"class": type(module).__name__}
    for name in ("x_dim", "h_dim", "hidden", "noise", "cov"):
        if hasattr(module, name):
            value = getattr(module, name)
            info[name] = list(value) if isinstance(value, tuple) else value
    info["parameters"] = sum(p.numel() for p in module.parameters())
    return info


def _train_dae(jm: JointModel, plan: _DAEPlan, args: argparse.Namespace) -> dict[str, Any]:
    """Train the planned DAE, write its loss plot, and return its figures for the reports."""
    import torch

    from latentae.dae import fit
    from latentae.plots import loss_curve, save_figure

    threads = torch.get_num_threads()
    if torch.device(args.device).type == "cpu":
        torch.set_num_threads(args.threads)
    try:
        result = _fit(fit, plan, args)
    finally:
        torch.set_num_threads(threads)
    rows = result.config.get("train_rows")
    title = f"{jm.name}: DAE training"
    if rows is not None:
        title += f" on {rows} rows ({plan.x.shape[0] - rows} for validation)"
    fig = loss_curve(result.history, result.validation)
    fig.axes[0].set_title(title)
    plot = save_figure(fig, plan.checkpoint.parent / "loss.png")
    return _dae_section(result, plan, args, plot)


def _fit(fit: Callable[..., FitResult], plan: _DAEPlan, args: argparse.Namespace) -> FitResult:
    return fit(
        plan.encoder,
        plan.decoder,
        plan.x,
        plan.corruption,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        walkback=args.walkback,
        validation=VALIDATION_FRACTION,
        device=args.device,
        seed=args.seed,
        checkpoint=plan.checkpoint,
        resume=args.resume,
        progress=not args.quiet,
    )


def _dae_section(
    result: FitResult, plan: _DAEPlan, args: argparse.Namespace, plot: Path
) -> dict[str, Any]:
    losses, nll = result.history["loss"], result.validation["nll"]
    done = result.steps - (plan.resumed_from or 0)
    train_rows = result.config.get("train_rows")
    config = {
        **result.config,
        "corruption": {**result.config["corruption"], "source": plan.corruption_source},
        "encoder": _unit_info(plan.encoder),
        "decoder": _unit_info(plan.decoder),
        "validation_fraction": VALIDATION_FRACTION,
        "device": args.device,
        "threads": args.threads,
    }
    return {
        "steps": result.steps,
        "steps_this_run": done,
        "resumed_from_step": plan.resumed_from,
        "final_train_loss": _finite_or_none(losses[-1]) if losses else None,
        "final_train_loss_mean": (
            _finite_or_none(sum(losses[-_FINAL_WINDOW:]) / len(losses[-_FINAL_WINDOW:]))
            if losses
            else None
        ),
        "final_train_loss_window": min(_FINAL_WINDOW, len(losses)),
        "validation_nll": _finite_or_none(nll[-1]) if nll else None,
        "validation_step": result.validation["step"][-1] if nll else None,
        "wall_time_s": round(result.seconds, 4),
        "steps_per_s": round(done / result.seconds, 2) if done and result.seconds > 0 else None,
        "rows": {
            "train": train_rows,
            "validation": plan.x.shape[0] - train_rows if train_rows is not None else None,
            "features": plan.x.shape[1],
        },
        "config": config,
        "definitions": {
            "loss": "-log p_dec(x | h) per row, h ~ q(h | x~), x~ ~ C(x~ | x), per minibatch",
            "validation_nll": "the same on the held-out validation rows, one corruption and "
            "one h per row",
        },
        "checkpoint": str(plan.checkpoint),
        "loss_plot": str(plot),
    }


def _dae_lines(dae: dict[str, Any]) -> list[str]:
    """The DAE part of a printed summary."""
    config = dae["config"]
    enc, dec, c = config["encoder"], config["decoder"], config["corruption"]

    def unit(info: dict[str, Any], inputs: str, outputs: str) -> str:
        hidden = ",".join(map(str, info["hidden"])) or "none (affine)"
        extra = f"; noise {info['noise']:g}" if "noise" in info else ""
        extra += f"; {info['cov']} covariance" if "cov" in info else ""
        return f"{info['class']} {info[inputs]} -> {info[outputs]} (hidden {hidden}{extra})"

    params = ", ".join(f"{k} {v:.4g}" for k, v in c.items() if k not in ("name", "source"))
    lines = [
        f"dae       encoder {unit(enc, 'x_dim', 'h_dim')}",
        f"          decoder {unit(dec, 'h_dim', 'x_dim')}",
        f"          corruption {c['name']} {params} ({c['source']})",
    ]
    rows = dae["rows"]
    setting = f"batch {config['batch_size']}, lr {config['lr']:g}"
    if config["walkback"]:
        setting += f", walkback {config['walkback']}"
    if dae["steps_this_run"] == 0:
        lines.append(
            f"training  checkpoint already at step {dae['steps']} of {dae['steps']}: nothing "
            "left to train, reloaded it"
        )
    else:
        resumed = (
            f" (resumed at step {dae['resumed_from_step']})" if dae["resumed_from_step"] else ""
        )
        lines.append(
            f"training  {dae['steps']} steps{resumed} on {rows['train']} rows ({setting}) in "
            f"{dae['wall_time_s']:.2f} s, {_fmt(dae['steps_per_s'])} steps/s"
        )
    val = (
        f"; validation NLL {_fmt(dae['validation_nll'])} at step {dae['validation_step']} "
        f"({rows['validation']} rows)"
        if dae["validation_nll"] is not None
        else ""
    )
    lines.append(
        f"loss      train {_fmt(dae['final_train_loss'])} at the last step, "
        f"{_fmt(dae['final_train_loss_mean'])} over the last {dae['final_train_loss_window']}"
        f"{val}"
    )
    return lines


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


# ---------------------------------------------------------------------------- commands


def _cmd_run(args: argparse.Namespace) -> int:
    import latentae
    from latentae._util import atomic_write_text
    from latentae.arviz import save_netcdf

    timings: dict[str, float] = {}
    start = clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = round(now - clock, 4)
        clock = now

    jm = latentae.JointModel.from_file(args.model)
    method = _resolve_method(jm, args.method)
    if args.no_dae and args.resume:
        raise ValueError("--resume continues DAE training, which --no-dae skips; drop one of them")
    learned = "the DAE" if not args.no_dae else ("amortized" if method == "amortized" else None)
    device = _check_device(args.device, learned)
    out = args.out if args.out is not None else Path("runs") / jm.name
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {str(out)!r} is a file, not a folder")
    lap("load")

    x = jm.data(seed=args.seed)
    rows = x.shape[0]
    if args.num_heldout > rows:
        raise ValueError(
            f"--num-heldout {args.num_heldout} exceeds the {rows} data rows of {jm._where}"
        )
    heldout_rows = list(range(rows - args.num_heldout, rows))
    x_heldout = x[rows - args.num_heldout :]
    lap("data")
    plan = None
    if not args.no_dae:
        plan = _prepare_dae(jm, x[: rows - args.num_heldout], args, out)
        lap("dae_setup")

    options: dict[str, Any] = {}
    if method != "enumerate":
        options["seed"] = args.seed
    if method == "amortized":
        options.update(progress=not args.quiet, device=device)
    encoder = jm.encoder(method, **options)
    lap("encoder")

    # sample_posterior imports arviz; importing it here first keeps its FutureWarning quiet
    # and its import time (~1.5 s) out of the sampling figure.
    az = _import_arviz()
    lap("import_arviz")
    idata = latentae.sample_posterior(
        encoder, x_heldout, args.num_samples, args.num_chains, seed=args.seed
    )
    lap("sample")

    import torch

    draws = torch.as_tensor(idata.posterior[jm.latent].values).to(jm.latent_dtype)
    draws = draws.reshape(-1, *draws.shape[2:])  # (chain * draw, rows, *latent)
    posterior = _posterior_rows(jm, draws, heldout_rows)
    convergence = _convergence(az, idata)
    stats = _sample_stats_summary(idata)
    loglik = _heldout_loglik(jm, draws, x_heldout)
    lap("diagnostics")

    out.mkdir(parents=True, exist_ok=True)
    nc_path = save_netcdf(idata, out / "posterior.nc")
    lap("write_netcdf")
    dae = None
    if plan is not None:
        dae = _train_dae(jm, plan, args)
        lap("dae")
    timings["total"] = round(time.perf_counter() - start, 4)
    report_path = out / "report.json"
    files = [str(nc_path)]
    if dae is not None:
        files += [dae["checkpoint"], dae["loss_plot"]]
    files.append(str(report_path))
    report = {
        "command": "run",
        "model": {
            "name": jm.name,
            "path": str(args.model),
            "latent": {
                "name": jm.latent,
                "shape": list(jm.latent_shape),
                "support": _describe_support(jm.latent_support),
                "discrete": jm.latent_is_discrete,
            },
            "observed": {
                "name": jm.observed,
                "shape": list(jm.observed_shape),
                "support": _describe_support(jm.observed_support),
            },
            "latent_is_discrete": jm.latent_is_discrete,
            "exact_methods": jm.exact_methods(),
        },
        "data": {
            "rows": rows,
            "source": "script" if jm.has_data else "simulated",
            "real": jm.has_data,
            "heldout_rows": heldout_rows,
        },
        "encoder": {
            "method": method,
            "requested": args.method,
            "exact": method in jm.exact_methods(),
        },
        "sampling": {
            "num_samples": args.num_samples,
            "num_chains": args.num_chains,
            "seed": args.seed,
        },
        "posterior": posterior,
        "convergence": convergence,
        "sample_stats": stats,
        "warnings": _run_warnings(convergence, stats),
        "heldout_loglik": {
            "mean": _finite_or_none(loglik.mean()),
            "per_row": _tolist(loglik),
            "definition": "mean over posterior draws h of log p(x | h) under the decoder",
        },
        "timings_s": timings,
        "versions": _versions(az),
        "files": files,
    }
    if dae is not None:
        report["dae"] = dae
    atomic_write_text(report_path, json.dumps(report, indent=2, allow_nan=False) + "\n")

    if not args.quiet:
        _print_run_summary(jm, report)
    return 0


def _print_run_summary(jm: JointModel, report: dict[str, Any]) -> None:
    data, enc = report["data"], report["encoder"]
    exact = "exact" if enc["exact"] else "approximate"
    print(f"model     {jm.name} ({report['model']['path']})")
    print(
        f"data      {data['rows']} rows, {data['source']}; held out the last "
        f"{len(data['heldout_rows'])}"
    )
    print(f"encoder   {enc['method']} ({exact} for this model)")
    print(f"posterior of {jm.latent!r} per held-out row (mean ± sd):")
    for entry in report["posterior"]:
        mean, sd = entry["mean"], entry["sd"]
        if isinstance(mean, list):
            pairs = list(zip(_flat(mean), _flat(sd), strict=True))
            text = ", ".join(f"{_fmt(m)} ± {_fmt(s)}" for m, s in pairs[:_SHOWN])
            if len(pairs) > _SHOWN:
                text += f", ... ({len(pairs)} entries in report.json)"
        else:
            text = f"{_fmt(mean)} ± {_fmt(sd)}"
        if "mode" in entry:
            text += f"   mode {entry['mode']} ({entry['mode_frequency']:.0%})"
        print(f"  row {entry['row']}: {text}")
    for name, c in report["convergence"].items():
        undefined = f", {c['r_hat_undefined']} undefined" if c["r_hat_undefined"] else ""
        print(
            f"r_hat     {name}: max {_fmt(c['r_hat_max'])}{undefined}; "
            f"ess_bulk min {_fmt(c['ess_bulk_min'])}"
        )
    for name, value in report["sample_stats"].items():
        print(f"stats     {name}: {_fmt(value)}")
    print(f"loglik    mean held-out log p(x | h): {_fmt(report['heldout_loglik']['mean'])}")
    if "dae" in report:
        print("\n".join(_dae_lines(report["dae"])))
    print(f"time      {report['timings_s']['total']:.2f} s (after start-up)")
    for warning in report["warnings"]:
        print(f"warning   {warning}")
    print("wrote")
    for path in report["files"]:
        print(f"  {path}")


def _flat(values: Any) -> list[Any]:
    if isinstance(values, list):
        return [v for u in values for v in _flat(u)]
    return [values]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _cmd_fit(args: argparse.Namespace) -> int:
    import latentae
    from latentae._util import atomic_write_text

    jm = latentae.JointModel.from_file(args.model)
    _check_device(args.device, "the DAE")
    out = args.out if args.out is not None else Path("runs") / jm.name
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {str(out)!r} is a file, not a folder")
    x = jm.data(seed=args.seed)
    plan = _prepare_dae(jm, x, args, out)
    dae = _train_dae(jm, plan, args)
    path = out / "training.json"
    files = [dae["checkpoint"], dae["loss_plot"], str(path)]
    report = {
        "command": "fit",
        "model": {"name": jm.name, "path": str(args.model)},
        "data": {
            "rows": x.shape[0],
            "source": "script" if jm.has_data else "simulated",
            "real": jm.has_data,
        },
        **dae,
        "versions": _versions(None),
        "files": files,
    }
    atomic_write_text(path, json.dumps(report, indent=2, allow_nan=False) + "\n")
    if not args.quiet:
        data = report["data"]
        print(f"model     {jm.name} ({args.model})")
        print(f"data      {data['rows']} rows, {data['source']}")
        print("\n".join(_dae_lines(dae)))
        print("wrote")
        for name in files:
            print(f"  {name}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import latentae

    jm = latentae.JointModel.from_file(args.model)
    exact = jm.exact_methods()
    kind = "discrete" if jm.latent_is_discrete else "continuous"
    data = "script data() (real)" if jm.has_data else "none; run/fit simulate 2000 rows"
    exact_text = ", ".join(exact) if exact else "none (use importance, nuts or amortized)"
    lines = [
        f"model     {jm.name} ({args.model})",
        f"latent    {jm.latent!r}: shape {tuple(jm.latent_shape)}, "
        f"support {_describe_support(jm.latent_support)}, {kind}",
        f"observed  {jm.observed!r}: shape {tuple(jm.observed_shape)}, "
        f"support {_describe_support(jm.observed_support)}, dtype {str(jm.dtype).split('.')[-1]}",
        f"data      {data}",
        f"exact encoders: {exact_text}",
    ]
    # With --quiet, info is a contract check: the exit code says whether the script loads.
    _say(args, "\n".join(lines))
    return 0


# ---------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``latentae`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 2 for a usage error or a problem with the inputs,
        130 when interrupted (Ctrl-C), 1 for an internal error.

    Example:
        >>> main(["info", "models/ppca.py"])  # doctest: +ELLIPSIS
        model     ppca (models/ppca.py)
        latent    'h': shape (2,), support real, continuous
        ...
        0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version and usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        return args.func(args)
    except USER_ERRORS as e:
        if args.debug:
            traceback.print_exc()
        message = str(e) or type(e).__name__
        if not isinstance(e, ValueError | OSError):
            message = f"{type(e).__name__}: {message}"
        print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # TrainingInterrupted too: its checkpoint is written
        print(_interrupted(e), file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            traceback.print_exc()
        print(
            f"{PROG}: internal error: {type(e).__name__}: {_one_line(str(e))} "
            "(rerun with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
