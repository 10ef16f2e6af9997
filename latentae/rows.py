"""Training rows for the DAE trainer: random access by index to a tensor, a numpy array
(memory-mapped arrays stay on disk) or a map-style Dataset, and the validation split."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from latentae._util import check_finite

# Rows per chunk when scanning an array for non-finite values or scoring validation data.
CHUNK = 65536


class Rows:
    """Random access to training rows by index: a tensor, a numpy array (memory-mapped
    arrays stay on disk: only the rows of a batch are read) or a map-style Dataset."""

    def __init__(self, data: Any, rows: Tensor | None = None) -> None:
        self.data, self.rows = data, rows

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else len(self.data)

    def take(self, index: Tensor) -> Tensor:
        if self.rows is not None:
            index = self.rows[index]
        data = self.data
        if torch.is_tensor(data):
            return data[index.to(data.device)]
        if isinstance(data, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(data[index.numpy()]))
        items = data.__getitems__(index.tolist()) if hasattr(data, "__getitems__") else None
        if items is None:
            items = [data[i] for i in index.tolist()]
        # A Dataset may return (x, ...) tuples, like TensorDataset: x comes first.
        items = [item[0] if isinstance(item, tuple | list) else item for item in items]
        return torch.stack([torch.as_tensor(item) for item in items])


def check_array(data: np.ndarray | Tensor) -> None:
    """Refuse non-finite values before training, naming the first one; chunked so that a
    memory-mapped array is never read whole into memory."""
    for start in range(0, len(data), CHUNK):
        chunk = data[start : start + CHUNK]
        chunk = chunk if torch.is_tensor(chunk) else torch.from_numpy(np.array(chunk))
        check_finite(chunk, "the training data", row_offset=start)


def split(data: Any, validation: float | Tensor | None, seed: int) -> tuple[Rows | None, Any]:
    """Split off validation rows (a seeded random subset) from a tensor, array or Dataset."""
    if isinstance(data, DataLoader) or not hasattr(data, "__getitem__"):
        return None, None
    if isinstance(data, Tensor | np.ndarray):
        check_array(data)
        if data.ndim < 2:
            raise ValueError(
                f"data has shape {tuple(data.shape)}; pass rows as examples, shape (n, d)"
            )
    n = len(data)
    if validation is None or (isinstance(validation, float | int) and validation == 0):
        return Rows(data), None
    if torch.is_tensor(validation) or isinstance(validation, np.ndarray):
        return Rows(data), torch.as_tensor(validation)
    if not 0 < validation < 1:
        raise ValueError(
            f"validation must be a fraction in [0, 1), a tensor or None, got {validation}"
        )
    n_val = max(1, round(validation * n))
    if n - n_val < 1:
        raise ValueError(f"validation={validation} leaves no training rows out of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val = Rows(data, perm[:n_val]).take(torch.arange(n_val))
    return Rows(data, perm[n_val:].sort().values), val
