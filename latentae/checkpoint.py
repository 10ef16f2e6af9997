"""Training checkpoints: written atomically, read back with ``weights_only=True``."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from latentae._util import atomic_write

__all__ = ["FORMAT", "CheckpointError", "load_checkpoint", "save_checkpoint"]

#: The ``format`` entry of every latentae training checkpoint.
FORMAT = "latentae.dae"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupt, foreign, or from a different run."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists and dicts only) atomically.

    Only types that ``torch.load(weights_only=True)`` accepts may appear: RNG states are
    stored as uint8 tensors, never as numpy arrays.
    """
    state = {"format": FORMAT, "version": VERSION, **state}
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` onto the CPU.

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, or not a latentae
            training checkpoint.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.pt"
        >>> _ = save_checkpoint(path, {"step": 3})
        >>> load_checkpoint(path)["step"]
        3
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is truncated or corrupt ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); delete it to start afresh, or "
            "point to another checkpoint"
        ) from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not a latentae training checkpoint (no format {FORMAT!r}); "
            "point to a file written by latentae.fit"
        )
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format version {state.get('version')}, this "
            f"latentae reads version {VERSION}"
        )
    return state
