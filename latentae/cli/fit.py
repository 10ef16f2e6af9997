"""``latentae fit``: train a denoising autoencoder on a model's data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from latentae.cli._args import _subparser
from latentae.cli._common import _model_and_out, _model_data, _versions, _writing
from latentae.cli._dae import _dae_lines, _prepare_dae, _train_dae


def add(subparsers: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = _subparser(
        subparsers,
        "fit",
        [parents["base"], parents["output"], parents["data"], parents["train"]],
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
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    from latentae._util import atomic_write_text

    jm, out = _model_and_out(args, "the DAE")
    with _writing(out):
        x, source = _model_data(jm, args)
        plan = _prepare_dae(jm, x, args, out)
        dae = _train_dae(jm, plan, args)
        path = out / "training.json"
        files = [dae["checkpoint"], dae["loss_plot"], str(path)]
        report = {
            "command": "fit",
            "model": {"name": jm.name, "path": str(args.model)},
            "data": {
                "rows": x.shape[0],
                "source": source,
                "real": jm.has_data or args.data is not None,
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
