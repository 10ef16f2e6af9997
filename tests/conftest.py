"""Shared fixtures: float64 everywhere, a seeded RNG per test, paths to the model scripts."""

from pathlib import Path

import pyro
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted((ROOT / "models").glob("*.py"))


@pytest.fixture(autouse=True)
def _float64_and_seed():
    """Every test runs in float64 (closed-form comparisons need it) with torch's global RNG
    seeded, and leaves the default dtype and Pyro's parameter store as it found them."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)
        pyro.clear_param_store()


@pytest.fixture
def models_dir() -> Path:
    return ROOT / "models"
