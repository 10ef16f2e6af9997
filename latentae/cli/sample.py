"""``latentae sample``: draw from a DAE as a generative model, through its Markov chain."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

from latentae.cli._args import _nonnegative_int, _positive_int, _subparser
from latentae.cli._common import (
    _convergence,
    _fmt,
    _import_arviz,
)
from latentae.cli._dae import _add_checkpoint_flag, _pair_command

DEFAULT_CHAINS = 100
DEFAULT_STEPS = 1000
# Coordinates shown in the trace and pair plots; netcdf has them all.
_PLOTTED = 4
# ArviZ computes R-hat and ESS from at least 4 draws per chain.
_MIN_DRAWS = 4


def add(subparsers: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = _subparser(
        subparsers,
        "sample",
        [parents["base"], parents["output"], parents["data"], parents["train"]],
        "sample a DAE through its Markov chain (GSN); write netcdf, trace and pair plots",
        "A DAE defines a Markov chain x -> x~ ~ C(x~ | x) -> h ~ q(h | x~) -> x ~ p(x | h)\n"
        "whose stationary law tends to the data law (Bengio et al. 2013). Train a DAE on the\n"
        "model's data (as 'latentae fit' does) or load one with --checkpoint, run independent\n"
        "chains from random data rows, and write gsn.nc (ArviZ InferenceData with dims chain,\n"
        "draw), trace.png and pair.png (ArviZ plots of the first coordinates) and sample.json\n"
        "(R-hat and bulk ESS per coordinate, and an energy-distance two-sample test of the\n"
        "chains' last draws against data rows no chain started from).",
        "latentae sample models/mixture.py --num-chains 200 --num-steps 2000",
    )
    p.add_argument("model", type=Path, metavar="MODEL.py", help="the model script")
    _add_checkpoint_flag(p)
    p.add_argument(
        "--num-chains",
        type=_positive_int,
        default=DEFAULT_CHAINS,
        metavar="INT",
        help=f"independent chains (default: {DEFAULT_CHAINS})",
    )
    p.add_argument(
        "--num-steps",
        type=_positive_int,
        default=DEFAULT_STEPS,
        metavar="INT",
        help=f"steps per chain (default: {DEFAULT_STEPS})",
    )
    p.add_argument(
        "--burn-in",
        type=_nonnegative_int,
        default=None,
        metavar="INT",
        help="steps before the first kept draw (default: half of --num-steps)",
    )
    p.add_argument(
        "--thin", type=_positive_int, default=1, metavar="INT", help="keep every INT-th draw"
    )
    p.set_defaults(func=command)


def sample_section(
    jm: Any,
    pair: tuple[Any, Any, Any],
    x: Any,
    out: Path,
    *,
    seed: int,
    num_chains: int = DEFAULT_CHAINS,
    num_steps: int = DEFAULT_STEPS,
    burn_in: int | None = None,
    thin: int = 1,
) -> dict[str, Any]:
    """Run GSN chains from random rows of ``x``; write gsn.nc, trace.png and pair.png into
    ``out``; return the report's JSON part."""
    import torch

    from latentae.arviz import save_netcdf
    from latentae.chains import gsn_chain
    from latentae.plots import save_figure
    from latentae.stats import two_sample_test

    encoder, decoder, corruption = pair
    burn_in = num_steps // 2 if burn_in is None else burn_in
    if burn_in >= num_steps:
        raise ValueError(f"--burn-in {burn_in} must be smaller than --num-steps {num_steps}")
    dtype = next(encoder.parameters()).dtype
    x = x.reshape(len(x), -1).to(dtype)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=generator)
    starts = x[order[torch.arange(num_chains) % len(x)]]  # distinct rows while there are enough
    device = next(encoder.parameters()).device
    idata = gsn_chain(encoder, decoder, corruption, starts.to(device), num_steps, burn_in=burn_in,
                      thin=thin, seed=seed, name=jm.observed)  # fmt: skip
    az = _import_arviz()
    nc = save_netcdf(idata, out / "gsn.nc")
    draws_per_chain = idata.posterior.sizes["draw"]
    if draws_per_chain >= _MIN_DRAWS:
        convergence = _convergence(az, idata)[jm.observed]
    else:
        convergence = {"r_hat_max": None, "ess_bulk_min": None, "note": f"{draws_per_chain} "
                       f"draws per chain; R-hat and ESS need at least {_MIN_DRAWS}"}  # fmt: skip
    draws = torch.as_tensor(idata.posterior[jm.observed].values)
    last = draws[:, -1].reshape(draws.shape[0], -1).double()
    # Rows a chain started from would tie the test to the starts: it takes only the others.
    held = x[order[num_chains:][:num_chains]].double()
    two_sample: dict[str, Any] = {"statistic": "energy distance"}
    if len(last) >= 2 and len(held) >= 2:
        test = two_sample_test(last, held, "energy", num_permutations=200, seed=generator)
        two_sample.update(
            value=float(test.statistic),
            pvalue=float(test.pvalue),
            against=f"{len(held)} data rows no chain started from",
        )
    else:
        two_sample.update(
            value=None,
            pvalue=None,
            against=None,
            note=f"{num_chains} chains started from the {len(x)} data rows, which leaves "
            f"{len(held)} to test their draws against (at least 2 of each are needed); "
            f"pass --num-chains between 2 and {len(x) - 2}",
        )
    two_sample["definition"] = (
        "the chains' last draws against data rows; a small p-value says the chain's law "
        "differs from the data's"
    )
    files = [str(nc)]
    for name, plot in (("trace", _trace_figure), ("pair", _pair_figure)):
        with warnings.catch_warnings():
            # ArviZ 0.23's plots call a matplotlib helper deprecated in matplotlib 3.11:
            # noise for a command-line user, who cannot act on it.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="arviz")
            warnings.filterwarnings("ignore", message=".*normalize_kwargs is deprecated")
            fig = plot(az, idata, jm.observed)
        if fig is not None:
            files.append(str(save_figure(fig, out / f"{name}.png")))
    return {
        "num_chains": num_chains,
        "num_steps": num_steps,
        "burn_in": burn_in,
        "thin": thin,
        "draws_per_chain": int(draws.shape[1]),
        "corruption": corruption.to_config(),
        "convergence": convergence,
        "two_sample": two_sample,
        "files": files,
    }


