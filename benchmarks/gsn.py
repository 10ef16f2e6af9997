"""Time per step of ``latentae.gsn_chain`` against a hand-written chain loop.

What is measured
----------------
A small denoising autoencoder on the plane (``GaussianEncoder(2, 2, hidden=(32,),
noise=0.1)``, ``MixtureDecoder(2, 2, hidden=(32,))``, Gaussian corruption 0.5; untrained,
which changes nothing per step) is run as a Markov chain x -> x~ -> h -> x for a fixed
number of steps of 100 chains, three ways:

- **loop**: the plain loop a user would write under ``torch.no_grad()``,
  ``x = decoder(encoder(corruption.sample(x)).sample()).sample()``, keeping nothing: the
  floor for one step's work;
- **gsn_chain**: ``latentae.gsn_chain`` with burn-in of half the steps, every later state
  kept, and the conversion to ArviZ InferenceData;
- **via corrupt()**: ``latentae.gibbs_chain`` with the encoder ``corrupt(encoder,
  corruption)``, which builds the corrupted encoder's distribution (and its log-density
  machinery) at every step; ``gsn_chain`` ran this way before it drew x~ and h directly.

The three are interleaved over several rounds (the order reversed every other round) and
the median wall time per step is reported, with the ratios gsn_chain / loop and via
corrupt() / gsn_chain. All figures come from one process in one run.

Target: gsn_chain within 10% of the loop.

Usage::

    python benchmarks/gsn.py           # full run (about half a minute on 2 cores)
    python benchmarks/gsn.py --quick   # smoke run, a few seconds
    python benchmarks/gsn.py --json out.json
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, quick_or_full_main

import latentae as lae
from latentae.corruption import Gaussian

FULL = {"chains": 100, "steps": 2000, "rounds": 5}
QUICK = {"chains": 20, "steps": 50, "rounds": 2}
TARGET = 1.10


def run(size: dict[str, int]) -> dict[str, Any]:
    torch.manual_seed(0)
    encoder = lae.GaussianEncoder(2, 2, hidden=(32,), noise=0.1)
    decoder = lae.MixtureDecoder(2, 2, hidden=(32,))
    corruption = Gaussian(0.5)
    x0 = torch.randn(size["chains"], 2)
    steps = size["steps"]

    def loop() -> None:
        x = x0
        with torch.no_grad():
            for _ in range(steps):
                x = decoder(encoder(corruption.sample(x)).sample()).sample()

    def gsn() -> None:
        lae.gsn_chain(encoder, decoder, corruption, x0, steps, burn_in=steps // 2, seed=0)

    def via_corrupt() -> None:
        dae_encoder = lae.corrupt(encoder, corruption)
        lae.gibbs_chain(dae_encoder, decoder, x0, steps, burn_in=steps // 2, seed=0)

    arms = {"loop": loop, "gsn_chain": gsn, "via corrupt()": via_corrupt}
    for fn in arms.values():  # warm-up: first calls import and allocate
        fn()
    times: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(size["rounds"]):
        for name in list(arms) if r % 2 == 0 else list(arms)[::-1]:
            start = time.perf_counter()
            arms[name]()
            times[name].append((time.perf_counter() - start) / steps)
    median = {name: statistics.median(t) for name, t in times.items()}
    return {
        "machine": machine(),
        "size": size,
        "seconds_per_step": median,
        "gsn_chain_over_loop": median["gsn_chain"] / median["loop"],
        "via_corrupt_over_gsn_chain": median["via corrupt()"] / median["gsn_chain"],
        "target_gsn_chain_over_loop": TARGET,
    }


def report(result: dict[str, Any]) -> None:
    size = result["size"]
    print(f"{size['chains']} chains x {size['steps']} steps, median of {size['rounds']} rounds")
    for name, seconds in result["seconds_per_step"].items():
        print(f"  {name:14s} {seconds * 1e6:8.1f} us per step")
    ratio = result["gsn_chain_over_loop"]
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(f"gsn_chain / loop: {ratio:.3f} (target <= {TARGET}: {verdict})")
    print(f"via corrupt() / gsn_chain: {result['via_corrupt_over_gsn_chain']:.3f}")


def main(argv: list[str] | None = None) -> int:
    return quick_or_full_main(__doc__, run, report, FULL, QUICK, argv)


if __name__ == "__main__":
    raise SystemExit(main())
