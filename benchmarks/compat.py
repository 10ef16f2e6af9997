"""Cost of the compatibility diagnostics, and vectorized x-chains against a per-chain loop.

What is measured
----------------
On ``models/ppca.py`` with its exact pair (the Laplace encoder, exact for this
linear-Gaussian model, and the model's decoder), in one process:

- **cross-ratio**: ``latentae.compat.cross_ratio`` on 10^5 random pairs of 10^5 rows
  (wall time); also for a DAE pair with an MLP encoder, whose log p_enc(h | x) is the
  importance-sampled ``"laplace"`` estimate (64 draws, Gauss-Newton from 4 starts), on
  10^4 pairs, since each pair costs a small optimization;
- **Gibbs test**: ``latentae.compat.gibbs_test`` with 10^4 chains x 100 steps against
  10^4 held-out rows, 200 permutations (wall time, and the chain's share of it);
- **chain steps per second**: ``latentae.gibbs_chain`` runs every chain in one call of
  the encoder and one of the decoder per step, i.e. two traces of the Pyro model per step
  for all chains. The baseline loops over chains and steps and calls the same model-derived
  encoder and decoder on one chain at a time, re-tracing the model for every chain step,
  as a sampler written around ``pyro.poutine.trace`` per draw would. Both are timed on the
  same conditionals in the same run; the ratio of chain-steps per second is the speed-up.
  The loop runs fewer chains and steps (its cost per chain step does not depend on them).

Target: the vectorized chain reaches >= 100x the loop's chain-steps per second.

Usage::

    python benchmarks/compat.py           # full run (about a minute on 2 cores)
    python benchmarks/compat.py --quick   # smoke run, a few seconds
    python benchmarks/compat.py --json out.json
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, quick_or_full_main

import latentae as lae
from latentae.compat import cross_ratio, gibbs_test
from latentae.corruption import Gaussian

ROOT = Path(__file__).resolve().parents[1]
FULL = {"rows": 100_000, "pairs": 100_000, "dae_pairs": 10_000, "chains": 10_000,
        "steps": 100, "loop_chains": 20, "loop_steps": 10}  # fmt: skip
QUICK = {"rows": 2_000, "pairs": 2_000, "dae_pairs": 500, "chains": 500, "steps": 20,
         "loop_chains": 5, "loop_steps": 4}  # fmt: skip
TARGET = 100.0


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _loop_chain(encoder: Any, decoder: Any, x0: torch.Tensor, steps: int) -> torch.Tensor:
    """The baseline: every chain stepped on its own, one model trace per conditional call."""
    out = []
    with torch.no_grad():
        for row in x0:
            x = row[None]
            for _ in range(steps):
                x = decoder(encoder(x).sample()).sample()
            out.append(x[0])
    return torch.stack(out)


def run(sizes: dict[str, int]) -> dict[str, Any]:
    torch.manual_seed(0)
    jm = lae.JointModel.from_file(ROOT / "models" / "ppca.py")
    enc, dec = jm.encoder("laplace"), jm.decoder()
    _, x = jm.sample(sizes["rows"], seed=0)
    _, held = jm.sample(sizes["chains"], seed=1)
    result: dict[str, Any] = {
        "sizes": sizes,
        "machine": machine(pyro=__import__("pyro").__version__),
    }

    cr, seconds = _timed(lambda: cross_ratio(enc, dec, x, num_pairs=sizes["pairs"], seed=0))
    result["cross_ratio_exact"] = {"pairs": sizes["pairs"], "seconds": seconds,
                                   "statistic": cr.statistic, "stderr": cr.stderr}  # fmt: skip

    q = lae.GaussianEncoder(5, 2, hidden=(64, 64), noise=0.1)
    d = lae.GaussianDecoder(2, 5, hidden=(64, 64))
    dae_enc = lae.corrupt(q, Gaussian(0.3))
    cr, seconds = _timed(
        lambda: cross_ratio(dae_enc, d, x[:10_000], num_pairs=sizes["dae_pairs"], seed=0)
    )
    result["cross_ratio_dae_laplace"] = {"pairs": sizes["dae_pairs"], "seconds": seconds,
                                         "statistic": cr.statistic}  # fmt: skip

    gt, seconds = _timed(
        lambda: gibbs_test(enc, dec, x, held, num_chains=sizes["chains"],
                           burn_in=sizes["steps"], num_permutations=200, seed=0)
    )  # fmt: skip
    starts = x[: sizes["chains"]]
    _, chain_seconds = _timed(lambda: lae.gibbs_chain(enc, dec, starts, sizes["steps"], seed=0))
    result["gibbs_test"] = {"chains": sizes["chains"], "steps": sizes["steps"],
                            "seconds": seconds, "chain_seconds": chain_seconds,
                            "mmd_pvalue": gt.mmd_pvalue,
                            "energy_pvalue": gt.energy_pvalue}  # fmt: skip

    vec_rate = sizes["chains"] * sizes["steps"] / chain_seconds
    loop_x0 = x[: sizes["loop_chains"]]
    _, loop_seconds = _timed(lambda: _loop_chain(enc, dec, loop_x0, sizes["loop_steps"]))
    loop_rate = sizes["loop_chains"] * sizes["loop_steps"] / loop_seconds
    result["chain_steps_per_s"] = {"vectorized": vec_rate, "loop": loop_rate,
                                   "speedup": vec_rate / loop_rate, "target": TARGET}  # fmt: skip
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["load_average"] = os.getloadavg()
    return result


def report(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"machine   {m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']} "
          f"({m['torch_threads']} threads), load {r['load_average'][0]:.2f}")  # fmt: skip
    c = r["cross_ratio_exact"]
    print(f"cross-ratio, exact PPCA pair, {c['pairs']} pairs: {c['seconds']:.2f} s "
          f"(statistic {c['statistic']:.2g})")  # fmt: skip
    c = r["cross_ratio_dae_laplace"]
    print(f"cross-ratio, MLP DAE pair (laplace estimator), {c['pairs']} pairs: "
          f"{c['seconds']:.2f} s")  # fmt: skip
    g = r["gibbs_test"]
    print(f"gibbs test, {g['chains']} chains x {g['steps']} steps: {g['seconds']:.2f} s "
          f"(the chains alone {g['chain_seconds']:.2f} s; p-values {g['mmd_pvalue']:.3g}, "
          f"{g['energy_pvalue']:.3g})")  # fmt: skip
    s = r["chain_steps_per_s"]
    verdict = "met" if s["speedup"] >= s["target"] else "NOT met"
    print(f"chain steps/s: vectorized {s['vectorized']:.3g}, per-chain loop {s['loop']:.3g}, "
          f"speed-up {s['speedup']:.0f}x (target {s['target']:.0f}x: {verdict})")  # fmt: skip
    print(f"peak RSS {r['peak_rss_mb']:.0f} MB")


def main(argv: list[str] | None = None) -> int:
    return quick_or_full_main(__doc__, run, report, FULL, QUICK, argv)


if __name__ == "__main__":
    sys.exit(main())
