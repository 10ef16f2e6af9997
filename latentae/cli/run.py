"""``latentae run``: posterior draws for held-out rows, a DAE, report.json and plots."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latentae.joint import ENCODER_METHODS

if TYPE_CHECKING:
    import torch

    from latentae.joint import JointModel

from latentae.cli._args import _positive_int, _subparser
from latentae.cli._common import (
    _check_device,
    _convergence,
    _describe_support,
    _finite_or_none,
    _flat,
    _fmt,
    _import_arviz,
    _model_data,
    _tolist,
    _versions,
    _writing,
)
from latentae.cli._compat import compatibility_lines, compatibility_section
from latentae.cli._dae import _dae_lines, _prepare_dae, _train_dae
from latentae.cli.sample import sample_lines, sample_section
from latentae.cli.score import score_lines, score_section

# Rows at which a 2-D model's score estimate is compared with the exact one.
SCORE_POINTS = 1000
RUN_METHODS = ("auto", *ENCODER_METHODS)

# Draws per chunk when evaluating the decoder, so memory stays bounded for many draws.
_LOGLIK_CHUNK = 1000

# Vehtari et al. (2021) recommend R-hat < 1.01; below ~100 effective particles an importance
# estimate is unreliable (Owen 2013, ch. 9).
_RHAT_LIMIT = 1.01

_WEIGHTS_ESS_LIMIT = 100

# Latent entries per row shown in the printed summary; report.json has them all.
_SHOWN = 4


def add(subparsers: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = _subparser(
        subparsers,
        "run",
        [parents["base"], parents["output"], parents["data"], parents["train"]],
        "sample the posterior of held-out rows, train a DAE, write report.json and plots",
        "Load a model script, take its data (data() or 2000 rows simulated from the model),\n"
        "hold out the last rows, draw from the encoder p(h | x) for each held-out row and\n"
        "write posterior.nc (ArviZ InferenceData) and report.json (posterior means and sds,\n"
        "R-hat, ESS, the held-out log-likelihood, timings) into --out. Then train a\n"
        "denoising autoencoder on the other rows (as 'latentae fit' does), write\n"
        'checkpoint.pt and loss.png and add its figures to report.json under "dae"; then\n'
        "measure the trained pair's compatibility (as 'latentae check' does), save\n"
        'compatibility.png and add the figures under "compatibility" (--no-dae skips both).',
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
    p.set_defaults(func=command)


def _resolve_method(jm: JointModel, method: str) -> str:
    if method == "auto":
        return "enumerate" if jm.latent_is_discrete else "laplace"
    return method


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


def command(args: argparse.Namespace) -> int:
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
    with _writing(out):
        lap("load")

        x, source = _model_data(jm, args)
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
        dae = compatibility = score = sample = None
        if plan is not None:
            dae = _train_dae(jm, plan, args)
            lap("dae")
            compatibility = compatibility_section(
                (plan.encoder, plan.decoder, plan.corruption),
                plan.x.to(args.device),
                out,
                seed=args.seed,
                title=f"{jm.name}: compatibility of the trained DAE pair",
            )
            lap("compatibility")
            if plan.x.shape[1] == 2:  # a 2-D model: its score field and the DAE's own samples
                from latentae.corruption import Gaussian

                pair = (plan.encoder, plan.decoder, plan.corruption)
                if isinstance(plan.corruption, Gaussian) and plan.corruption.sigma > 0:
                    score = score_section(jm, pair, plan.x, out, seed=args.seed,
                                          num_points=SCORE_POINTS)  # fmt: skip
                    lap("score")
                sample = sample_section(jm, pair, plan.x, out, seed=args.seed)
                lap("sample")
        timings["total"] = round(time.perf_counter() - start, 4)
        report_path = out / "report.json"
        files = [str(nc_path)]
        if dae is not None:
            files += [dae["checkpoint"], dae["loss_plot"]]
        if compatibility is not None:
            files.append(compatibility["plot"])
        if score is not None and "plot" in score:
            files.append(score["plot"])
        if sample is not None:
            files += sample["files"]
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
                "source": source,
                "real": jm.has_data or args.data is not None,
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
        if compatibility is not None:
            report["compatibility"] = compatibility
        if score is not None:
            report["score"] = score
        if sample is not None:
            report["sample"] = sample
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
    if "compatibility" in report:
        lines = compatibility_lines(report["compatibility"])
        print("\n".join(f"compat    {line}" for line in lines))
    if "score" in report:
        print("\n".join(score_lines(report["score"])))
    if "sample" in report:
        print("\n".join(sample_lines(report["sample"])))
    print(f"time      {report['timings_s']['total']:.2f} s (after start-up)")
    for warning in report["warnings"]:
        print(f"warning   {warning}")
    print("wrote")
    for path in report["files"]:
        print(f"  {path}")
