"""How the compatibility of a trained DAE pair depends on the training-set size and capacity.

[`compatibility_study`][] simulates training sets of several sizes n from a
[`JointModel`][latentae.JointModel], trains a denoising autoencoder on each (for every decoder
capacity and seed), and runs the compatibility diagnostics of [`latentae.compat`][] on the
trained pair (DESIGN, section Compatibility):

- ``cross_ratio`` with the DAE's stochastic encoder ``corrupt(encoder, Gaussian(σ))``;
- ``gibbs_test`` of the x-chain against fresh held-out rows from the model;
- ``gaussian`` (closed forms) when the pair is linear-Gaussian.

The cross-ratio and the Gaussian closed forms are evaluated on the held-out rows, i.e. on
(a large sample of) the model's own law rather than on the training rows, so that they
measure the pair's distance from the model, not from its own training sample.

The result holds one dict per (n, capacity, seed) cell, summaries across seeds (mean and
standard error), and the least-squares slope of log(statistic) against log(n) per capacity.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib.figure import Figure

from latentae._util import atomic_write_text
from latentae.compat import cross_ratio, gaussian, gibbs_test
from latentae.corruption import Gaussian
from latentae.dae import fit
from latentae.denoising import corrupt
from latentae.plots import save_figure
from latentae.units import GaussianDecoder, GaussianEncoder, MixtureDecoder

if TYPE_CHECKING:
    import os

    from latentae.joint import JointModel

__all__ = ["SLOPE_STATISTICS", "STATISTICS", "StudyResult", "compatibility_study"]

# Cell statistics summarized across seeds (those absent from a cell are skipped).
STATISTICS = (
    "cross_ratio",
    "gaussian_kl",
    "gaussian_mismatch",
    "stationary_kl",
    "gibbs_mmd",
    "gibbs_energy",
    "loss",
    "seconds",
)
# Statistics whose log-log slope against n is reported (positive by construction).
SLOPE_STATISTICS = ("cross_ratio", "gaussian_kl")
# Held-out rows drawn from the model for the diagnostics, and the seed offset of that draw
# (far from the training seeds so that the rows are independent of every training set).
_HELDOUT_ROWS, _HELDOUT_SEED = 5000, 1_000_003
_NOISE = 0.1  # the encoder's injected noise
_LINEAR_CAPACITIES = ("diag", "full")
_MLP_CAPACITIES = ((32,), (128,))


def _label(capacity: Any) -> str:
    """A capacity as a JSON key: ``"full"``, or ``"32"`` / ``"64x64"`` for hidden widths."""
    if isinstance(capacity, str):
        return capacity
    return "x".join(str(w) for w in capacity)


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (sample sd with ddof 1 over √k; nan for a single value)."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return math.nan, math.nan
    se = float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else math.nan
    return float(a.mean()), se


def _slope(ns: Sequence[int], means: Sequence[float]) -> float:
    """Least-squares slope of log(mean) against log(n); nan if a mean is not positive or
    fewer than two sizes."""
    if len(ns) < 2 or any(not (m > 0 and math.isfinite(m)) for m in means):
        return math.nan
    return float(np.polyfit(np.log(np.asarray(ns, float)), np.log(np.asarray(means)), 1)[0])


def _json_safe(value: Any) -> Any:
    """nan/inf become None, so that the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


