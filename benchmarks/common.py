"""What every benchmark prints about the machine it ran on."""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def machine(**versions: str) -> dict[str, Any]:
    """Platform, CPU count, Python and torch versions and torch's thread count, plus the
    versions of any other packages given by name."""
    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        **versions,
    }


def write_json(path: str, result: dict[str, Any]) -> None:
    """Write a benchmark's figures as indented JSON."""
    Path(path).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def quick_or_full_main(
    doc: str,
    run: Callable[[Any], dict[str, Any]],
    report: Callable[[dict[str, Any]], None],
    full: Any,
    quick: Any,
    argv: list[str] | None = None,
) -> int:
    """The command line of a benchmark with a full and a ``--quick`` size: run, print the
    report, and with ``--json PATH`` also write the figures."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    result = run(quick if args.quick else full)
    report(result)
    if args.json:
        write_json(args.json, result)
    return 0
