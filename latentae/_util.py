"""Small shared helpers: explicit randomness, input validation and atomic files."""

from __future__ import annotations

import contextlib
import numbers
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

Seed = int | torch.Generator | None


@contextlib.contextmanager
def seeded(seed: Seed) -> Iterator[None]:
    """Run a block on a private copy of torch's global RNG, seeded from ``seed``.

    Pyro samples from torch's global generator, so explicit randomness means forking that
    generator and restoring it afterwards: a seeded call leaves the caller's stream untouched.
    ``None`` uses (and advances) the global stream; a ``torch.Generator`` supplies the seed.
    """
    if seed is None:
        yield
        return
    if isinstance(seed, torch.Generator):
        seed = int(torch.randint(0, 2**62, (), generator=seed))
    elif not isinstance(seed, int | np.integer) or isinstance(seed, bool):
        raise TypeError(
            f"seed must be an int, a torch.Generator or None, not {type(seed).__name__}"
        )
    # torch.manual_seed reseeds every GPU, so every GPU's stream is saved and restored.
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def first_nonfinite(x: torch.Tensor) -> tuple[int, ...] | None:
    """The index of the first NaN or infinite entry of ``x`` in row-major order, or ``None``."""
    if not torch.is_floating_point(x) or x.numel() == 0:
        return None
    # A NaN or infinity shows in the minimum or maximum: one fast pass for the common case.
    low, high = torch.aminmax(x)
    if bool(torch.isfinite(low) & torch.isfinite(high)):
        return None
    bad = ~torch.isfinite(x)
    if not bool(bad.any()):
        return None
    flat = int(bad.reshape(-1).nonzero()[0, 0])
    return tuple(int(i) for i in np.unravel_index(flat, tuple(x.shape)))


def check_positive_int(name: str, value: Any) -> int:
    """``value`` as an int, or a ValueError naming ``name`` if it is not an integer >= 1
    (bools are refused: ``True`` is not a count)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_points(x: Any, where: str | None = None) -> torch.Tensor:
    """``x`` if it is a finite floating-point tensor of shape (n, d) with n, d >= 1, else a
    TypeError or ValueError saying what is wrong, prefixed with ``where`` (the caller's name)
    when given."""
    label = "x" if where is None else f"{where}: x"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{label} must be a torch.Tensor of shape (n, d), not {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{label} must be a floating-point tensor, got {x.dtype}; convert it with "
            "x.to(torch.get_default_dtype())"
        )
    if x.dim() != 2:
        hint = "; use x[None] for a single point" if x.dim() == 1 else ""
        raise ValueError(
            f"{label} must have shape (n, d), rows as points, got shape {tuple(x.shape)}{hint}"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(
            f"{label} must have at least one row and one column, got shape {tuple(x.shape)}"
        )
    check_finite(x, label)
    return x


def check_finite(x: torch.Tensor, what: str, row_offset: int = 0) -> None:
    """Raise ``ValueError`` naming the row and column of the first non-finite value of ``x``.

    ``row_offset`` is added to the row number, for ``x`` a chunk of a larger table.
    """
    index = first_nonfinite(x)
    if index is None:
        return
    value = x[index].item()
    where = f"row {index[0] + row_offset}"
    if len(index) == 2:
        where += f", column {index[1]}"
    elif len(index) > 2:
        where += f", entry {index[1:]}"
    raise ValueError(
        f"{what} has a non-finite value ({value}) at {where}; remove or impute that row first"
    )


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write a file through ``write(tmp_path)`` into a temporary sibling, then rename it.

    A failure part-way leaves any previous file at ``path`` intact; the rename is atomic on
    POSIX file systems because the temporary file lives in the same directory. The data are
    flushed to the disk before the rename, so that a crash or power cut just after it cannot
    leave an empty or partial file under the final name in place of the previous one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        write(tmp_path)
        _fsync(tmp_path)
        os.replace(tmp_path, path)
    except BaseException as e:
        tmp_path.unlink(missing_ok=True)
        if not isinstance(e, OSError) or e.errno is None:
            raise
        # The OS's words with the file they concern: a failed write() names no file, and the
        # temporary file's name would mislead.
        raise OSError(
            e.errno,
            f"could not write {path}: {e.strerror or e}; the previous {path.name}, if any, "
            "is unchanged",
        ) from e
    return path


def _fsync(path: Path) -> None:
    # Opened for writing: fsync on Windows refuses a read-only descriptor.
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see [`atomic_write`][])."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def rowwise_jacobian(
    f: Callable[[Tensor], Tensor], x: Tensor, role: str = "map"
) -> tuple[Tensor, Tensor]:
    """f(x), detached, and the Jacobian of the row-wise map f: (n, d) -> (n, p) at every row,
    shape ``(n, p, d)``.

    The rows are differentiated together: one backward pass per output coordinate, each
    vectorized over the rows, which is exact when f treats its rows independently (true of
    any network without batch statistics). ``torch.func.vmap`` would avoid even that loop,
    but it refuses random operations (a DAE's corrupted encoder draws its corruptions when
    called) and ``.item()``-style control flow, which plain autograd accepts.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        y = f(x)
        if not isinstance(y, Tensor) or y.dim() != 2 or y.shape[0] != x.shape[0]:
            shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(
                f"the {role} must map x of shape {tuple(x.shape)} to shape ({x.shape[0]}, p), "
                f"one row per point, got {shape}"
            )
        if not y.requires_grad:
            raise ValueError(
                f"the {role}'s output does not depend on x through autograd (it is detached, "
                "computed under torch.no_grad(), or made outside torch); the Jacobian needs a "
                f"{role} differentiable in x"
            )
        rows = []
        for j in range(y.shape[1]):
            (g,) = torch.autograd.grad(
                y[:, j].sum(), x, retain_graph=j + 1 < y.shape[1], allow_unused=True
            )
            rows.append(torch.zeros_like(x) if g is None else g)
    return y.detach(), torch.stack(rows, dim=1)
