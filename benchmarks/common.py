"""What every benchmark prints about the machine it ran on."""

from __future__ import annotations

import json
import os
import platform
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
