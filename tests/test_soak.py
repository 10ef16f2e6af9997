"""A long thinned DAE chain runs in bounded memory (benchmarks/soak.py at a small size).

100 chains of a briefly trained 2-D DAE run 10^4 steps through :func:`latentae.gsn_chain`,
keeping every 1000-th state, while a thread samples the resident set size (VmRSS of
/proc/self/status). Storing every state would take 10^4 x 100 x 2 float64 = 16 MB (and
more, with each tensor's own overhead), so the bound on the growth, 8 MB, is half of the
least that a chain keeping per-step state would add; the thinned chain adds well under 1 MB
(a short chain runs first, so that one-time allocations are not counted). A control run
that does keep every state (thin=1, 5000 steps: at least 8 MB of states plus the 8 MB of
their stacked copy) must exceed the bound, which shows that the measurement sees such
growth. Run time: about 10 s on 2 cores.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
STEPS, CHAINS, THIN = 10_000, 100, 1000
BOUND_MB = 0.5 * STEPS * CHAINS * 2 * 8 / 2**20  # half of every state, in float64


@pytest.fixture(scope="module")
def soak():
    spec = importlib.util.spec_from_file_location("soak_benchmark", ROOT / "benchmarks" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
def test_a_long_thinned_chain_runs_in_bounded_memory(soak):
    assert torch.get_default_dtype() == torch.float64  # the bound assumes 8-byte states
    encoder, decoder, corruption, data = soak.train_pair(100, seed=0)
    x0 = data[:CHAINS]
    soak.soak(encoder, decoder, corruption, x0, 200, 200, seed=1)  # warm-up
    result = soak.soak(encoder, decoder, corruption, x0, STEPS, THIN, seed=2)
    assert result["kept_draws"] == STEPS // THIN and result["finite_share"] == 1.0
    assert result["every_state_mb"] == pytest.approx(2 * BOUND_MB)
    assert result["rss_samples"] > 10  # the monitor ran throughout
    assert result["rss_growth_mb"] < BOUND_MB, result
    # The control: a chain that keeps every state grows past the bound.
    control = soak.soak(encoder, decoder, corruption, x0, STEPS // 2, 1, seed=3)
    assert control["kept_draws"] == STEPS // 2
    assert control["rss_growth_mb"] > BOUND_MB, control


def test_rss_readings_follow_an_allocation(soak):
    before = soak.rss_mb()
    block = torch.ones(8 * 2**20 // 8, dtype=torch.float64)  # 8 MB, touched
    assert soak.rss_mb() - before > 6
    del block
    assert soak.peak_rss_mb() >= soak.rss_mb() - 1  # the peak is never below the current
