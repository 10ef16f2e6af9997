"""Steps per second of ``latentae.fit`` against a hand-written PyTorch training loop.

What is measured
----------------
For each pair of modules the script times whole training runs of a fixed number of
optimizer steps and reports the median wall time per step:

- **baseline**: the plain loop a user would write, doing per step exactly the work of a DAE
  step and nothing else: a minibatch taken by shuffled indices (``torch.randperm`` once per
  epoch) of a data tensor on the device, ``x_tilde = corruption.sample(x)`` with the same
  corruption object, ``q = encoder(x_tilde)``, ``h = q.rsample()``,
  ``loss = -decoder(h).log_prob(x).mean()``, ``zero_grad``, ``backward`` and an Adam
  ``step``. No progress bar, no validation, no checkpoints, no loss read-out.
- **fit**: ``latentae.fit`` with ``validation=None, progress=False, checkpoint=None`` and
  the same Adam learning rate, batch size, steps, data tensor and device: the trainer's own
  overhead (argument checks, the finiteness scan of the data, the sampler, the seeded RNG
  fork, the ``DAELoss`` module, the loss history read out every ``log_every`` steps).
- **fit, defaults**: ``latentae.fit`` with its defaults for validation and progress
  (``validation=0.1``, scored about 20 times per run, and
  ``progress=True`` with the bar going to a non-terminal, so tqdm hides it), still without
  a checkpoint. It trains on 90 % of the rows, which changes nothing per step; the extra
  time is what the defaults cost.
- **fit, bar drawn** (a separate, informational row): as *fit, defaults* but with tqdm
  drawing into a (fake) terminal, so the cost of rendering the bar is included.

Each timed run starts from fresh modules identical to one template (deep copies), a fresh
Adam optimizer and the same seed, and the clock covers the whole call (for the baseline:
building the optimizer and the loop), divided by the steps. Before timing, every variant is
run once briefly (the first Adam step imports ``torch._dynamo``, ~2 s). The variants are
then interleaved over several rounds (the order reversed every other round, so drift in the
machine's load hits all of them alike) and the median per step is reported together with
the ratio of the medians, fit / baseline, which decides whether a target is met. Beside it
the script prints the median and range of the per-round ratios (fit / baseline of the same
round, runs close in time): on a shared machine, where another process can slow a whole
run several-fold, that paired figure is the more robust one. All figures come from one
process in one run.

The pairs:

- **small** (PPCA-sized): ``GaussianEncoder(5, 2, noise=0.1)`` and
  ``GaussianDecoder(2, 5, cov="full")``, batch 256, 20000 x 5 rows simulated from
  ``models/ppca.py``, corruption ``Gaussian(0.5)``. Here a step takes about a
  millisecond on 2 CPU cores, so Python overhead per step shows.
- **mnist** (MNIST-sized, 784-400-50): ``GaussianEncoder(784, 50, hidden=(400,),
  noise=0.1)`` and ``BernoulliDecoder(50, 784, hidden=(400,))``, batch 128, 20000 x 784
  random binary rows (each pixel on with probability 0.5), corruption ``Masking(0.25)``.

Targets: fit / baseline <= 1.05 at the MNIST size and <= 1.2 at the small size. When a
target is missed (or with ``--profile``), the script profiles one ``fit`` run with
cProfile and prints the functions with the most time of their own, and latentae's
functions by cumulative time.

The machine's load matters. torch's worker threads spin between parallel regions (even
at the small size, where they have nothing to do, the process uses two cores), so another
process on a 2-core machine can slow a run several-fold. The load average is printed before
and after (the latter counts this benchmark's own threads, which are discounted), with the
worst slowest/fastest spread over the rounds of any variant; the figures are flagged as
noisy when the load is above ~1.5 or a spread above 1.5.

Usage::

    python benchmarks/trainer.py                 # full run (about 3.5 minutes on 2 idle cores)
    python benchmarks/trainer.py --quick         # smoke run, under 30 s
    python benchmarks/trainer.py --device cuda   # on a GPU (the clock waits for the device)
    python benchmarks/trainer.py --json out.json
    python benchmarks/trainer.py --profile       # cProfile of fit even if targets are met
    python benchmarks/trainer.py --threads 1     # torch.set_num_threads(1) first

With ``--quick`` the runs are so short that fit's one-time costs (the finiteness scan of the
data) and the validation scores weigh on the ratio: quick figures check that the script
runs, not the targets.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import gc
import io
import math
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from common import machine, write_json
from torch import Tensor, nn

import latentae as lae
from latentae.corruption import Corruption, Gaussian, Masking

MODEL = Path(__file__).resolve().parents[1] / "models" / "ppca.py"
LR = 1e-3
SEED = 0
ROWS = 20_000
NOISY_LOAD = 1.5
NOISY_SPREAD = 1.5


@dataclass(frozen=True)
class Sizes:
    """How much work each part of the benchmark does."""

    small_steps: int
    mnist_steps: int
    rounds: int


FULL = Sizes(small_steps=2000, mnist_steps=300, rounds=7)
QUICK = Sizes(small_steps=200, mnist_steps=30, rounds=2)


@dataclass
class Pair:
    """An encoder/decoder template, its data, corruption and batch size, and the target."""

    name: str
    description: str
    encoder: nn.Module
    decoder: nn.Module
    data: Tensor
    corruption: Corruption
    batch_size: int
    steps: int
    target: float

    def fresh(self) -> tuple[nn.Module, nn.Module]:
        """Modules identical to the template, with their own parameters."""
        return copy.deepcopy(self.encoder), copy.deepcopy(self.decoder)


def make_pairs(sizes: Sizes, device: torch.device) -> list[Pair]:
    torch.manual_seed(SEED)
    ppca = lae.JointModel.from_file(MODEL).sample(ROWS, seed=SEED)[1]
    small = Pair(
        "small",
        "GaussianEncoder(5, 2) / GaussianDecoder(2, 5, cov='full'), PPCA data, Gaussian(0.5)",
        lae.GaussianEncoder(5, 2, noise=0.1).to(device),
        lae.GaussianDecoder(2, 5, cov="full").to(device),
        ppca.to(device),
        Gaussian(0.5),
        256,
        sizes.small_steps,
        1.2,
    )
    generator = torch.Generator().manual_seed(SEED)
    binary = (torch.rand(ROWS, 784, generator=generator) < 0.5).float()
    mnist = Pair(
        "mnist",
        "GaussianEncoder(784, 50, (400,)) / BernoulliDecoder(50, 784, (400,)), random binary "
        "data, Masking(0.25)",
        lae.GaussianEncoder(784, 50, hidden=(400,), noise=0.1).to(device),
        lae.BernoulliDecoder(50, 784, hidden=(400,)).to(device),
        binary.to(device),
        Masking(0.25),
        128,
        sizes.mnist_steps,
        1.05,
    )
    return [small, mnist]


# ------------------------------------------------------------------------------ the runs


def baseline(pair: Pair, steps: int) -> None:
    """The hand-written loop: the same forward, backward and step as fit, nothing else."""
    encoder, decoder = pair.fresh()
    data, corruption, batch = pair.data, pair.corruption, pair.batch_size
    params = [*encoder.parameters(), *decoder.parameters()]
    opt = torch.optim.Adam(params, lr=LR)
    per_epoch = len(data) // batch
    step = 0
    while step < steps:
        perm = torch.randperm(len(data), device=data.device)
        this_epoch = min(per_epoch, steps - step)
        for k in range(this_epoch):
            x = data[perm[k * batch : (k + 1) * batch]]
            x_tilde = corruption.sample(x)
            q = encoder(x_tilde)
            h = q.rsample()
            loss = -decoder(h).log_prob(x).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        step += this_epoch


def fit_bare(pair: Pair, steps: int, **defaults: Any) -> None:
    """latentae.fit without validation, progress bar or checkpoints (unless ``defaults``
    puts fit's own defaults back)."""
    encoder, decoder = pair.fresh()
    options = {"validation": None, "progress": False} | defaults
    lae.fit(encoder, decoder, pair.data, pair.corruption, steps=steps,
            batch_size=pair.batch_size, lr=LR, seed=SEED, checkpoint=None, **options)  # fmt: skip


class _FakeTerminal(io.StringIO):
    """A text sink that claims to be a terminal, so that tqdm draws its bar into it."""

    def isatty(self) -> bool:
        return True


@contextlib.contextmanager
def _stderr(sink: io.StringIO) -> Iterator[None]:
    previous, sys.stderr = sys.stderr, sink
    try:
        yield
    finally:
        sys.stderr = previous


def fit_defaults(pair: Pair, steps: int, terminal: bool = False) -> None:
    """latentae.fit with its default validation (0.1) and progress bar (True); the bar goes
    to a non-terminal (hidden by tqdm) or, with ``terminal``, to a fake terminal (drawn)."""
    sink = _FakeTerminal() if terminal else io.StringIO()
    with _stderr(sink):
        fit_bare(pair, steps, validation=0.1, progress=True)


def fit_drawn(pair: Pair, steps: int) -> None:
    fit_defaults(pair, steps, terminal=True)


VARIANTS: dict[str, Callable[[Pair, int], None]] = {
    "baseline": baseline,
    "fit": fit_bare,
    "fit, defaults": fit_defaults,
    "fit, bar drawn": fit_drawn,
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[Pair, int], None], pair: Pair, steps: int) -> float:
    """Seconds per step of one run, from the same RNG state every time."""
    device = pair.data.device
    gc.collect()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(SEED)
        _sync(device)
        start = time.perf_counter()
        run(pair, steps)
        _sync(device)
        return (time.perf_counter() - start) / steps