@dataclass
class StudyResult:
    """The cells of a [`compatibility_study`][] and their summaries.

    Attributes:
        cells: one dict per (n, capacity, seed) with keys ``n``, ``capacity`` (its label),
            ``seed``, ``cross_ratio`` and ``cross_ratio_se`` (delta-method standard error),
            ``gibbs_mmd``, ``gibbs_mmd_pvalue``, ``gibbs_energy``, ``gibbs_energy_pvalue``,
            ``gibbs_floor_mmd``, ``gibbs_floor_energy``, for a linear-Gaussian pair
            ``gaussian_kl`` (E_h KL(q(x|h) ‖ d(x|h)), exact, no standard error),
            ``gaussian_mismatch`` and ``stationary_kl``, then ``loss`` (the final training
            loss) and ``seconds`` (the cell's wall time).
        config: the settings of the study.
        seconds: wall time of the whole study.
    """

    cells: list[dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def sizes(self) -> list[int]:
        """The training-set sizes, ascending."""
        return sorted({c["n"] for c in self.cells})

    @property
    def capacities(self) -> list[str]:
        """The capacity labels, in order of first appearance."""
        return list(dict.fromkeys(c["capacity"] for c in self.cells))

    def values(self, statistic: str, capacity: str, n: int) -> list[float]:
        """The statistic over seeds in one (capacity, n) group (cells lacking it skipped)."""
        return [
            float(c[statistic])
            for c in self.cells
            if c["capacity"] == capacity and c["n"] == n and statistic in c
        ]

    def summary(self) -> dict[str, dict[str, dict[str, list[float]]]]:
        """``{capacity: {statistic: {"n": [...], "mean": [...], "se": [...]}}}``, the mean
        and standard error across seeds per training-set size."""
        out: dict[str, dict[str, dict[str, list[float]]]] = {}
        for cap in self.capacities:
            out[cap] = {}
            for stat in STATISTICS:
                rows = [(n, *_mean_se(self.values(stat, cap, n))) for n in self.sizes]
                rows = [r for r in rows if not math.isnan(r[1])]
                if rows:
                    ns, means, ses = zip(*rows, strict=True)
                    out[cap][stat] = {"n": list(ns), "mean": list(means), "se": list(ses)}
        return out

    def slopes(self) -> dict[str, dict[str, float]]:
        """``{capacity: {statistic: slope}}``: the least-squares slope of log(mean statistic
        across seeds) against log(n), for the cross-ratio and (when present) the Gaussian
        KL; nan where a mean is not positive."""
        summary = self.summary()
        return {
            cap: {
                stat: _slope(summary[cap][stat]["n"], summary[cap][stat]["mean"])
                for stat in SLOPE_STATISTICS
                if stat in summary[cap]
            }
            for cap in self.capacities
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``{"config", "seconds", "cells", "summary", "slopes"}`` (nan as None)."""
        return _json_safe(
            {
                "config": self.config,
                "seconds": self.seconds,
                "cells": self.cells,
                "summary": self.summary(),
                "slopes": self.slopes(),
            }
        )

    def figure(self) -> Figure:
        """Log-log panels of the cross-ratio, the Gibbs MMD and (when present) the Gaussian
        KL against n: one line per capacity, error bars the standard error across seeds.
        The MMD is unbiased, so it can be ≤ 0; such points are left off its log axis."""
        summary = self.summary()
        stats = [
            s
            for s in ("cross_ratio", "gaussian_kl", "gibbs_mmd")
            if any(s in summary[cap] for cap in summary)
        ]
        fig = Figure(figsize=(4.2 * len(stats), 3.6), layout="constrained")
        axes = fig.subplots(1, len(stats), squeeze=False)[0]
        for ax, stat in zip(axes, stats, strict=True):
            for cap in self.capacities:
                if stat not in summary[cap]:
                    continue
                s = summary[cap][stat]
                ns, mean = np.asarray(s["n"], float), np.asarray(s["mean"])
                se = np.nan_to_num(np.asarray(s["se"]))
                keep = mean > 0
                lower = np.minimum(se, mean * (1 - 1e-3))  # error bars stay on the log axis
                ax.errorbar(
                    ns[keep], mean[keep], yerr=[lower[keep], se[keep]], marker="o",
                    capsize=3, label=cap,
                )  # fmt: skip
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("training rows n")
            ax.set_title(stat.replace("_", " "))
            ax.legend(title="capacity", fontsize="small")
        return fig

    @classmethod
    def load(cls, path: str | os.PathLike) -> StudyResult:
        """Read a ``study.json`` written by [`save`][] (``null`` figures become nan).

        Raises:
            ValueError: the file is not valid JSON or not a study (no ``cells``).
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(
                f"{str(path)!r} is not readable JSON ({e}); delete it to start the study afresh"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
            raise ValueError(f"{str(path)!r} holds no study (no 'cells' list)")
        cells = [
            {k: (math.nan if v is None else v) for k, v in cell.items()} for cell in data["cells"]
        ]
        return cls(cells, data.get("config", {}), float(data.get("seconds") or 0.0))

    def save(self, out_dir: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``study.json`` and ``study.png`` into ``out_dir`` (created if needed), each
        atomically. Returns their paths.

        The record goes first, so a finished cell is on disk before the figure is drawn. The
        two are not replaced as one: interrupted between them, the figure lags the record by
        the last save until the next one; ``StudyResult.load(path).save(out_dir)`` redraws
        it from the record."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        json_path = atomic_write_text(out / "study.json", text + "\n")
        png_path = save_figure(self.figure(), out / "study.png")
        return json_path, png_path


def _check_ints(name: str, values: Any, minimum: int) -> tuple[int, ...]:
    if isinstance(values, int | str) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"{name} must be a non-empty sequence of integers, got {values!r}")
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
            raise ValueError(f"{name} must hold integers >= {minimum}, got {tuple(values)!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} must not repeat a value, got {tuple(values)!r}")
    return tuple(values)


def _check_capacities(capacities: Any, linear: bool) -> tuple[Any, ...]:
    if isinstance(capacities, str) or not isinstance(capacities, Sequence) or not capacities:
        raise ValueError(f"capacities must be a non-empty sequence, got {capacities!r}")
    out = []
    for cap in capacities:
        if linear:
            if cap not in _LINEAR_CAPACITIES:
                raise ValueError(
                    "for a linear-Gaussian model the capacities are decoder covariance types "
                    f"{_LINEAR_CAPACITIES}, got {cap!r}"
                )
            out.append(cap)
        else:
            if (
                isinstance(cap, int | str)
                or not isinstance(cap, Sequence)
                or not cap
                or any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in cap)
            ):
                raise ValueError(
                    "for a non-linear model the capacities are hidden widths such as (32,) "
                    f"or (64, 64), got {cap!r}"
                )
            out.append(tuple(cap))
    if len({_label(c) for c in out}) != len(out):
        raise ValueError(f"capacities must not repeat a value, got {tuple(capacities)!r}")
    return tuple(out)


def _pair(capacity: Any, x_dim: int, h_dim: int, linear: bool) -> tuple[Any, Any]:
    if linear:
        return GaussianEncoder(x_dim, h_dim, noise=_NOISE), GaussianDecoder(
            h_dim, x_dim, cov=capacity
        )
    return GaussianEncoder(x_dim, h_dim, hidden=capacity, noise=_NOISE), MixtureDecoder(
        h_dim, x_dim, hidden=capacity
    )


# Settings that must agree for an earlier study's cells to be reused (the grid itself, the
# device and the wall times may differ).
_RESUME_SETTINGS = (
    "model", "linear_gaussian", "steps", "corruption_sigma", "encoder_noise", "batch_size",
    "lr", "num_pairs", "num_chains", "burn_in", "num_permutations", "heldout_rows",
)  # fmt: skip


def _resumable_cells(
    previous: StudyResult | None, config: dict[str, Any]
) -> dict[tuple[int, str, int], dict[str, Any]]:
    if previous is None:
        return {}
    for key in _RESUME_SETTINGS:
        if previous.config.get(key) != config[key]:
            raise ValueError(
                f"the study to resume was run with {key}={previous.config.get(key)!r}, this one "
                f"has {key}={config[key]!r}; use the same settings, or start afresh"
            )
    return {(c["n"], c["capacity"], c["seed"]): c for c in previous.cells}


def compatibility_study(
    joint: JointModel,
    sizes: Sequence[int] = (200, 2000, 20000),
    capacities: Sequence[Any] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    steps: int = 1500,
    corruption_sigma: float = 0.5,
    device: str | torch.device | None = None,
    progress: bool = False,
    *,
    batch_size: int = 256,
    lr: float = 1e-2,
    num_pairs: int = 2000,
    num_chains: int = 1000,
    burn_in: int = 50,
    num_permutations: int = 100,
    resume_from: StudyResult | None = None,
    callback: Callable[[StudyResult], None] | None = None,
) -> StudyResult:
    """Train DAE pairs on simulated data of several sizes and measure their compatibility.

    For each training-set size n, capacity and seed: simulate n rows
    (``joint.sample(n, seed=seed)``), train an encoder/decoder pair with
    [`latentae.fit`][] (``Gaussian(corruption_sigma)`` corruption, Adam with a cosine
    schedule, no validation split), and record the cross-ratio of
    ``corrupt(encoder, Gaussian(σ))`` and the decoder with its standard error, the Gibbs
    two-sample test (MMD and energy distance of the x-chain's late draws against held-out
    rows, with p-values and the noise floor), the Gaussian closed forms for a
    linear-Gaussian pair (E_h KL(q(x|h) ‖ d(x|h)), the interaction mismatch and the
    stationary KL), the final training loss and the cell's wall time. The held-out rows are
    5000 fresh draws from the model (a fixed seed), shared by all cells; the cross-ratio and the
    closed forms are evaluated on them.

    The pair depends on the model: when ``joint.exact_methods() == ["laplace"]`` (a
    linear-Gaussian model) the capacities are the decoder's covariance types (``"diag"``,
    ``"full"``) of an affine [`GaussianDecoder`][latentae.GaussianDecoder], with an affine
    [`GaussianEncoder`][latentae.GaussianEncoder]; otherwise they are hidden widths, e.g. ``(32,)``,
    shared by an MLP [`GaussianEncoder`][latentae.GaussianEncoder] and a
    [`MixtureDecoder`][latentae.MixtureDecoder]. The code h has the dimension of the model's latent.

    Args:
        joint: the model to simulate from (observed rows must be vectors).
        sizes: training-set sizes n (each ≥ 4).
        capacities: see above; default ``("diag", "full")`` or ``((32,), (128,))``.
        seeds: seeds of the simulation, the initialization and the training.
        steps: optimizer steps per training run.
        corruption_sigma: σ of the Gaussian corruption.
        device: where to train (passed to [`latentae.fit`][]); the diagnostics run there
            too.
        progress: print one line per cell.
        batch_size: minibatch size (capped at n // 2).
        lr: Adam learning rate.
        num_pairs: pairs of the cross-ratio.
        num_chains: chains of the Gibbs test.
        burn_in: steps of each Gibbs chain before its draw is kept.
        num_permutations: permutations of the Gibbs test's p-values.
        resume_from: an earlier (possibly interrupted) study with the same settings: its
            cells of this grid are kept instead of recomputed.
        callback: called with the study so far after every cell, e.g. to save it, so that
            an interrupted study loses at most one cell.

    Returns:
        A [`StudyResult`][].

    Raises:
        ValueError: bad arguments, a model whose rows are not vectors, or ``resume_from``
            with other settings.

    Examples:
        >>> import latentae as lae
        >>> jm = lae.JointModel.from_file("models/ppca.py")
        >>> r = compatibility_study(jm, sizes=(40, 80), capacities=("full",), seeds=(0,),
        ...                         steps=20, num_pairs=50, num_chains=40, burn_in=3,
        ...                         num_permutations=10)
        >>> [(c["n"], c["capacity"]) for c in r.cells]
        [(40, 'full'), (80, 'full')]
        >>> sorted(r.slopes()["full"])
        ['cross_ratio', 'gaussian_kl']
    """
    start = time.perf_counter()
    sizes = tuple(sorted(_check_ints("sizes", sizes, 4)))
    seeds = _check_ints("seeds", seeds, 0)
    for name, value in (("steps", steps), ("batch_size", batch_size), ("num_pairs", num_pairs),
                        ("num_chains", num_chains), ("burn_in", burn_in),
                        ("num_permutations", num_permutations)):  # fmt: skip
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if (
        isinstance(corruption_sigma, bool)
        or not isinstance(corruption_sigma, int | float)
        or not 0 < corruption_sigma < math.inf
    ):
        raise ValueError(f"corruption_sigma must be a positive number, got {corruption_sigma!r}")
    if len(joint.observed_shape) != 1:
        raise ValueError(
            "compatibility_study needs a model whose observed rows are vectors, got shape "
            f"{tuple(joint.observed_shape)}"
        )
    linear = joint.exact_methods() == ["laplace"]
    if capacities is None:
        capacities = _LINEAR_CAPACITIES if linear else _MLP_CAPACITIES
    capacities = _check_capacities(capacities, linear)
    x_dim = int(joint.observed_shape[0])
    h_dim = max(1, math.prod(joint.latent_shape))
    corruption = Gaussian(float(corruption_sigma))
    dtype = torch.get_default_dtype()
    heldout = joint.sample(_HELDOUT_ROWS, seed=_HELDOUT_SEED)[1].to(dtype)
    if device is not None:
        heldout = heldout.to(device)

    config = {
        "model": getattr(joint, "name", None),
        "linear_gaussian": linear,
        "sizes": list(sizes),
        "capacities": [_label(c) for c in capacities],
        "seeds": list(seeds),
        "steps": steps,
        "corruption_sigma": float(corruption_sigma),
        "encoder_noise": _NOISE,
        "batch_size": batch_size,
        "lr": lr,
        "num_pairs": num_pairs,
        "num_chains": num_chains,
        "burn_in": burn_in,
        "num_permutations": num_permutations,
        "heldout_rows": _HELDOUT_ROWS,
        "device": str(device) if device is not None else None,
    }
    done = _resumable_cells(resume_from, config)
    cells: list[dict[str, Any]] = []
    for n in sizes:
        for cap in capacities:
            for seed in seeds:
                if (n, _label(cap), seed) in done:
                    cells.append(done[n, _label(cap), seed])
                    continue
                t0 = time.perf_counter()
                x = joint.sample(n, seed=seed)[1].to(dtype)
                torch.manual_seed(seed)
                encoder, decoder = _pair(cap, x_dim, h_dim, linear)
                result = fit(
                    encoder, decoder, x, corruption, steps=steps,
                    batch_size=min(batch_size, n // 2), lr=lr, schedule="cosine",
                    validation=None, device=device, seed=seed, progress=False,
                )  # fmt: skip
                if device is not None:
                    x = x.to(device)
                encoder.eval()
                decoder.eval()
                cell: dict[str, Any] = {"n": n, "capacity": _label(cap), "seed": seed}
                enc = corrupt(encoder, corruption)
                cr = cross_ratio(enc, decoder, heldout, num_pairs=num_pairs, seed=seed)
                cell["cross_ratio"], cell["cross_ratio_se"] = cr.statistic, cr.stderr
                gt = gibbs_test(
                    encoder, decoder, x, heldout, corruption=corruption,
                    num_chains=num_chains, burn_in=burn_in,
                    num_permutations=num_permutations, seed=seed,
                )  # fmt: skip
                cell.update(
                    gibbs_mmd=gt.mmd, gibbs_mmd_pvalue=gt.mmd_pvalue,
                    gibbs_energy=gt.energy, gibbs_energy_pvalue=gt.energy_pvalue,
                    gibbs_floor_mmd=gt.floor_mmd, gibbs_floor_energy=gt.floor_energy,
                )  # fmt: skip
                if linear:
                    try:
                        g = gaussian(enc, decoder, heldout)
                    except ValueError as e:  # e.g. an unstable chain: no stationary law
                        cell["gaussian_error"] = str(e)
                    else:
                        cell.update(
                            gaussian_kl=g.decoder_kl,
                            gaussian_mismatch=g.mismatch,
                            stationary_kl=g.stationary_kl,
                        )
                cell["loss"] = float(result.history["loss"][-1])
                cell["seconds"] = time.perf_counter() - t0
                cells.append(cell)
                if callback is not None:
                    callback(StudyResult(list(cells), config, time.perf_counter() - start))
                if progress:
                    print(
                        f"n={n} capacity={cell['capacity']} seed={seed}: "
                        f"cross_ratio={cell['cross_ratio']:.3g} "
                        f"gibbs_mmd={cell['gibbs_mmd']:.3g} "
                        + (f"gaussian_kl={cell['gaussian_kl']:.3g} " if linear else "")
                        + f"({cell['seconds']:.1f}s)",
                        flush=True,
                    )
    return StudyResult(cells, config, time.perf_counter() - start)
