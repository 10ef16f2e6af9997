"""Effective samples per second of three posterior encoders on one PPCA observation.

What is measured
----------------
For one observation x of ``models/ppca.py`` (simulated with a fixed seed), each encoder
draws from p(h | x) through ``latentae.sample_posterior``, which returns ArviZ
``InferenceData``. For each encoder the script reports

- **min ESS**: the minimum over the latent's coordinates of ArviZ's bulk effective sample
  size (``arviz.ess(idata)``, rank-normalized, over all chains);
- **seconds**: the wall time of the whole ``sample_posterior`` call, so NUTS pays for its
  warmup and for every chain, and laplace/amortized pay for building their distribution for
  x (Newton's method, or a network's forward pass) and for drawing and packing the draws;
- **ESS/s** = min ESS / seconds, and its ratio to NUTS's ESS/s.

The encoders are

- ``nuts``: Pyro's NUTS, 4 real chains run one after another, the baseline;
- ``laplace``: the Laplace approximation, which is the exact posterior for PPCA
  (linear-Gaussian), found per observation by Newton's method;
- ``amortized``: a full-covariance Gaussian network q(h | x) trained once beforehand on
  simulations of the joint. Its training time is reported separately, together with the
  number of observations after which training pays off against NUTS: training time divided
  by the per-observation saving, where the amortized encoder is timed drawing as many
  draws as NUTS's ESS (its draws are independent, so ESS ≈ draws).

The independent samplers draw many draws (4 chains x 250000 by default) so that the fixed
cost of a call does not dominate, and they are timed several times (median). NUTS is
timed once. All figures come from one process in one run, so the ratios compare like with
like on the same machine; absolute numbers depend on the machine and its load, which are
printed (torch's thread count, the load average before and after, peak memory).

ESS counts the draws' autocorrelation, not their accuracy: iid draws from a wrong q have
full ESS. So the script also prints each method's posterior-mean error against PPCA's
closed-form posterior, in posterior standard deviations, beside its Monte Carlo standard
error 1/sqrt(ESS): an error well above that is the encoder's bias, not noise.

The target checked at the end: both the amortized and the exact (laplace) encoders reach at
least 10^4 times NUTS's ESS/s.

Usage::

    python benchmarks/posterior.py           # full run (a few minutes on 2 cores)
    python benchmarks/posterior.py --quick   # smoke run, well under 30 s
    python benchmarks/posterior.py --json out.json
"""

from __future__ import annotations

import math
import os
import resource
import runpy
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyro
import torch

import latentae as lae

# arviz 0.23 announces its 1.0 refactor on import; it says nothing about these figures.
warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
warnings.filterwarnings("ignore", message=".*ArviZ is undergoing a major refactor.*")
import arviz as az  # noqa: E402
from common import machine, quick_or_full_main  # noqa: E402

MODEL = Path(__file__).resolve().parents[1] / "models" / "ppca.py"
TARGET = 1e4
X_SEED = 0
CHAINS = 4


@dataclass(frozen=True)
class Sizes:
    """How much work each part of the benchmark does."""

    nuts_samples: int
    nuts_warmup: int
    draws: int  # per chain, for the independent samplers
    repeats: int
    amortized_steps: int


FULL = Sizes(nuts_samples=1000, nuts_warmup=1000, draws=250_000, repeats=5, amortized_steps=3000)
QUICK = Sizes(nuts_samples=50, nuts_warmup=50, draws=20_000, repeats=3, amortized_steps=100)


@dataclass(frozen=True)
class Row:
    """One encoder's figures."""

    method: str
    chains: int
    draws_per_chain: int
    min_ess: float
    seconds: float
    mean_error_sd: float  # max over coordinates of |mean(draws) - exact mean| / exact sd

    @property
    def ess_per_s(self) -> float:
        return self.min_ess / self.seconds