def measure(pair: Pair, rounds: int) -> dict[str, list[float]]:
    """Seconds per step of every variant, ``rounds`` times, interleaved."""
    for run in VARIANTS.values():  # warm-up: imports, lazy initialization, allocator
        run(pair, min(pair.steps, 20))
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for r in range(rounds):
        order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
        for name in order:
            times[name].append(timed(VARIANTS[name], pair, pair.steps))
    return times


def validations(pair: Pair) -> int:
    """How often fit scores its validation rows in a run (its default ``val_every``: about
    20 times, but not more often than one pass over the held-out rows costs in batches)."""
    held_out = round(0.1 * len(pair.data))
    every = max(1, pair.steps // 20, math.ceil(held_out / pair.batch_size))
    return pair.steps // every + (pair.steps % every != 0)


def profile_fit(pair: Pair, top: int = 12) -> str:
    """cProfile of one bare fit run: the functions with the most time of their own, then
    latentae's own functions by cumulative time (where the trainer's extra work shows)."""
    profiler = cProfile.Profile()
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        profiler.enable()
        fit_bare(pair, pair.steps)
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    out.write("latentae functions by cumulative time:\n")
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(r"latentae[/\\]", top)
    return out.getvalue()


# --------------------------------------------------------------------------------- report


def run(sizes: Sizes, device: torch.device, profile: bool = False) -> dict[str, Any]:
    load_before = os.getloadavg()
    start = time.perf_counter()
    pairs = make_pairs(sizes, device)
    rows, profiles = [], {}
    for pair in pairs:
        times = measure(pair, sizes.rounds)
        median = {name: statistics.median(t) for name, t in times.items()}
        base = median["baseline"]
        ratio = median["fit"] / base
        # Runs next to each other in time see similar load: their ratio is the robust figure
        # when the machine is shared.
        paired = [f / b for f, b in zip(times["fit"], times["baseline"], strict=True)]
        rows.append(
            {
                "pair": pair.name,
                "description": pair.description,
                "batch_size": pair.batch_size,
                "steps": pair.steps,
                "ms_per_step": {name: 1e3 * m for name, m in median.items()},
                "ms_per_step_all": {name: [1e3 * t for t in ts] for name, ts in times.items()},
                "ratio": ratio,
                "ratio_per_round": paired,
                "ratio_paired_median": statistics.median(paired),
                "ratio_defaults": median["fit, defaults"] / base,
                "ratio_drawn": median["fit, bar drawn"] / base,
                "validations": validations(pair),
                "target": pair.target,
                "met": ratio <= pair.target,
            }
        )
        if ratio > pair.target or profile:
            profiles[pair.name] = profile_fit(pair)
    return {
        "machine": machine(latentae=getattr(lae, "__version__", "?")),
        "device": str(device),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "seconds": time.perf_counter() - start,
        "sizes": asdict(sizes),
        "quick": sizes == QUICK,
        "lr": LR,
        "rows": rows,
        "profiles": profiles,
        "all_met": all(r["met"] for r in rows),
        "max_spread": max(max(ts) / min(ts) for r in rows for ts in r["ms_per_step_all"].values()),
    }


def report(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(
        f"machine: {m['platform']} ({m['processor']}), {m['cpu_count']} CPUs, "
        f"python {m['python']}, torch {m['torch']} ({m['torch_threads']} threads), "
        f"device {result['device']}"
    )
    before, after = result["load_average_before"][0], result["load_average_after"][0]
    # The 1-minute average at the end counts this benchmark's own threads, which stay busy
    # (torch's worker threads spin between parallel regions): discount them.
    others_after = after - m["torch_threads"]
    spread = result["max_spread"]
    reasons = []
    if before > NOISY_LOAD:
        reasons.append(f"load {before:.2f} before the run")
    if others_after > NOISY_LOAD:
        reasons.append(f"load {after:.2f} after, {others_after:.2f} beyond this benchmark")
    if spread > NOISY_SPREAD:
        reasons.append(f"a variant's slowest run took {spread:.1f} x its fastest")
    print(
        f"load average (1 min): {before:.2f} before, {after:.2f} after (this includes the "
        f"benchmark's own {m['torch_threads']} threads); worst run-to-run spread of a variant "
        f"(slowest / fastest run): {spread:.2f}"
    )
    if reasons:
        print(f"figures are NOISY: other work shared the CPUs ({'; '.join(reasons)})")
    s = result["sizes"]
    print(
        f"median of {s['rounds']} interleaved runs per variant; Adam lr {result['lr']}; "
        f"fresh identical modules every run"
    )
    for r in result["rows"]:
        print(f"  {r['pair']}: {r['description']}; batch {r['batch_size']}, {r['steps']} steps")
    print()
    header = (
        f"{'pair':<6} {'baseline ms/step':>16} {'fit ms/step':>12} {'ratio':>6} "
        f"{'target':>7} {'met?':>5}   {'paired ratios: median, range':<29}"
    )
    print(header)
    print("-" * len(header))
    for r in result["rows"]:
        ms = r["ms_per_step"]
        rounds = r["ratio_per_round"]
        spread = f"{r['ratio_paired_median']:.3f}, {min(rounds):.3f}..{max(rounds):.3f}"
        print(
            f"{r['pair']:<6} {ms['baseline']:>16.3f} {ms['fit']:>12.3f} {r['ratio']:>6.3f} "
            f"{'<=' + str(r['target']):>7} {'yes' if r['met'] else 'NO':>5}   {spread:<29}"
        )
    print(
        "ratio: median fit / median baseline (decides 'met?'); paired ratios: fit / baseline\n"
        "within each round (runs close in time, so a robust check when the CPUs are shared)"
    )
    print()
    print("the cost of fit's defaults (validation=0.1, progress=True):")
    header = (
        f"{'pair':<6} {'fit, defaults ms/step':>22} {'x baseline':>11} "
        f"{'fit, bar drawn ms/step':>23} {'x baseline':>11} {'validations':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in result["rows"]:
        ms = r["ms_per_step"]
        print(
            f"{r['pair']:<6} {ms['fit, defaults']:>22.3f} {r['ratio_defaults']:>11.3f} "
            f"{ms['fit, bar drawn']:>23.3f} {r['ratio_drawn']:>11.3f} {r['validations']:>12}"
        )
    print("  (defaults: the bar goes to a non-terminal and tqdm hides it; bar drawn: to a fake")
    print("   terminal; both train on 90 % of the rows and score the other 10 % (2000 rows)")
    print("   about 20 times per run, at most once per pass's worth of training batches)")
    print()
    verdict = "all targets MET" if result["all_met"] else "target(s) NOT MET"
    if result["quick"]:
        verdict += " (--quick: runs too short to test the targets)"
    print(f"{verdict}; benchmark took {result['seconds']:.1f} s")
    for name, text in result["profiles"].items():
        print()
        print(f"cProfile of one bare fit run ({name}), by own time:")
        print(text.rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps, for a smoke run")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to train")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument(
        "--profile", action="store_true", help="print the cProfile of fit even if targets are met"
    )
    parser.add_argument(
        "--threads", type=int, metavar="N", help="torch threads (default: torch's own choice)"
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device on this machine")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    result = run(QUICK if args.quick else FULL, torch.device(args.device), args.profile)
    report(result)
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
