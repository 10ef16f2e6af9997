"""A long DAE (GSN) chain in bounded memory: 10^6 steps of 100 chains, thinned draws only.

What is measured
----------------
A small denoising autoencoder (``latentae.GaussianEncoder`` and
``latentae.GaussianDecoder``, one hidden layer of 32 units each, corruption
``Gaussian(0.3)``) is trained briefly on 2-D data, a noisy ring of radius 2, then sampled
through its Markov chain with ``latentae.gsn_chain`` (x → x̃ ~ C(x̃ | x) → h ~ q(h | x̃)
→ x ~ p_dec(x | h)), 100 chains started from data rows, for 10^6 steps, keeping every
10^4-th state. Reported:

- wall time, steps per second and chain-steps per second;
- memory: the resident set size (VmRSS, read from ``/proc/self/status``) just before the
  chain and after it, its maximum during the chain (a thread samples it every 10 ms), and
  the process's peak RSS (``resource.getrusage``) before and after. The growth is the
  maximum during the chain less the value before it; a short chain runs first, so that
  one-time allocations (kernels, allocator pools) are not counted;
- what storing every state would take (steps x chains x 2 x the float size: about 760 MB
  at the full size in float32), against which the bound is small;
- the chains' health: the share of finite kept states and their mean radius beside the
  data's (a chain that left the ring, or diverged, shows there).

Target: the growth stays below 50 MB (the exit code is 1 otherwise). Per-step state kept by
the chain would grow memory linearly in the steps; ``latentae.gibbs_chain``, which
``gsn_chain`` calls, keeps only the thinned draws, so memory is flat.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/soak.py          # full run: 10^6 steps (minutes)
    python benchmarks/soak.py --quick                    # 10^4 steps, seconds
    python benchmarks/soak.py --steps 100000 --thin 1000 --json out.json

Run the full size alone on the machine: other processes slow it, and on 2 cores torch's
worker threads compete with them unless ``OMP_NUM_THREADS=1``.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_json

import latentae as lae
from latentae.corruption import Gaussian

BOUND_MB = 50.0
RING_RADIUS = 2.0
SIGMA = 0.3


@dataclass(frozen=True)
class Sizes:
    """How much work the soak does."""

    steps: int
    chains: int
    thin: int
    train_steps: int
    warmup_steps: int


FULL = Sizes(steps=1_000_000, chains=100, thin=10_000, train_steps=1000, warmup_steps=1000)
QUICK = Sizes(steps=10_000, chains=100, thin=1000, train_steps=200, warmup_steps=200)


def rss_mb() -> float:
    """The resident set size now, in MB (VmRSS of ``/proc/self/status``; Linux only)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmRSS line")


def peak_rss_mb() -> float:
    """The process's peak resident set size so far, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS


class RSSMonitor:
    """Samples VmRSS in a thread while the block runs: ``start``, ``end`` and ``peak`` MB,
    and ``samples``, the number of readings (a monitor that never ran cannot pass)."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.start = self.end = self.peak = math.nan
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_mb())
            self.samples += 1

    def __enter__(self) -> RSSMonitor:
        self.start = self.peak = rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.end = rss_mb()
        self.peak = max(self.peak, self.end)

    @property
    def growth(self) -> float:
        """The most the RSS rose above its value at the start, in MB."""
        return self.peak - self.start


def ring(n: int, seed: int) -> torch.Tensor:
    """n points on a circle of radius 2 with Gaussian noise of scale 0.1."""
    g = torch.Generator().manual_seed(seed)
    angle = 2 * math.pi * torch.rand(n, generator=g)
    points = RING_RADIUS * torch.stack([angle.cos(), angle.sin()], dim=1)
    return (points + 0.1 * torch.randn(n, 2, generator=g)).to(torch.get_default_dtype())


def train_pair(train_steps: int, seed: int = 0) -> tuple[Any, Any, Gaussian, torch.Tensor]:
    """A small DAE trained on the ring: (encoder, decoder, corruption, data)."""
    torch.manual_seed(seed)
    data = ring(2000, seed)
    encoder = lae.GaussianEncoder(2, 2, hidden=(32,), noise=0.1)
    decoder = lae.GaussianDecoder(2, 2, hidden=(32,))
    corruption = Gaussian(SIGMA)
    lae.fit(encoder, decoder, data, corruption, steps=train_steps, batch_size=128, lr=3e-3,
            validation=None, progress=False, seed=seed)  # fmt: skip
    return encoder.eval(), decoder.eval(), corruption, data


