"""The ``latentae`` command.

Each subcommand is a module of this package with ``add(subparsers, parents)``, which declares
its arguments, and ``command(args) -> int``, which runs it. Flags shared by several subcommands
live in the parent parsers built by ``_args._parents``, so a new subcommand composes them
instead of redeclaring. Commands print; the library functions they call return results and
never print.

Errors a user can fix (a broken model script, a bad argument, an unwritable folder, a corrupt
checkpoint, a diverged training run) become one line on stderr, ``latentae: error: <message>``,
and exit code 2; ``--debug`` adds the traceback. Ctrl-C during DAE training writes a checkpoint
and exits with code 130, saying how to resume.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from latentae.cli import check, fit, info, run, sample, score, study
from latentae.cli._args import _parents, _Parser
from latentae.cli._common import PROG, USER_ERRORS, _interrupted, _version
from latentae.cli._config import expand_config

__all__ = ["main"]

_COMMANDS: tuple[Callable[[Any, dict[str, argparse.ArgumentParser]], None], ...] = (
    run.add,
    fit.add,
    check.add,
    score.add,
    sample.add,
    study.add,
    info.add,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``latentae`` argument parser with every subcommand."""
    parser = _Parser(
        prog=PROG,
        description="latentae: latent-variable models as stochastic autoencoders.",
        epilog="run 'latentae COMMAND --help' for a command's options and an example",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(
        title="commands", metavar="COMMAND", dest="command", required=True, parser_class=_Parser
    )
    parents = _parents()
    for add in _COMMANDS:
        add(subparsers, parents)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``latentae`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 2 for a usage error or a problem with the inputs,
        130 when interrupted (Ctrl-C), 1 for an internal error.

    Examples:
        >>> main(["info", "models/ppca.py"])  # doctest: +ELLIPSIS
        model     ppca (models/ppca.py)
        latent    'h': shape (2,), support real, continuous
        ...
        0
    """
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        argv = expand_config(parser, argv)
    except (ValueError, OSError) as e:
        print(f"{PROG}: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version and usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        return args.func(args)
    except USER_ERRORS as e:
        if args.debug:
            traceback.print_exc()
        message = str(e) or type(e).__name__
        if not isinstance(e, ValueError | OSError):
            message = f"{type(e).__name__}: {message}"
        print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # TrainingInterrupted too: its checkpoint is written
        print(_interrupted(e), file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            traceback.print_exc()
        print(
            f"{PROG}: internal error: {type(e).__name__}: {_one_line(str(e))} "
            "(rerun with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1


def _one_line(text: str) -> str:
    return " ".join(text.split())