def _trace_figure(az: Any, idata: Any, name: str) -> Any:
    import matplotlib.pyplot as plt

    coords = {f"{name}_dim": list(range(min(_PLOTTED, idata.posterior.sizes[f"{name}_dim"])))}
    axes = az.plot_trace(idata, var_names=[name], coords=coords, compact=True, combined=True)
    fig = axes.ravel()[0].figure
    plt.close(fig)  # saved through its canvas; pyplot need not keep it
    return fig


def _pair_figure(az: Any, idata: Any, name: str) -> Any:
    import matplotlib.pyplot as plt
    import numpy as np

    dim = f"{name}_dim"
    if idata.posterior.sizes[dim] < 2:
        return None
    coords = {dim: list(range(min(_PLOTTED, idata.posterior.sizes[dim])))}
    axes = az.plot_pair(idata, var_names=[name], coords=coords, kind="scatter",
                        scatter_kwargs={"alpha": 0.1, "s": 2})  # fmt: skip
    fig = np.atleast_1d(axes).ravel()[0].figure
    plt.close(fig)
    return fig


def sample_lines(section: dict[str, Any]) -> list[str]:
    c, t = section["convergence"], section["two_sample"]
    return [
        f"gsn       {section['num_chains']} chains x {section['num_steps']} steps (burn-in "
        f"{section['burn_in']}, thin {section['thin']}): r_hat max {_fmt(c['r_hat_max'])}, "
        f"ess_bulk min {_fmt(c['ess_bulk_min'])}",
        f"          last draws vs data: energy distance {_fmt(t['value'])}, p {_fmt(t['pvalue'])}"
        if t["pvalue"] is not None
        else f"          last draws vs data: not tested ({t['note']})",
    ]


def command(args: argparse.Namespace) -> int:
    return _pair_command(
        args,
        "sample",
        lambda jm, pair, x, out: sample_section(
            jm,
            pair,
            x,
            out,
            seed=args.seed,
            num_chains=args.num_chains,
            num_steps=args.num_steps,
            burn_in=args.burn_in,
            thin=args.thin,
        ),
        lambda section: section["files"],
        sample_lines,
        uses_arviz=True,
    )
