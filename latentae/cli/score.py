"""``latentae score``: the score a DAE estimates, against the model's exact score."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from latentae.cli._args import _positive_int, _subparser
from latentae.cli._common import _fmt, _tolist
from latentae.cli._dae import _add_checkpoint_flag, _pair_command

DEFAULT_POINTS = 1000


def add(subparsers: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = _subparser(
        subparsers,
        "score",
        [parents["base"], parents["output"], parents["data"], parents["train"]],
        "estimate the score from a DAE; compare it with the model's; plot the vector field",
        "A denoising autoencoder trained with Gaussian corruption sigma estimates the score\n"
        "of the sigma-smoothed data law: (r(x) - x) / sigma^2 (Deep Learning eq. 14.15-14.17).\n"
        "Train a DAE on the model's data (as 'latentae fit' does; the corruption must be\n"
        "gaussian) or load one with --checkpoint, estimate the score at data points, and\n"
        "compare it with the model's exact smoothed score (Fisher's identity; models with an\n"
        "exact encoder and Gaussian observations): relative L2 error and cosine similarity.\n"
        "Writes score.json and, for 2-D data, vector_field.png (r(x) - x over a grid beside\n"
        "the exact field).",
        "latentae score models/mixture.py --corruption gaussian:0.5 --steps 3000",
    )
    p.add_argument("model", type=Path, metavar="MODEL.py", help="the model script")
    _add_checkpoint_flag(p)
    p.add_argument(
        "--num-points",
        type=_positive_int,
        default=DEFAULT_POINTS,
        metavar="INT",
        help=f"data rows at which the score is compared (default: {DEFAULT_POINTS})",
    )
    p.set_defaults(func=command)


def score_section(
    jm: Any, pair: tuple[Any, Any, Any], x: Any, out: Path, *, seed: int, num_points: int
) -> dict[str, Any]:
    """Compare the pair's score estimate with the model's at up to ``num_points`` rows of
    ``x``; save vector_field.png for 2-D data; return the report's JSON part."""
    import torch

    from latentae.corruption import Gaussian
    from latentae.plots import save_figure, vector_field
    from latentae.score import dae_score, model_score, score_error

    encoder, decoder, corruption = pair
    if not isinstance(corruption, Gaussian) or corruption.sigma <= 0:
        raise ValueError(
            f"the score estimate needs a DAE trained with Gaussian corruption, this one used "
            f"{corruption!r}; train with --corruption gaussian:SIGMA"
        )
    sigma = float(corruption.sigma)
    dtype = next(encoder.parameters()).dtype
    x = x.reshape(len(x), -1).to(dtype)
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(x), generator=generator)[:num_points]
    points = x[rows]
    estimate = dae_score(encoder, decoder, points, sigma, seed=seed)
    section: dict[str, Any] = {"sigma": sigma, "points": len(points)}
    reference = None
    try:
        reference = model_score(jm, points.to(jm.dtype).cpu(), sigma).to(estimate)
    except ValueError as e:  # no exact encoder, or an observation that cannot be widened
        section["reference"] = None
        section["no_reference"] = str(e)
    if reference is not None:
        err = score_error(estimate, reference)
        section["reference"] = "model_score: Fisher's identity on the sigma-widened model"
        section["errors"] = {
            "relative_l2": float(err.relative),
            "median_relative": float(err.median_relative),
            "median_cosine": float(err.median_cosine),
            "norm_ratio": float(err.norm_ratio),
        }
        section["per_point"] = {
            "rows": rows.tolist(),
            "relative": _tolist(err.per_point),
            "cosine": _tolist(err.cosine),
        }
    section["definitions"] = {
        "estimate": "(r(x) - x) / sigma^2, r(x) the decoder mean under the encoder",
        "relative_l2": "||estimate - reference|| / ||reference|| over all points",
        "median_cosine": "median over points of the cosine between estimate and reference",
    }
    if x.shape[1] == 2:
        fig = vector_field(
            encoder,
            decoder,
            x[rows].detach().cpu(),
            sigma,
            reference=jm if reference is not None else None,
            seed=seed,
        )
        section["plot"] = str(save_figure(fig, out / "vector_field.png"))
    return section


def score_lines(section: dict[str, Any]) -> list[str]:
    """The score part of a printed summary."""
    lines = [
        f"score     (r(x) - x) / sigma^2 at {section['points']} rows, sigma {section['sigma']:.4g}"
    ]
    if "errors" in section:
        e = section["errors"]
        lines.append(
            f"          vs the model's exact smoothed score: relative L2 error "
            f"{_fmt(e['relative_l2'])}, median cosine {_fmt(e['median_cosine'])}"
        )
    else:
        lines.append(f"          no exact reference: {section['no_reference']}")
    return lines


def command(args: argparse.Namespace) -> int:
    def gaussian_by_default(jm: Any, x: Any) -> None:
        if args.checkpoint is None and args.corruption is None:
            # The score needs Gaussian corruption; the default for binary data is bit flips.
            from latentae.cli._dae import _default_corruption

            args.corruption, _ = _default_corruption(jm, x.reshape(len(x), -1))

    return _pair_command(
        args,
        "score",
        lambda jm, pair, x, out: score_section(
            jm, pair, x, out, seed=args.seed, num_points=args.num_points
        ),
        lambda section: [section["plot"]] if "plot" in section else [],
        score_lines,
        prepare=gaussian_by_default,
    )
