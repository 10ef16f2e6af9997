"""``latentae study compatibility``: DAE pairs over training-set sizes, capacities and seeds."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from latentae.cli._args import (
    _int_at_least,
    _nonnegative_int,
    _positive_float,
    _positive_int,
    _subparser,
)
from latentae.cli._common import _check_device, _fmt, _writing

STUDIES = ("compatibility",)
_size = _int_at_least(4, "a training-set size >= 4")


def _capacity_arg(text: str) -> str | tuple[int, ...]:
    """``full`` / ``diag`` (a covariance type) or ``64,64`` (hidden widths)."""
    if text in ("diag", "full"):
        return text
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(
            f"expected a covariance type (diag, full) or hidden widths such as 64,64; got {text!r}"
        )
    return widths


def add(subparsers: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    from latentae.study import compatibility_study

    defaults = compatibility_study.__kwdefaults__ or {}
    p = _subparser(
        subparsers,
        "study",
        [parents["base"], parents["output"]],
        "sweep training-set sizes and capacities; write study.json and study.png",
        "compatibility: simulate training sets of several sizes n from the model, train a\n"
        "DAE pair on each (for every decoder capacity and seed), measure its compatibility\n"
        "(cross-ratio, Gibbs MMD, and the Gaussian closed forms for a linear-Gaussian model)\n"
        "and plot each statistic against n on log-log axes with a fitted slope per capacity.\n"
        "Capacities are decoder covariance types (diag, full) for a linear-Gaussian model,\n"
        "else hidden widths of an MLP encoder and a mixture-density decoder. study.json is\n"
        "rewritten after every cell, so an interrupted study loses at most one cell; rerun\n"
        "with --resume to go on. The defaults take a few minutes on 2 CPU cores.",
        "latentae study compatibility models/ppca.py --sizes 200 2000 20000 --seeds 0 1 2",
    )
    p.add_argument("study", choices=STUDIES, help="which study to run")
    p.add_argument("model", type=Path, metavar="MODEL.py", help="the model script")
    p.add_argument(
        "--sizes",
        nargs="+",
        type=_size,
        default=[200, 2000, 20000],
        metavar="N",
        help="training-set sizes (default: 200 2000 20000)",
    )
    p.add_argument(
        "--capacities",
        nargs="+",
        type=_capacity_arg,
        default=None,
        metavar="CAP",
        help="decoder capacities: diag full for a linear-Gaussian model (default), else "
        "hidden widths such as 32 128 or 64,64 (default: 32 128)",
    )
    p.add_argument(
        "--seeds",
        nargs="+",
        type=_nonnegative_int,
        default=None,
        metavar="INT",
        help="seeds of the simulation and training (default: --seed, --seed+1, --seed+2)",
    )
    p.add_argument(
        "--steps",
        type=_positive_int,
        default=1500,
        metavar="INT",
        help="optimizer steps per training run (default: 1500)",
    )
    p.add_argument(
        "--corruption-sigma",
        type=_positive_float,
        default=0.5,
        metavar="FLOAT",
        help="sigma of the Gaussian corruption (default: 0.5)",
    )
    for flag, key, what in (
        ("--num-pairs", "num_pairs", "random pairs of the cross-ratio"),
        ("--num-chains", "num_chains", "chains of the Gibbs test"),
        ("--burn-in", "burn_in", "steps of each Gibbs chain"),
    ):
        p.add_argument(
            flag,
            type=_positive_int,
            default=defaults[key],
            metavar="INT",
            help=f"{what} (default: {defaults[key]})",
        )
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the cells of OUT/study.json, written by an earlier or interrupted study "
        "with the same settings, and run only the missing ones",
    )
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    import latentae
    from latentae.study import StudyResult, compatibility_study

    jm = latentae.JointModel.from_file(args.model)
    device = _check_device(args.device, "the DAE pairs")
    out = args.out if args.out is not None else Path("runs") / jm.name / "study"
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {str(out)!r} is a file, not a folder")
    with _writing(out):
        previous = None
        if args.resume:
            path = out / "study.json"
            if not path.exists():
                raise FileNotFoundError(
                    f"--resume: no study at {str(path)!r}; drop --resume to start the study"
                )
            previous = StudyResult.load(path)
        elif (out / "study.json").exists():
            raise FileExistsError(
                f"{str(out / 'study.json')!r} exists: pass --resume to continue that study, or "
                "another --out"
            )
        seeds = args.seeds if args.seeds is not None else [args.seed, args.seed + 1, args.seed + 2]

        def save(partial: StudyResult) -> None:
            partial.save(out)
            if not args.quiet:
                cell = partial.cells[-1]
                text = " ".join(
                    f"{k} {_fmt(cell[k])}"
                    for k in ("cross_ratio", "gaussian_kl", "gibbs_mmd")
                    if k in cell and not math.isnan(cell[k])
                )
                print(
                    f"cell      n {cell['n']}, capacity {cell['capacity']}, seed {cell['seed']}: "
                    f"{text} ({cell['seconds']:.1f} s)",
                    flush=True,
                )

        result = compatibility_study(
            jm,
            sizes=args.sizes,
            capacities=args.capacities,
            seeds=seeds,
            steps=args.steps,
            corruption_sigma=args.corruption_sigma,
            device=None if device == "cpu" else device,
            num_pairs=args.num_pairs,
            num_chains=args.num_chains,
            burn_in=args.burn_in,
            resume_from=previous,
            callback=save,
        )
        json_path, png_path = result.save(out)
        if not args.quiet:
            print(f"model     {jm.name} ({args.model})")
            print(f"study     {len(result.cells)} cells in {result.seconds:.1f} s")
            summary = result.summary()
            for cap, slopes in result.slopes().items():
                text = ", ".join(f"{k} {_fmt(v)}" for k, v in slopes.items())
                print(f"slope     capacity {cap}: d log(statistic) / d log(n): {text}")
                for stat in ("cross_ratio", "gaussian_kl", "gibbs_mmd"):
                    if stat in summary[cap]:
                        s = summary[cap][stat]
                        values = ", ".join(
                            f"n={n}: {_fmt(m)} ± {_fmt(e)}"
                            for n, m, e in zip(s["n"], s["mean"], s["se"], strict=True)
                        )
                        print(f"          {stat}: {values}")
            print("wrote")
            print(f"  {json_path}")
            print(f"  {png_path}")
        return 0
