"""``latentae info``: describe a model script."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from latentae.cli._args import _subparser
from latentae.cli._common import _describe_support, _say


def add(subparsers: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
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
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
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
