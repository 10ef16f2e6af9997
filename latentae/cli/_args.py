"""Argument parsing shared by the subcommands: the parser class, argument types and the
parent parsers of shared flags."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from latentae.corruption import Corruption

from latentae.cli._dae import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BIT_FLIP,
    DEFAULT_HIDDEN,
    DEFAULT_LR,
    DEFAULT_SIGMA_FRACTION,
    DEFAULT_STEPS,
    DEFAULT_THREADS,
)

# Each corruption's one parameter in --corruption NAME:VALUE.
_CORRUPTIONS = {"gaussian": "sigma", "masking": "p", "salt_and_pepper": "p", "bit_flip": "p"}

_CORRUPTION_FORMS = "gaussian:SIGMA, masking:P, salt_and_pepper:P or bit_flip:P"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr and exit code 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No abbreviations: "--conf" must not pass for --config (read before parsing).
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())  # an argument holding a newline stays one line
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _int_at_least(least: int, what: str) -> Callable[[str], int]:
    """An argparse type for integers >= ``least``, with ``what`` in its error messages."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")

_nonnegative_int = _int_at_least(0, "a non-negative integer")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def _hidden_arg(text: str) -> tuple[int, ...]:
    """``"64,64"`` -> ``(64, 64)``; the empty string is an affine map, ``()``."""
    if not text.strip():
        return ()
    widths = []
    for part in text.split(","):
        try:
            width = int(part.strip())
        except ValueError:
            width = 0
        if width < 1:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated positive layer widths such as 64,64 (or '' for an "
                f"affine map), got {text!r}"
            )
        widths.append(width)
    return tuple(widths)


def _corruption_arg(text: str) -> Corruption:
    """``"masking:0.25"`` -> ``Masking(0.25)``: a corruption name and its one parameter."""
    name, _, value = text.partition(":")
    key = name.strip().lower().replace("-", "_")
    if key not in _CORRUPTIONS:
        raise argparse.ArgumentTypeError(
            f"unknown corruption {name.strip()!r} in {text!r}; use {_CORRUPTION_FORMS}"
        )
    param = _CORRUPTIONS[key]
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} needs a number after the colon, the {param}: write {key}:"
            f"{param.upper()}, e.g. {key}:0.1"
        ) from None
    from latentae.corruption import from_config

    try:
        return from_config({"name": key, param: number})
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None


def _parents() -> dict[str, argparse.ArgumentParser]:
    """Parent parsers holding the flags that subcommands share.

    ``base``: ``--quiet``, ``--debug`` (every subcommand). ``output``: ``--out``, ``--seed``,
    ``--device`` (subcommands that compute and write results). ``train``: the DAE training
    flags (subcommands that train a denoising autoencoder).
    """
    base = _Parser(add_help=False)
    group = base.add_argument_group("common options")
    group.add_argument("--quiet", action="store_true", help="print nothing on success")
    group.add_argument(
        "--debug", action="store_true", help="show the full traceback when a command fails"
    )
    group.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="settings from a TOML or JSON file, named like this command's flags "
        "(steps = 5000, hidden = [128, 128]); flags on the command line win",
    )
    output = _Parser(add_help=False)
    group = output.add_argument_group("output and randomness")
    group.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder for the results (default: runs/<model name>/)",
    )
    group.add_argument(
        "--seed", type=int, default=0, metavar="INT", help="seed for every random draw (default: 0)"
    )
    group.add_argument(
        "--device",
        default="cpu",
        help="torch device for learned networks (the DAE, --method amortized), e.g. cuda "
        "(default: cpu); model-derived computations run on the CPU",
    )
    train = _Parser(add_help=False)
    group = train.add_argument_group(
        "DAE training",
        "The DAE is a GaussianEncoder q(h | x~) with injected noise 0.1 and a code as wide as\n"
        "the model's latent (a discrete latent: max(2, its entries)), and a decoder from the\n"
        "observed site's support: BernoulliDecoder for binary x, else GaussianDecoder with\n"
        "diagonal covariance. 10% of the training rows are held out for the validation NLL.",
    )
    group.add_argument(
        "--steps",
        type=_positive_int,
        default=DEFAULT_STEPS,
        metavar="INT",
        help=f"optimizer steps (default: {DEFAULT_STEPS})",
    )
    group.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULT_BATCH_SIZE,
        metavar="INT",
        help=f"rows per step (default: {DEFAULT_BATCH_SIZE})",
    )
    group.add_argument(
        "--lr",
        type=_positive_float,
        default=DEFAULT_LR,
        metavar="FLOAT",
        help=f"Adam learning rate (default: {DEFAULT_LR:g})",
    )
    group.add_argument(
        "--corruption",
        type=_corruption_arg,
        default=None,
        metavar="NAME:VALUE",
        help=f"the corruption C(x~ | x): {_CORRUPTION_FORMS} (default: "
        f"bit_flip:{DEFAULT_BIT_FLIP:g} for binary x, else gaussian with sigma = "
        f"{DEFAULT_SIGMA_FRACTION:g} x the mean per-feature standard deviation of the "
        "training data)",
    )
    group.add_argument(
        "--hidden",
        type=_hidden_arg,
        default=DEFAULT_HIDDEN,
        metavar="W1,W2,...",
        help="hidden layer widths of the encoder and the decoder; '' for affine maps "
        f"(default: {','.join(map(str, DEFAULT_HIDDEN))})",
    )
    group.add_argument(
        "--walkback",
        type=_nonnegative_int,
        default=0,
        metavar="INT",
        help="walkback steps per example (Bengio et al. 2013; default: 0, a plain DAE)",
    )
    group.add_argument(
        "--threads",
        type=_positive_int,
        default=DEFAULT_THREADS,
        metavar="INT",
        help="CPU threads for DAE training (default: 1; the default networks are so small "
        "that more threads mostly add synchronization; try more for wide --hidden)",
    )
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/checkpoint.pt, written by an earlier (or interrupted) run with "
        "the same settings; a finished checkpoint is just reloaded",
    )
    data = _Parser(add_help=False)
    group = data.add_argument_group("data")
    group.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="PATH",
        help="the rows to use instead of the script's data() or simulated rows: a table in "
        ".npy, .csv, .pt or netcdf (.nc), checked against the model's observed site",
    )
    return {"base": base, "output": output, "train": train, "data": data}


def _subparser(
    subparsers: Any,
    name: str,
    parents: Sequence[argparse.ArgumentParser],
    summary: str,
    description: str,
    example: str,
) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name,
        parents=list(parents),
        help=summary,
        description=f"{description}\n\nexample:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
