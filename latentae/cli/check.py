"""``latentae check``: compatibility diagnostics of a trained DAE pair."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from latentae.cli._args import _positive_int, _subparser
from latentae.cli._common import _check_device, _model_data, _versions, _writing
from latentae.cli._compat import (
    DEFAULT_BURN_IN,
    DEFAULT_CHAINS,
    DEFAULT_PAIRS,
    compatibility_lines,
    compatibility_section,
)
from latentae.cli._dae import _checkpoint_pair


def add(subparsers: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = _subparser(
        subparsers,
        "check",
        [parents["base"], parents["output"], parents["data"]],
        "measure how compatible a trained encoder/decoder pair is; write check.json and a plot",
        "Load a model script and a checkpoint written by 'latentae fit' or 'latentae run',\n"
        "rebuild the DAE pair it holds and run every compatibility diagnostic that applies\n"
        "(DESIGN.md, Compatibility) on the model's data: the cross-ratio and the interaction\n"
        "(0 iff the encoder and decoder are conditionals of one joint), the Gibbs test (do\n"
        "the x -> x~ -> h -> x chains keep the data law?) and, for a linear-Gaussian pair,\n"
        "the closed forms. Writes check.json and compatibility.png into --out (default:\n"
        "the checkpoint's folder).",
        "latentae check models/ppca.py --checkpoint runs/ppca/checkpoint.pt",
    )
    p.add_argument("model", type=Path, metavar="MODEL.py", help="the model script")
    p.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        metavar="PATH",
        help="checkpoint.pt written by 'latentae fit' or 'latentae run' (or latentae.fit)",
    )
    p.add_argument(
        "--num-pairs",
        type=_positive_int,
        default=DEFAULT_PAIRS,
        metavar="INT",
        help=f"random row pairs of the cross-ratio (default: {DEFAULT_PAIRS})",
    )
    p.add_argument(
        "--num-chains",
        type=_positive_int,
        default=DEFAULT_CHAINS,
        metavar="INT",
        help=f"chains of the Gibbs test (default: {DEFAULT_CHAINS})",
    )
    p.add_argument(
        "--burn-in",
        type=_positive_int,
        default=DEFAULT_BURN_IN,
        metavar="INT",
        help=f"steps of each Gibbs chain before its draw is kept (default: {DEFAULT_BURN_IN})",
    )
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    import latentae
    from latentae._util import atomic_write_text

    jm = latentae.JointModel.from_file(args.model)
    device = _check_device(args.device, "the DAE pair")
    out = args.out if args.out is not None else args.checkpoint.parent
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {str(out)!r} is a file, not a folder")
    with _writing(out):
        x, source = _model_data(jm, args)
        pair = _checkpoint_pair(jm, x, args.checkpoint, device)
        x = x.reshape(len(x), -1).to(device)
        out.mkdir(parents=True, exist_ok=True)
        section = compatibility_section(
            (pair.encoder, pair.decoder, pair.corruption),
            x,
            out,
            seed=args.seed,
            title=f"{jm.name}: compatibility of the DAE pair at step {pair.step}",
            num_pairs=args.num_pairs,
            num_chains=args.num_chains,
            burn_in=args.burn_in,
        )
        path = out / "check.json"
        report = {
            "command": "check",
            "model": {"name": jm.name, "path": str(args.model)},
            "checkpoint": {"path": str(args.checkpoint), "step": pair.step},
            "data": {"rows": len(x), "source": source},
            "pair": {
                "encoder": pair.config.get("encoder"),
                "decoder": pair.config.get("decoder"),
                "corruption": pair.corruption.to_config(),
            },
            "compatibility": section,
            "versions": _versions(None),
            "files": [section["plot"], str(path)],
        }
        atomic_write_text(path, json.dumps(report, indent=2, allow_nan=False) + "\n")
        if not args.quiet:
            enc, dec = report["pair"]["encoder"], report["pair"]["decoder"]
            print(f"model       {jm.name} ({args.model})")
            print(
                f"pair        {enc['name']} / {dec['name']} at step {pair.step} ({args.checkpoint})"
            )
            print(f"data        {len(x)} rows, {report['data']['source']}")
            print("\n".join(compatibility_lines(section)))
            print(f"time        {section['wall_time_s']:.2f} s")
            print("wrote")
            for name in report["files"]:
                print(f"  {name}")
        return 0
