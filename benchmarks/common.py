"""What every benchmark prints about the machine it ran on."""

from __future__ import annotations

import os
import platform
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
