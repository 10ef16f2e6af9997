"""``--config FILE``: settings from a TOML or JSON file, as if written on the command line.

A config file holds one table of settings named like the flags of the subcommand (``steps``
or ``--steps``; dashes and underscores alike), e.g. in TOML::

    steps = 5000
    hidden = [128, 128]
    corruption = "gaussian:0.3"
    no_dae = false

Each setting becomes the flag's tokens (``--steps 5000 --hidden 128,128 --corruption
gaussian:0.3``) inserted right after the subcommand, so argparse checks every value with
the same types and messages as on the command line, and flags written on the command line
come later and win.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CONFIG_FLAG = "--config"


def _config_path(argv: Sequence[str]) -> tuple[Path | None, list[str]]:
    """The ``--config`` path in ``argv``, and ``argv`` without it."""
    rest, path = [], None
    items = list(argv)
    i = 0
    while i < len(items):
        item = items[i]
        if item == CONFIG_FLAG:
            if i + 1 >= len(items):
                raise ValueError(f"{CONFIG_FLAG} needs a file: {CONFIG_FLAG} settings.toml")
            path = Path(items[i + 1])
            i += 2
            continue
        if item.startswith(CONFIG_FLAG + "="):
            path = Path(item.split("=", 1)[1])
        else:
            rest.append(item)
        i += 1
    return path, rest


def read_config(path: Path) -> dict[str, Any]:
    """The settings table of a TOML (``.toml``) or JSON (any other suffix) file."""
    if not path.is_file():
        raise ValueError(f"{CONFIG_FLAG} {str(path)!r}: no such file")
    text = path.read_bytes()
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text.decode("utf-8"))
        else:
            data = json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        raise ValueError(
            f"{CONFIG_FLAG} {str(path)!r} is not valid {kind}: {e}; write one table of "
            'settings such as steps = 5000 (TOML) or {"steps": 5000} (JSON)'
        ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{CONFIG_FLAG} {str(path)!r} must hold one table of settings, got a "
            f"{type(data).__name__}"
        )
    return data


def _tokens(flag: str, action: argparse.Action, value: Any, where: str) -> list[str]:
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise ValueError(f"{where}: {flag} is a switch; give true or false, got {value!r}")
        return [flag] if value else []
    if isinstance(value, bool | dict):
        raise ValueError(f"{where}: {flag} takes a value, got {value!r}")
    if isinstance(value, list):
        if action.nargs in ("+", "*"):
            return [flag, *map(str, value)]
        return [flag, ",".join(map(str, value))]  # e.g. hidden = [64, 64] -> 64,64
    return [flag, str(value)]


def expand_config(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``argv`` with the settings of its ``--config`` file inserted after the subcommand."""
    path, rest = _config_path(argv)
    if path is None:
        return rest
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    position = next((i for i, item in enumerate(rest) if item in subparsers.choices), None)
    if position is None:
        raise ValueError(f"{CONFIG_FLAG} needs a subcommand, e.g. latentae run MODEL.py "
                         f"{CONFIG_FLAG} {path}")  # fmt: skip
    command = rest[position]
    options = {
        option: action
        for action in subparsers.choices[command]._actions
        for option in action.option_strings
        if option.startswith("--") and option not in ("--help", CONFIG_FLAG)
    }
    where = f"{CONFIG_FLAG} {str(path)!r}"
    tokens: list[str] = []
    for key, value in read_config(path).items():
        flag = "--" + str(key).lstrip("-").replace("_", "-")
        if flag not in options:
            known = ", ".join(sorted(o[2:] for o in options))
            raise ValueError(
                f"{where}: unknown setting {key!r} for 'latentae {command}'; its settings "
                f"are {known}"
            )
        tokens += _tokens(flag, options[flag], value, where)
    return [*rest[: position + 1], *tokens, *rest[position + 1 :]]
