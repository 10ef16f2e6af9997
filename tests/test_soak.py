"""A long thinned DAE chain runs in bounded memory (benchmarks/soak.py at a small size).

100 chains of a briefly trained 2-D DAE run 10^4 steps through ``latentae.gsn_chain``,
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

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS, CHAINS, THIN = 10_000, 100, 1000
BOUND_MB = 0.5 * STEPS * CHAINS * 2 * 8 / 2**20  # half of every state, in float64


# The measurements run in a fresh interpreter: inside a long test session the allocator
# reuses memory that earlier tests freed, so a growth of a few MB would not show in the RSS.
MEASURE = """
import importlib.util, json, sys
import torch
torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)
spec = importlib.util.spec_from_file_location("soak_benchmark", sys.argv[1])
soak = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = soak
spec.loader.exec_module(soak)
steps, chains, thin = map(int, sys.argv[2:5])
before = soak.rss_mb()
block = torch.ones(8 * 2**20 // 8, dtype=torch.float64)  # 8 MB, touched
allocation = soak.rss_mb() - before
del block
encoder, decoder, corruption, data = soak.train_pair(100, seed=0)
x0 = data[:chains]
soak.soak(encoder, decoder, corruption, x0, 200, 200, seed=1)  # warm-up
result = soak.soak(encoder, decoder, corruption, x0, steps, thin, seed=2)
control = soak.soak(encoder, decoder, corruption, x0, steps // 2, 1, seed=3)
print(json.dumps({"allocation_mb": allocation, "result": result, "control": control,
                  "peak_mb": soak.peak_rss_mb(), "rss_mb": soak.rss_mb()}, default=str))
"""


@pytest.fixture(scope="module")
def measured():
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(ROOT / "benchmarks" / "soak.py"),
         str(STEPS), str(CHAINS), str(THIN)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
def test_a_long_thinned_chain_runs_in_bounded_memory(measured):
    result, control = measured["result"], measured["control"]
    assert result["kept_draws"] == STEPS // THIN and result["finite_share"] == 1.0
    assert result["every_state_mb"] == pytest.approx(2 * BOUND_MB)
    assert result["rss_samples"] > 10  # the monitor ran throughout
    assert result["rss_growth_mb"] < BOUND_MB, result
    # The control: a chain that keeps every state grows past the bound.
    assert control["kept_draws"] == STEPS // 2
    assert control["rss_growth_mb"] > BOUND_MB, control


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
def test_rss_readings_follow_an_allocation(measured):
    assert measured["allocation_mb"] > 6
    assert measured["peak_mb"] >= measured["rss_mb"] - 1  # the peak is never below the current