def soak(
    encoder: Any,
    decoder: Any,
    corruption: Gaussian,
    x0: torch.Tensor,
    steps: int,
    thin: int,
    seed: int,
) -> dict[str, Any]:
    """Run ``gsn_chain`` from ``x0`` for ``steps`` steps keeping every ``thin``-th state,
    under an ``RSSMonitor``; return the figures."""
    peak_before = peak_rss_mb()
    with RSSMonitor() as memory:
        start = time.perf_counter()
        idata = lae.gsn_chain(encoder, decoder, corruption, x0, steps, thin=thin, seed=seed)
        seconds = time.perf_counter() - start
        draws = torch.as_tensor(idata.posterior["x"].values)  # (chain, draw, 2)
        del idata
    finite = torch.isfinite(draws).all(-1)
    radius = draws[finite].norm(dim=-1)
    chains = x0.shape[0]
    return {
        "steps": steps,
        "chains": chains,
        "thin": thin,
        "seconds": seconds,
        "steps_per_s": steps / seconds,
        "chain_steps_per_s": steps * chains / seconds,
        "kept_draws": int(draws.shape[1]),
        "rss_start_mb": memory.start,
        "rss_end_mb": memory.end,
        "rss_peak_mb": memory.peak,
        "rss_growth_mb": memory.growth,
        "rss_samples": memory.samples,
        "peak_rss_before_mb": peak_before,
        "peak_rss_after_mb": peak_rss_mb(),
        "every_state_mb": steps * chains * x0.shape[1] * x0.element_size() / 2**20,
        "finite_share": float(finite.double().mean()),
        "mean_radius": float(radius.mean()) if radius.numel() else math.nan,
    }


def run(sizes: Sizes, bound_mb: float = BOUND_MB) -> dict[str, Any]:
    encoder, decoder, corruption, data = train_pair(sizes.train_steps)
    x0 = data[: sizes.chains]
    # One short chain first: the first calls allocate what every later call reuses.
    soak(encoder, decoder, corruption, x0, sizes.warmup_steps, sizes.warmup_steps, seed=1)
    result = soak(encoder, decoder, corruption, x0, sizes.steps, sizes.thin, seed=2)
    result.update(
        sizes=asdict(sizes),
        bound_mb=bound_mb,
        data_mean_radius=float(data.norm(dim=-1).mean()),
        machine=machine(pyro=__import__("pyro").__version__),
        load_average=os.getloadavg(),
    )
    return result


def report(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"machine   {m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']} "
          f"({m['torch_threads']} threads), load {r['load_average'][0]:.2f}")  # fmt: skip
    print(f"chain     {r['chains']} chains x {r['steps']} steps, every {r['thin']}-th state "
          f"kept ({r['kept_draws']} per chain)")  # fmt: skip
    print(f"speed     {r['seconds']:.1f} s, {r['steps_per_s']:.0f} steps/s, "
          f"{r['chain_steps_per_s']:.3g} chain-steps/s")  # fmt: skip
    print(f"RSS       {r['rss_start_mb']:.1f} MB before, {r['rss_end_mb']:.1f} MB after, "
          f"{r['rss_peak_mb']:.1f} MB at most ({r['rss_samples']} readings): growth "
          f"{r['rss_growth_mb']:.1f} MB")  # fmt: skip
    print(f"peak RSS  {r['peak_rss_before_mb']:.1f} MB before the chain, "
          f"{r['peak_rss_after_mb']:.1f} MB after (getrusage)")  # fmt: skip
    verdict = "met" if r["rss_growth_mb"] < r["bound_mb"] else "NOT met"
    print(f"bound     growth < {r['bound_mb']:.0f} MB: {verdict} (keeping every state would "
          f"take {r['every_state_mb']:.0f} MB)")  # fmt: skip
    print(f"chains    {100 * r['finite_share']:.1f}% of kept states finite, mean radius "
          f"{r['mean_radius']:.3f} (data {r['data_mean_radius']:.3f})")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10^4 steps: a smoke run")
    parser.add_argument("--steps", type=int, help="chain steps (default: 10^6, quick 10^4)")
    parser.add_argument("--chains", type=int, help="chains (default: 100)")
    parser.add_argument("--thin", type=int, help="keep every THIN-th state (default: 10^4)")
    parser.add_argument("--bound-mb", type=float, default=BOUND_MB,
                        help=f"allowed RSS growth (default: {BOUND_MB:g} MB)")  # fmt: skip
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    given = {k: getattr(args, k) for k in ("steps", "chains", "thin") if getattr(args, k)}
    result = run(replace(sizes, **given), args.bound_mb)
    report(result)
    if args.json:
        write_json(args.json, result)
    return 0 if result["rss_growth_mb"] < args.bound_mb else 1


if __name__ == "__main__":
    sys.exit(main())
