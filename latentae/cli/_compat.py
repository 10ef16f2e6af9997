"""The compatibility part of ``check`` and ``run``: diagnostics of a trained DAE pair, their
figure, and the lines that print them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentae.cli._common import _fmt

# Diagnostic settings of `latentae check` (flags) and `latentae run` (fixed). 2000 pairs put
# the cross-ratio's relative standard error near 5% for the bundled models; 1000 chains x 100
# steps make the Gibbs test's late draws independent of their starts for a chain that mixes
# within tens of steps; 256 points bound the interaction's autograd cost.
DEFAULT_PAIRS = 2000
DEFAULT_CHAINS = 1000
DEFAULT_BURN_IN = 100
DEFAULT_POINTS = 256


def compatibility_section(
    pair: Any,
    x: Any,
    out: Path,
    *,
    seed: int,
    title: str,
    num_pairs: int = DEFAULT_PAIRS,
    num_chains: int = DEFAULT_CHAINS,
    burn_in: int = DEFAULT_BURN_IN,
    num_points: int = DEFAULT_POINTS,
) -> dict[str, Any]:
    """Run [`latentae.compat.check`][] on ``pair`` (encoder, decoder, corruption) with the
    rows ``x``, save ``compatibility.png`` in ``out`` and return the report's JSON part."""
    import time

    import torch

    from latentae.compat import check
    from latentae.plots import compatibility_figure, save_figure

    encoder, decoder, corruption = pair
    start = time.perf_counter()
    encoder.eval()
    decoder.eval()
    x = x.reshape(len(x), -1).to(next(encoder.parameters()).dtype)
    report = check(encoder, decoder, x, corruption=corruption, num_pairs=num_pairs,
                   num_points=num_points, num_chains=num_chains, burn_in=burn_in,
                   seed=seed)  # fmt: skip
    seconds = time.perf_counter() - start
    with torch.no_grad():
        plot = save_figure(compatibility_figure(report, title=title), out / "compatibility.png")
    return {
        **report.to_dict(),
        "rows": len(x),
        "settings": {
            "num_pairs": num_pairs,
            "num_points": num_points,
            "num_chains": num_chains,
            "burn_in": burn_in,
            "seed": seed,
            "heldout": "a seeded half of the rows; the chains start from the other half",
        },
        "definitions": {
            "cross_ratio": "mean (De - Dd)^2 / mean (De^2/2 + Dd^2/2) over random pairs of rows:"
            " 0 iff e(h|x)/d(x|h) factorizes (compatible); at most 4",
            "interaction": "relative mean-square mixed partial d2/dxdh [log e - log d]: 0 iff "
            "compatible",
            "gibbs": "MMD^2 and energy distance of one late draw per x -> x~ -> h -> x chain "
            "against held-out rows, permutation p-values; floor_*: the same between two "
            "halves of the rows",
            "gaussian": "closed forms for a linear-Gaussian pair",
        },
        "wall_time_s": round(seconds, 3),
        "plot": str(plot),
    }


def compatibility_lines(section: dict[str, Any]) -> list[str]:
    """The compatibility part of a printed summary."""
    results, lines = section["results"], []
    for name in ("cross_ratio", "interaction"):
        if name in results:
            r = results[name]
            lines.append(
                f"{name:<11} {_fmt(r['statistic'])} ± {_fmt(r['stderr'])} (0 iff compatible)"
            )
    if "gibbs" in results:
        g = results["gibbs"]
        lines.append(
            f"gibbs       {g['num_chains']} chains x {g['burn_in']} steps vs held-out rows: "
            f"MMD² {_fmt(g['mmd'])} (p {_fmt(g['mmd_pvalue'])}), energy {_fmt(g['energy'])} "
            f"(p {_fmt(g['energy_pvalue'])}); noise floor MMD² {_fmt(g['floor_mmd'])}, "
            f"energy {_fmt(g['floor_energy'])}"
        )
    if "gaussian" in results:
        g = results["gaussian"]
        lines.append(
            f"gaussian    mismatch {_fmt(g['mismatch'])}, E KL(q(x|h) || d(x|h)) "
            f"{_fmt(g['decoder_kl'])} nats, stationary KL {_fmt(g['stationary_kl'])} nats"
        )
    for name, why in section["skipped"].items():
        lines.append(f"{name:<11} skipped: {why}")
    return lines