def exact_posterior(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PPCA's closed-form posterior mean and standard deviations for one row x, shape (1, d).

    p(h | x) = N(M^-1 W^T (x - mu), s^2 M^-1) with M = W^T W + s^2 I.
    """
    consts = runpy.run_path(str(MODEL))
    W, mu, s = consts["W"].double(), consts["MU"].double(), float(consts["NOISE"])
    M = W.T @ W + s**2 * torch.eye(W.shape[1], dtype=W.dtype)
    mean = torch.linalg.solve(M, W.T @ (x[0].double() - mu))
    sd = (s**2 * torch.linalg.inv(M)).diagonal().sqrt()
    return mean, sd


def min_bulk_ess(idata: Any, latent: str) -> float:
    return float(az.ess(idata)[latent].min())


def mean_error_sd(idata: Any, latent: str, exact: tuple[torch.Tensor, torch.Tensor]) -> float:
    draws = torch.as_tensor(idata.posterior[latent].values, dtype=torch.float64)
    mean = draws.mean(dim=(0, 1))[0]  # (chain, draw, obs, k) -> (k,) for the one row
    return float(((mean - exact[0]).abs() / exact[1]).max())


def measure(
    method: str,
    encoder: lae.Conditional,
    x: torch.Tensor,
    num_samples: int,
    repeats: int,
    latent: str,
    exact: tuple[torch.Tensor, torch.Tensor],
) -> Row:
    """Time ``sample_posterior`` ``repeats`` times; the medians of time and ESS."""
    seconds, ess, errors = [], [], []
    for i in range(repeats):
        start = time.perf_counter()
        idata = lae.sample_posterior(encoder, x, num_samples, CHAINS, seed=1 + i)
        seconds.append(time.perf_counter() - start)
        ess.append(min_bulk_ess(idata, latent))
        errors.append(mean_error_sd(idata, latent, exact))
        del idata
    return Row(
        method,
        CHAINS,
        num_samples,
        statistics.median(ess),
        statistics.median(seconds),
        statistics.median(errors),
    )


def run(sizes: Sizes) -> dict[str, Any]:
    load_before = os.getloadavg()
    jm = lae.JointModel.from_file(MODEL)
    x = jm.sample(1, seed=X_SEED)[1]
    exact = exact_posterior(x)

    # The first training in a process imports torch._dynamo (through Adam): a one-time cost.
    jm.encoder("amortized", steps=1, progress=False, seed=0)
    start = time.perf_counter()
    amortized = jm.encoder("amortized", steps=sizes.amortized_steps, progress=False, seed=0)
    train_seconds = time.perf_counter() - start
    laplace = jm.encoder("laplace")
    nuts = jm.encoder(
        "nuts", num_samples=sizes.nuts_samples, warmup_steps=sizes.nuts_warmup, num_chains=CHAINS
    )

    # One-time costs (imports, lazy initialization) are not part of any method's rate.
    for encoder in (laplace, amortized):
        lae.sample_posterior(encoder, x, 10, CHAINS, seed=0)
    warm_nuts = jm.encoder("nuts", num_samples=5, warmup_steps=5, num_chains=1)
    lae.sample_posterior(warm_nuts, x, 5, 1, seed=0)

    rows = [
        measure("nuts", nuts, x, sizes.nuts_samples, 1, jm.latent, exact),
        measure("laplace", laplace, x, sizes.draws, sizes.repeats, jm.latent, exact),
        measure("amortized", amortized, x, sizes.draws, sizes.repeats, jm.latent, exact),
    ]
    base = rows[0]

    # Break-even: the amortized encoder drawing as many iid draws as NUTS's ESS per
    # observation, against one NUTS run per observation.
    matched = measure(
        "amortized (NUTS's ESS)",
        amortized,
        x,
        max(1, math.ceil(base.min_ess / CHAINS)),
        sizes.repeats,
        jm.latent,
        exact,
    )
    saving = base.seconds - matched.seconds
    break_even = math.ceil(train_seconds / saving) if saving > 0 else None

    ratios = {r.method: r.ess_per_s / base.ess_per_s for r in rows}
    return {
        "machine": machine(pyro=pyro.__version__, arviz=az.__version__),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "sizes": asdict(sizes),
        "x": x[0].tolist(),
        "rows": [{**asdict(r), "ess_per_s": r.ess_per_s, "ratio": ratios[r.method]} for r in rows],
        "amortized_training": {
            "seconds": train_seconds,
            "steps": sizes.amortized_steps,
            "final_loss": amortized.history[-1]["loss"],
            "matched_draws_per_chain": matched.draws_per_chain,
            "matched_min_ess": matched.min_ess,
            "matched_seconds": matched.seconds,
            "nuts_seconds": base.seconds,
            "break_even_observations": break_even,
        },
        "target": TARGET,
        "target_met": all(ratios[m] >= TARGET for m in ("laplace", "amortized")),
    }


def report(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(
        f"machine: {m['platform']} ({m['processor']}), {m['cpu_count']} CPUs, "
        f"python {m['python']}, torch {m['torch']} ({m['torch_threads']} threads), "
        f"pyro {m['pyro']}, arviz {m['arviz']}"
    )
    before, after = result["load_average_before"], result["load_average_after"]
    print(
        f"load average (1 min): {before[0]:.2f} before, {after[0]:.2f} after; "
        f"peak RSS {result['peak_rss_mib']:.0f} MiB"
    )
    s = result["sizes"]
    print(
        f"PPCA (models/ppca.py), one observation (seed {X_SEED}); NUTS: {CHAINS} chains x "
        f"({s['nuts_warmup']} warmup + {s['nuts_samples']} draws), timed once; others: "
        f"median of {s['repeats']} runs"
    )
    print()
    header = (
        f"{'method':<10} {'draws':>10} {'min ESS':>10} {'seconds':>9} {'ESS/s':>10} {'x NUTS':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in result["rows"]:
        draws = f"{r['chains']}x{r['draws_per_chain']}"
        print(
            f"{r['method']:<10} {draws:>10} {r['min_ess']:>10.0f} {r['seconds']:>9.3f} "
            f"{r['ess_per_s']:>10.3g} {r['ratio']:>9.3g}"
        )
    print()
    print(
        "posterior-mean error vs the closed form, in posterior SDs (Monte Carlo s.e. 1/sqrt(ESS)):"
    )
    for r in result["rows"]:
        se = 1 / math.sqrt(r["min_ess"])
        print(f"  {r['method']:<10} {r['mean_error_sd']:.4f}  (s.e. {se:.4f})")
    t = result["amortized_training"]
    n = t["break_even_observations"]
    pays_off = f"from {n} observation(s)" if n is not None else "never (no saving per observation)"
    print()
    print(
        f"amortized training: {t['seconds']:.1f} s ({t['steps']} steps, final loss "
        f"{t['final_loss']:.3f}), not included above"
    )
    print(
        f"per observation at NUTS's ESS: amortized {t['matched_seconds']:.4f} s "
        f"({CHAINS}x{t['matched_draws_per_chain']} draws, min ESS {t['matched_min_ess']:.0f}) "
        f"vs NUTS {t['nuts_seconds']:.1f} s -> training pays off {pays_off}"
    )
    ratios = {r["method"]: r["ratio"] for r in result["rows"]}
    verdict = "MET" if result["target_met"] else "NOT MET"
    print(
        f"target: amortized and exact (laplace) encoders at >= {result['target']:.0e} x NUTS's "
        f"ESS/s: {verdict} (laplace {ratios['laplace']:.3g} x, "
        f"amortized {ratios['amortized']:.3g} x)"
    )


def main(argv: list[str] | None = None) -> int:
    return quick_or_full_main(__doc__, run, report, FULL, QUICK, argv)


if __name__ == "__main__":
    sys.exit(main())
