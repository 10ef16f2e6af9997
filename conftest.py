"""Settings for the whole test run, doctests included."""

import os
from pathlib import Path

# One thread per process: the suite's networks are small, and with torch's default of one
# thread per core a second busy process (a spawned DDP rank, another job) slows them 10-100x
# through OpenMP oversubscription. Set before torch is imported, so spawned ranks inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from _pytest.doctest import DoctestItem

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _doctest_cwd(request, monkeypatch):
    """Doctests refer to ``models/...`` relative to the repository root."""
    if isinstance(request.node, DoctestItem):
        monkeypatch.chdir(Path(__file__).parent)
