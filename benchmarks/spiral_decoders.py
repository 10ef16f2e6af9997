"""Why the spiral's DAE pair stays incompatible: a more flexible decoder, and nearby pairs.

What is measured
----------------
On ``models/spiral.py`` (float32, CPU), against 5000 held-out rows, the figures quoted in
docs/results/README.md:

- **decoder family**: a DAE with an MLP encoder (64x64, injected noise 0.1, 1-D code) and
  either the 5-component mixture-density decoder or a conditional spline flow (4
  transforms, 64x64), trained 3000 steps at corruption sigma 0.2 on n = 20000 rows, two
  seeds: the final training loss and the cross-ratio (1000 random pairs). A decoder that
  represents the reverse conditional better fits better; if incompatibility were its
  approximation error alone, the cross-ratio would fall with it.
- **nearby pairs**: the study's pair (MLP width 128, mixture decoder, corruption 0.5, 1500
  steps) at n = 200, 2000, 20000, two seeds: the cross-ratio over random pairs and over
  pairs of rows within distance 0.25, 0.5 and 1 of each other, with the encoder's density
  estimated from 1024 corruption draws (its Monte Carlo noise is then small against the
  nearby pairs' cross-differences), and the interaction diagnostic. If incompatibility
  lived only in the far tails, where neither conditional was trained, nearby pairs would be
  compatible.

Usage::

    python benchmarks/spiral_decoders.py           # full run (about 8 minutes on 2 cores)
    python benchmarks/spiral_decoders.py --quick   # smoke run, under a minute
    python benchmarks/spiral_decoders.py --json out.json
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, quick_or_full_main

import latentae as lae
from latentae._util import seeded
from latentae.compat import cross_ratio, interaction
from latentae.corruption import Gaussian

ROOT = Path(__file__).resolve().parents[1]
FULL = {"family_n": 20_000, "family_steps": 3000, "sizes": [200, 2000, 20_000],
        "steps": 1500, "seeds": [0, 1], "corruptions": 1024}  # fmt: skip
QUICK = {"family_n": 500, "family_steps": 50, "sizes": [200, 500], "steps": 50,
         "seeds": [0], "corruptions": 64}  # fmt: skip
RADII = (0.25, 0.5, 1.0)


def nearby_cross_ratio(encoder: Any, decoder: Any, x: torch.Tensor, radius: float) -> float:
    """The cross-ratio over 1000 random pairs of distinct rows within ``radius`` of each
    other (the statistic of ``latentae.compat.cross_ratio``, on chosen pairs)."""
    with seeded(0), torch.no_grad():
        h = encoder(x).sample()
        distance = torch.cdist(x, x)
        i_all, j_all = ((distance < radius) & (distance > 0)).nonzero(as_tuple=True)
        pick = torch.randint(0, len(i_all), (1000,))
        i, j, p = i_all[pick], j_all[pick], len(pick)
        xs, hs = torch.cat([x[i], x[j]]), torch.cat([h[i], h[j]])
        xc, hc = torch.cat([x[j], x[i]]), torch.cat([h[j], h[i]])
        e, d = encoder(xs), decoder(hs)
        le_same, le_cross = e.log_prob(hs), e.log_prob(hc)
        ld_same, ld_cross = d.log_prob(xs), d.log_prob(xc)
        delta_e = (le_same[:p] - le_cross[p:]) + (le_same[p:] - le_cross[:p])
        delta_d = (ld_same[:p] - ld_cross[p:]) + (ld_same[p:] - ld_cross[:p])
        ratio = ((delta_e - delta_d) ** 2).mean() / (0.5 * (delta_e**2 + delta_d**2)).mean()
    return float(ratio)


def train(x: torch.Tensor, encoder: Any, decoder: Any, sigma: float, steps: int, seed: int,
          lr: float) -> float:  # fmt: skip
    fit = lae.fit(encoder, decoder, x, Gaussian(sigma), steps=steps,
                  batch_size=min(256, len(x) // 2), lr=lr, schedule="cosine", validation=None,
                  progress=False, seed=seed)  # fmt: skip
    return float(fit.history["loss"][-1])


def run(size: dict[str, Any]) -> dict[str, Any]:
    jm = lae.JointModel.from_file(ROOT / "models" / "spiral.py")
    _, held = jm.sample(5000, seed=1_000_003)
    family = []
    for seed in size["seeds"]:
        _, x = jm.sample(size["family_n"], seed=seed)
        for name in ("mixture", "flow"):
            torch.manual_seed(seed)
            encoder = lae.GaussianEncoder(2, 1, hidden=(64, 64), noise=0.1)
            decoder = (lae.FlowDecoder(1, 2, hidden=(64, 64)) if name == "flow"
                       else lae.MixtureDecoder(1, 2, hidden=(64, 64), components=5))  # fmt: skip
            start = time.perf_counter()
            loss = train(x, encoder, decoder, 0.2, size["family_steps"], seed, lr=3e-3)
            r = cross_ratio(lae.corrupt(encoder, Gaussian(0.2)), decoder, held, 1000, seed=0)
            family.append({"decoder": name, "seed": seed, "loss": loss,
                           "cross_ratio": r.statistic, "cross_ratio_se": r.stderr,
                           "seconds": time.perf_counter() - start})  # fmt: skip
    nearby = []
    for n in size["sizes"]:
        for seed in size["seeds"]:
            _, x = jm.sample(n, seed=seed)
            torch.manual_seed(seed)
            encoder = lae.GaussianEncoder(2, 1, hidden=(128,), noise=0.1)
            decoder = lae.MixtureDecoder(1, 2, hidden=(128,))
            train(x, encoder, decoder, 0.5, size["steps"], seed, lr=1e-2)
            e = lae.corrupt(encoder, Gaussian(0.5), num_corruptions=size["corruptions"])
            nearby.append({
                "n": n, "seed": seed,
                "cross_ratio": cross_ratio(e, decoder, held, 1000, seed=0).statistic,
                **{f"within_{r}": nearby_cross_ratio(e, decoder, held, r) for r in RADII},
                "interaction": interaction(e, decoder, held, 64, seed=0).statistic,
            })  # fmt: skip
    return {"machine": machine(), "size": size, "decoder_family": family, "nearby": nearby}


def report(result: dict[str, Any]) -> None:
    print("decoder family (corruption 0.2):")
    for c in result["decoder_family"]:
        ratio = f"{c['cross_ratio']:.3f} ± {c['cross_ratio_se']:.3f}"
        print(f"  {c['decoder']:8s} seed {c['seed']}: loss {c['loss']:.3f}, cross-ratio {ratio} "
              f"({c['seconds']:.0f} s)")  # fmt: skip
    print("nearby pairs (study's pair, corruption 0.5):")
    for c in result["nearby"]:
        within = ", ".join(f"within {r}: {c[f'within_{r}']:.3f}" for r in RADII)
        print(f"  n {c['n']:6d} seed {c['seed']}: all pairs {c['cross_ratio']:.3f}, {within}, "
              f"interaction {c['interaction']:.3f}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return quick_or_full_main(__doc__, run, report, FULL, QUICK, argv)


if __name__ == "__main__":
    raise SystemExit(main())
