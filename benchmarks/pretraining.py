"""Greedy layer-wise pretraining vs. random initialization of a deep DAE, on real digits.

What is measured
----------------
Data: the 8x8 digits of ``models/digits.py`` (1797 rows x 64 pixels in [0, 1]); a fixed,
seeded 20% of the rows is held out as the test set and never trained on.

Both arms train the SAME architecture, ``latentae.stack.deep_autoencoder`` with widths
64 -> 128 -> 64 -> 32 (an over-complete first layer, as in Vincent et al. 2010), sigmoid
units, a deterministic encoder and Gaussian output units with a free diagonal scale, under
the same corruption (masking noise, p = 0.25), batch size (128), optimizer (Adam, lr 1e-3)
and the same total number of optimizer steps:

- **pretrained**: ``latentae.stack.pretrain_stack``: each of the 3 layers trained as a
  shallow DAE on the clean code of the layer below, then the deep pair fine-tuned end to end;
- **random init**: the same deep pair from the same initialization (same seed) trained end to
  end with ``latentae.fit`` for (3 x steps per layer + fine-tuning steps) steps.

Why sigmoid units: greedy pretraining was proposed for, and shown to help, deep nets of
saturating units (Hinton et al. 2006; Bengio et al. 2007; Vincent et al. 2010), whose
gradients vanish through random layers. With SiLU/ReLU units and Adam a net this shallow
trains easily from scratch, so that would test a setting where nobody claims pretraining
helps (``--activation silu`` runs it anyway). Why masking noise: it is Vincent et al.'s
corruption for images, and it applies unchanged to the codes of the upper layers.

Figures, on the held-out test rows, per seed and as mean ± standard error over seeds:

- **MSE**: mean squared error per pixel of the decoder mean given the encoder mean of the
  clean test inputs (no corruption);
- **DAE NLL**: -log p_dec(x | h), h = f(x̃), x̃ ~ C(x̃ | x), in nats per image, averaged over 20
  corruption draws (the same draws for both arms); also split into the near-constant pixels
  (training standard deviation < 0.02, i.e. almost always 0) and the others;
- the training-set MSE, to tell an optimization gap from a generalization gap.

The pretrained stack is also scored right after pretraining, before fine-tuning. Whether
pretraining wins is decided on the paired per-seed differences (pretrained - random): a win
or a loss when the mean difference is more than 2 standard errors from zero, otherwise no
clear difference.

Reading the NLL: the deep decoder's output scale is trained only during layer 1's
pretraining and the fine-tuning (2 of the 4 phases) in the pretrained arm, but at every step
in the random arm. On a near-constant pixel the NLL falls like log(scale) for as long as the
scale trains, so that part of the NLL rewards steps spent on the scale rather than a better
reconstruction; the MSE does not depend on the scale.

Equal steps are not equal compute: the upper layers' steps are cheaper, so the wall time of
each arm is printed too.

The networks are tiny, so torch runs on one intra-op thread by default (``--threads``): on a
loaded 2-core machine a second thread slows each step down by orders of magnitude.

Usage::

    python benchmarks/pretraining.py           # full run (a few minutes on 2 cores)
    python benchmarks/pretraining.py --quick   # smoke run, well under a minute
    python benchmarks/pretraining.py --json out.json
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from common import machine, write_json

import latentae as lae
from latentae._util import seeded
from latentae.corruption import Masking
from latentae.stack import StackedDecoder, StackedEncoder, deep_autoencoder, pretrain_stack

MODEL = Path(__file__).resolve().parents[1] / "models" / "digits.py"
WIDTHS = (128, 64, 32)
CORRUPTION = Masking(0.25)
BATCH_SIZE = 128
LR = 1e-3
TEST_FRACTION = 0.2
SPLIT_SEED = 0
EVAL_SEED = 12345
EVAL_DRAWS = 20
# Pixels whose training standard deviation is below a third of one grey level (1/16) are
# almost always 0; their Gaussian NLL falls like log(scale) for as long as the scale trains.
NEAR_CONSTANT = 0.02


@dataclass(frozen=True)
class Sizes:
    """How much work the benchmark does."""

    steps_per_layer: int
    finetune_steps: int
    seeds: int


FULL = Sizes(steps_per_layer=2000, finetune_steps=2000, seeds=5)
QUICK = Sizes(steps_per_layer=100, finetune_steps=100, seeds=3)


def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n_test = round(TEST_FRACTION * len(x))
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
    return x[perm[n_test:]], x[perm[:n_test]]


@torch.no_grad()
def score(
    enc: StackedEncoder, dec: StackedDecoder, x: torch.Tensor, near_constant: torch.Tensor
) -> dict[str, float]:
    """Reconstruction MSE of clean inputs and the DAE NLL under corruption, on rows x; the
    NLL also split into the near-constant pixels and the others."""
    enc.eval()
    dec.eval()
    mse = float((dec.mean_map(enc.mean_map(x)) - x).pow(2).mean())
    per_pixel = torch.zeros(x.shape[1])
    with seeded(EVAL_SEED):
        for _ in range(EVAL_DRAWS):
            h = enc(CORRUPTION.sample(x)).sample()
            per_pixel += -dec(h).base_dist.log_prob(x).mean(0) / EVAL_DRAWS
    return {
        "mse": mse,
        "nll": float(per_pixel.sum()),
        "nll_near_constant": float(per_pixel[near_constant].sum()),
        "nll_other": float(per_pixel[~near_constant].sum()),
    }


def pretrained_only(result: Any, activation: str) -> tuple[StackedEncoder, StackedDecoder]:
    """The deep pair as it was after pretraining, before fine-tuning: the layers composed."""
    layers = result.layers
    enc, dec = deep_autoencoder(64, WIDTHS, activation=activation, seed=0)
    n = len(layers)
    with torch.no_grad():
        for k, layer in enumerate(layers):
            enc.layers[k].load_state_dict(layer.encoder.layers[0].state_dict())
            dec.layers[n - 1 - k].load_state_dict(layer.decoder.layers[0].state_dict())
        dec.scale_raw.copy_(layers[0].decoder.scale_raw)
    return enc, dec


def run(sizes: Sizes, activation: str) -> dict[str, Any]:
    load_before = os.getloadavg()
    x = lae.JointModel.from_file(MODEL).data()
    train, test = split(x)
    near_constant = train.std(0) < NEAR_CONSTANT
    total_steps = len(WIDTHS) * sizes.steps_per_layer + sizes.finetune_steps
    # The first training in a process imports torch._dynamo (through Adam): a one-time cost.
    enc, dec = deep_autoencoder(64, WIDTHS, activation=activation, seed=0)
    lae.fit(enc, dec, train, CORRUPTION, steps=1, validation=None, progress=False)

    rows = []
    for seed in range(sizes.seeds):
        start = time.perf_counter()
        stacked = pretrain_stack(
            train,
            WIDTHS,
            CORRUPTION,
            steps_per_layer=sizes.steps_per_layer,
            finetune_steps=sizes.finetune_steps,
            batch_size=BATCH_SIZE,
            lr=LR,
            activation=activation,
            output="gaussian",
            seed=seed,
            progress=False,
            validation=None,
        )
        pre_seconds = time.perf_counter() - start
        assert stacked.steps == total_steps
        before = score(*pretrained_only(stacked, activation), test, near_constant)

        start = time.perf_counter()
        enc, dec = deep_autoencoder(64, WIDTHS, activation=activation, seed=seed)
        lae.fit(enc, dec, train, CORRUPTION, steps=total_steps, batch_size=BATCH_SIZE, lr=LR,
                seed=seed, validation=None, progress=False)  # fmt: skip
        rand_seconds = time.perf_counter() - start

        rows.append({
            "seed": seed,
            "pretrained": {**score(stacked.encoder, stacked.decoder, test, near_constant),
                           "train_mse": score(stacked.encoder, stacked.decoder, train,
                                              near_constant)["mse"],
                           "seconds": pre_seconds,
                           "layer_seconds": [r.seconds for r in stacked.layers]},
            "pretrained_before_finetuning": before,
            "random": {**score(enc, dec, test, near_constant),
                       "train_mse": score(enc, dec, train, near_constant)["mse"],
                       "seconds": rand_seconds},
        })  # fmt: skip
        print(
            f"  seed {seed}: pretrained {pre_seconds:.1f} s, random init {rand_seconds:.1f} s",
            file=sys.stderr,
        )

    summary = {}
    for metric in ("mse", "nll", "nll_near_constant", "nll_other", "train_mse"):
        pre = [r["pretrained"][metric] for r in rows]
        rnd = [r["random"][metric] for r in rows]
        diff = [a - b for a, b in zip(pre, rnd, strict=True)]
        d_mean, d_se = mean_se(diff)
        verdict = (
            "pretraining wins" if d_mean < -2 * d_se
            else "pretraining loses" if d_mean > 2 * d_se
            else "no clear difference"
        )  # fmt: skip
        summary[metric] = {
            "pretrained": mean_se(pre),
            "random": mean_se(rnd),
            "difference": (d_mean, d_se),
            "pretrained_better_seeds": sum(d < 0 for d in diff),
            "verdict": verdict,
        }
    for metric in ("mse", "nll"):
        summary[metric]["before_finetuning"] = mean_se(
            [r["pretrained_before_finetuning"][metric] for r in rows]
        )
    return {
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "sizes": asdict(sizes),
        "setup": {
            "data": "models/digits.py",
            "train_rows": len(train),
            "test_rows": len(test),
            "widths": [64, *WIDTHS],
            "activation": activation,
            "output": "gaussian",
            "corruption": CORRUPTION.to_config(),
            "near_constant_pixels": int(near_constant.sum()),
            "batch_size": BATCH_SIZE,
            "lr": LR,
            "optimizer": "adam",
            "total_steps": total_steps,
        },
        "rows": rows,
        "summary": summary,
    }


def mean_se(values: list[float]) -> tuple[float, float]:
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return statistics.fmean(values), se


def report(result: dict[str, Any], wall: float) -> None:
    m, s, z = result["machine"], result["setup"], result["sizes"]
    print(
        f"machine: {m['platform']}, {m['cpu_count']} CPUs, python {m['python']}, "
        f"torch {m['torch']} ({m['torch_threads']} thread(s)); load average (1 min) "
        f"{result['load_average_before'][0]:.2f} before, {result['load_average_after'][0]:.2f} "
        "after"
    )
    print(
        f"digits: {s['train_rows']} train / {s['test_rows']} test rows; widths "
        f"{' -> '.join(map(str, s['widths']))}, {s['activation']} units, Gaussian output; "
        f"{CORRUPTION!r}; Adam lr {s['lr']}, batch {s['batch_size']}"
    )
    print(
        f"steps per arm: {s['total_steps']} (pretrained: {len(WIDTHS)} layers x "
        f"{z['steps_per_layer']} + {z['finetune_steps']} fine-tuning; random init: "
        f"{s['total_steps']} end to end); {z['seeds']} seeds"
    )
    print()
    header = (
        f"{'seed':>4} | {'test MSE':>9} {'test MSE':>9} | {'test NLL':>9} {'test NLL':>9} | "
        f"{'trainMSE':>9} {'trainMSE':>9} | {'seconds':>7} {'seconds':>7}"
    )
    sub = (
        f"{'':>4} | {'pretrain':>9} {'random':>9} | {'pretrain':>9} {'random':>9} | "
        f"{'pretrain':>9} {'random':>9} | {'pretrain':>7} {'random':>7}"
    )
    print(header)
    print(sub)
    print("-" * len(header))
    for r in result["rows"]:
        p, q = r["pretrained"], r["random"]
        print(
            f"{r['seed']:>4} | {p['mse']:>9.5f} {q['mse']:>9.5f} | {p['nll']:>9.2f} "
            f"{q['nll']:>9.2f} | {p['train_mse']:>9.5f} {q['train_mse']:>9.5f} | "
            f"{p['seconds']:>7.1f} {q['seconds']:>7.1f}"
        )
    print()
    n_const = s["near_constant_pixels"]
    for metric, label, fmt in (
        ("mse", "test MSE per pixel", ".5f"),
        ("nll", "test DAE NLL (nats/image)", ".2f"),
        ("nll_near_constant", f"  of it, {n_const} near-const. px", ".2f"),
        ("nll_other", f"  of it, other {64 - n_const} pixels", ".2f"),
        ("train_mse", "train MSE per pixel", ".5f"),
    ):
        t = result["summary"][metric]
        (pm, ps), (rm, rs), (dm, ds) = t["pretrained"], t["random"], t["difference"]
        print(
            f"{label:<26} pretrained {pm:{fmt}} ± {ps:{fmt}}   random {rm:{fmt}} ± {rs:{fmt}}   "
            f"difference {dm:+{fmt}} ± {ds:{fmt}}   better in {t['pretrained_better_seeds']}/"
            f"{len(result['rows'])} seeds: {t['verdict']}"
        )
    for metric, label, fmt in (("mse", "test MSE", ".5f"), ("nll", "test DAE NLL", ".2f")):
        bm, bs = result["summary"][metric]["before_finetuning"]
        print(f"pretrained stack before fine-tuning: {label} {bm:{fmt}} ± {bs:{fmt}}")
    seconds = [r["pretrained"]["layer_seconds"] for r in result["rows"]]
    per_layer = [statistics.fmean(col) for col in zip(*seconds, strict=True)]
    print(
        "mean seconds per pretraining layer: "
        + ", ".join(f"layer {k + 1} {t:.1f}" for k, t in enumerate(per_layer))
    )
    print(f"wall time: {wall:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--activation", default="sigmoid", help="sigmoid (default), silu, ...")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = run(QUICK if args.quick else FULL, args.activation)
    wall = time.perf_counter() - start
    result["wall_seconds"] = wall
    report(result, wall)
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
