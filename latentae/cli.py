"""The ``latentae`` command.

Each subcommand is a pair: ``_add_<name>(subparsers, parents)`` declares its arguments and
``_cmd_<name>(args) -> int`` runs it. Flags shared by several subcommands live in the parent
parsers built by :func:`_parents`, so a new subcommand composes them instead of redeclaring.
Commands print; the library functions they call return results and never print.

Errors a user can fix (a broken model script, a bad argument, an unwritable folder) become one
line on stderr, ``latentae: error: <message>``, and exit code 2; ``--debug`` adds the traceback.
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
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from latentae.joint import ENCODER_METHODS

if TYPE_CHECKING:
    import torch

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


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


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
    ``--device`` (subcommands that compute and write results).
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
        help="torch device for learned networks, e.g. cuda (default: cpu); "
        "model-derived computations run on the CPU",
    )
    return {"base": base, "output": output}


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
        [parents["base"], parents["output"]],
        "sample the posterior of held-out rows and write report.json and posterior.nc",
        "Load a model script, take its data (data() or 2000 rows simulated from the model),\n"
        "hold out the last rows, draw from the encoder p(h | x) for each held-out row and\n"
        "write posterior.nc (ArviZ InferenceData) and report.json (posterior means and sds,\n"
        "R-hat, ESS, the held-out log-likelihood, timings) into --out.",
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
    p.set_defaults(func=_cmd_run)


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


def _check_device(device: str, method: str) -> str:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a torch device; use cpu or cuda") from None
    if dev.type != "cpu" and method != "amortized":
        raise ValueError(
            f"--device {device} applies only to --method amortized (a learned network); the "
            f"{method!r} encoder evaluates the model on the CPU, so drop --device"
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
    import pyro
    import torch

    return {
        "latentae": _version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "arviz": az.__version__,
        "python": platform.python_version(),
    }


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
    device = _check_device(args.device, method)
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
    timings["total"] = round(time.perf_counter() - start, 4)
    report_path = out / "report.json"
    files = [str(nc_path), str(report_path)]
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
        The exit code: 0 on success, 2 for a usage error or a problem with the inputs.

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
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
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
