"""Training checkpoints: written atomically, read back with ``weights_only=True``."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import torch

from latentae._util import atomic_write

__all__ = [
    "FORMAT",
    "CheckpointError",
    "TrainedPair",
    "load_checkpoint",
    "load_pair",
    "save_checkpoint",
]

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

    def write(tmp: Path) -> None:
        # Through a Python file, so that a failed write (a full disk, a file-size limit)
        # raises the OS's error; torch's zip writer then fails to close and raises its own
        # ("unexpected pos ...") over it, so the OS's error is raised instead.
        with open(tmp, "wb") as f:
            try:
                torch.save(state, f)
            except RuntimeError as e:
                if isinstance(e.__context__, OSError):
                    raise e.__context__ from None
                raise

    return atomic_write(path, write)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by [`save_checkpoint`][] onto the CPU.

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, or not a latentae
            training checkpoint.

    Examples:
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
    except pickle.UnpicklingError as e:
        # torch.save writes a zip archive; anything else is damaged or not a checkpoint.
        if not zipfile.is_zipfile(path) or "Weights only load failed" not in str(e):
            raise CheckpointError(
                f"checkpoint {str(path)!r} is truncated or corrupt (UnpicklingError: "
                f"{str(e).splitlines()[0] if str(e) else ''}); delete it to start afresh, or "
                "point to another checkpoint"
            ) from e
        # A well-formed file holding arbitrary Python objects: loading it would run code.
        raise CheckpointError(
            f"{str(path)!r} holds Python objects besides tensors, numbers and strings, which "
            "latentae never writes; it is refused because unpickling them could run code "
            "(torch.load weights_only=True)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
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


class TrainedPair(NamedTuple):
    """A DAE pair rebuilt from a checkpoint.

    Attributes:
        encoder: q(h | x̃), in eval mode.
        decoder: p(x | h), in eval mode.
        corruption: C(x̃ | x) it was trained with; p_enc(h | x) is
            ``corrupt(encoder, corruption)``.
        step: the optimizer steps it was trained for.
        config: the training configuration recorded in the checkpoint.
    """

    encoder: Any
    decoder: Any
    corruption: Any
    step: int
    config: dict[str, Any]


def load_pair(path: str | os.PathLike) -> TrainedPair:
    """Rebuild the encoder, decoder and corruption of a [`latentae.fit`][] checkpoint.

    The checkpoint records each unit's constructor arguments (``to_config()``), so no code
    needs to know the architecture in advance.

    Raises:
        CheckpointError: the file is not a readable latentae checkpoint, or its networks are
            not built-in units (rebuild those yourself and ``load_state_dict`` the weights
            from [`load_checkpoint`][]).

    Examples:
        >>> import tempfile, pathlib, torch
        >>> import latentae as lae
        >>> from latentae.corruption import Gaussian
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.pt"
        >>> enc, dec = lae.GaussianEncoder(3, 2), lae.GaussianDecoder(2, 3, cov="full")
        >>> _ = lae.fit(enc, dec, torch.randn(64, 3), Gaussian(0.3), steps=5, batch_size=16,
        ...             checkpoint=path, progress=False)
        >>> pair = load_pair(path)
        >>> pair.decoder.cov, pair.corruption.sigma, pair.step
        ('full', 0.3, 5)
    """
    from latentae.corruption import from_config as corruption_from_config
    from latentae.units import from_config

    state = load_checkpoint(path)
    config = state.get("config", {})
    modules = []
    for role in ("encoder", "decoder"):
        unit = config.get(role)
        if not isinstance(unit, dict):
            raise CheckpointError(
                f"the {role} of checkpoint {str(path)!r} is a {unit!r}, which records no "
                "constructor arguments; build it as it was trained and load the weights from "
                f"load_checkpoint(path)[{role!r}]"
            )
        try:
            module = from_config(unit)
            # Built in the weights' own dtype: a float32 run is rebuilt in float32.
            floats = [t for t in state[role].values() if t.is_floating_point()]
            if floats:
                module = module.to(floats[0].dtype)
            module.load_state_dict(state[role])
        except (ValueError, RuntimeError, KeyError) as e:
            raise CheckpointError(
                f"cannot rebuild the {role} of checkpoint {str(path)!r}: {str(e).splitlines()[0]}"
            ) from None
        modules.append(module.eval())
    try:
        corruption = corruption_from_config(config["corruption"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"cannot rebuild the corruption of checkpoint {str(path)!r}: {e}"
        ) from None
    return TrainedPair(modules[0], modules[1], corruption, int(state["step"]), config)
