"""Reading a data table for a model's observed site from a .npy, .csv, .pt or .nc file.

A data table has one example per row: shape ``(rows, *observed_shape)``, or ``(rows, d)`` with
each row flattened in row-major order (a CSV file is always two-dimensional). Every failure is
a [`DataError`][] whose message names the file, says what is wrong and how to fix it; rows
and columns count from 0, lines of a CSV file from 1 as in an editor.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.distributions import constraints

from latentae._util import check_finite, first_nonfinite

if TYPE_CHECKING:
    from latentae.joint import JointModel

__all__ = ["FORMATS", "DataError", "load_table"]

#: File extensions [`load_table`][] reads.
FORMATS = (".npy", ".csv", ".pt", ".nc")

_SUPPORTED = "use a .npy, .csv, .pt or .nc file"

# numpy kinds of numeric arrays: bool, signed and unsigned integers, floats.
_NUMERIC_KINDS = "biuf"

_NUMPY_FLOATS = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


class DataError(ValueError):
    """A data table is missing, unreadable, or does not fit the model's observed site.

    The message names the file, says what is wrong and how to fix it.
    """


def load_table(
    path: str | Path, joint: JointModel | None = None, *, name: str | None = None
) -> torch.Tensor:
    """Read a data table, rows = examples, checked against a model's observed site.

    Formats, chosen by the file's extension:

    - ``.npy``: one numeric array (memory-mapped while it is read; object arrays are refused).
    - ``.csv``: comma-separated numbers, one row per line, with an optional header line.
    - ``.pt``: a tensor saved with ``torch.save``, or a dict, list or tuple holding exactly one
      tensor or a tensor under the observed site's name; read with ``weights_only=True``.
    - ``.nc``: a netCDF-4 file; the variable named as the observed site, or its only variable,
      with rows along its first dimension. An ArviZ InferenceData file is read from its
      ``observed_data`` group.

    Args:
        path: the file.
        joint: the model whose observed site the rows are for. The table must have shape
            ``(rows, *joint.observed_shape)`` or ``(rows, joint.observed_dim)``, finite
            values, and values inside the site's support (e.g. only 0 and 1 for a Bernoulli
            site). Without it, any numeric table of at least one dimension is accepted.
        name: the variable (.nc) or key (.pt) to read; default: the observed site's name if
            the file has it, else its only tensor or variable.

    Returns:
        The table as a tensor of ``joint.dtype`` (the default dtype without ``joint``), of shape
        ``(rows, *joint.observed_shape)``.

    Raises:
        DataError: a ``ValueError`` naming the file, what is wrong and how to fix it.

    Examples:
        >>> import tempfile, numpy as np
        >>> from latentae import JointModel
        >>> jm = JointModel.from_file("models/ppca.py")
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     np.save(f"{folder}/x.npy", np.arange(15.0).reshape(3, 5))
        ...     x = load_table(f"{folder}/x.npy", jm)
        >>> tuple(x.shape), x.dtype == jm.dtype, float(x[2, 4])
        ((3, 5), True, 14.0)
    """
    path = Path(path)
    label = f"data table {str(path)!r}"
    suffix = _check_path(path, label)
    key = name if name is not None else (joint.observed if joint is not None else None)
    raw, lines = _READERS[suffix](path, label, key, name is not None)
    table = _numeric(raw, label)
    if table.ndim == 0:
        raise DataError(
            f"{label} holds a single number, not a table; save one example per row, "
            "shape (rows, ...)"
        )
    if table.size == 0:
        raise DataError(
            f"{label} is empty (shape {tuple(table.shape)}); it needs at least one row of values"
        )
    dtype = joint.dtype if joint is not None else torch.get_default_dtype()
    x = _convert(table, dtype, label, lines)
    if joint is None:
        return x
    rows = _fit_shape(x, joint, label)
    _check_support(x, rows, joint, label, lines)
    return rows


# ---------------------------------------------------------------------- paths


def _check_path(path: Path, label: str) -> str:
    suffix = path.suffix.lower()
    if not path.exists():
        raise DataError(f"{label} does not exist; pass the path of a data file ({_SUPPORTED})")
    if path.is_dir():
        raise DataError(f"{label} is a folder, not a file; pass the path of a data file")
    if suffix not in FORMATS:
        shown = f"extension {path.suffix!r}" if path.suffix else "no extension"
        raise DataError(f"{label} has {shown}, which latentae cannot read; {_SUPPORTED}")
    return suffix


def _reading_failed(label: str, what: str, error: BaseException) -> DataError:
    detail = " ".join(str(error).split()) or type(error).__name__
    # Library messages can run to a paragraph of advice that does not apply: keep the first
    # sentence, which says what failed.
    detail = re.split(r"(?<=[.!?])\s", detail, maxsplit=1)[0].rstrip(".")
    return DataError(
        f"{label} could not be read as {what} ({detail}); it may be truncated or corrupt"
    )


# ---------------------------------------------------------------------- readers
# Each returns the raw table (numpy array or tensor) and, for a CSV file, the line number of
# every row, so that later messages can point into the file.


def _read_npy(path: Path, label: str, key: str | None, strict: bool) -> tuple[Any, None]:
    # numpy takes any file without the .npy signature for a pickle and says so; say what it is.
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise DataError(
                f"{label} could not be read as a .npy array (it lacks the .npy signature); "
                "it may be corrupt, or a file of another format named .npy"
            )
    try:
        # Memory-mapped: a large table is read once, straight into the converted copy.
        return np.load(path, mmap_mode="r", allow_pickle=False), None
    except ValueError as e:
        if "Python objects" in str(e):
            raise DataError(
                f"{label} holds Python objects (an object array), which latentae does not load "
                "for safety; save a numeric array, e.g. np.save(path, array.astype(float))"
            ) from e
        raise _reading_failed(label, "a .npy array", e) from e
    except Exception as e:
        raise _reading_failed(label, "a .npy array", e) from e


def _parse_number(token: str) -> float | None:
    token = token.strip().strip('"').strip()
    try:
        return float(token)
    except ValueError:
        return None


def _read_csv(path: Path, label: str, key: str | None, strict: bool) -> tuple[Any, list[int]]:
    try:
        # utf-8-sig drops a byte-order mark; newline=None folds \r\n and \r into \n.
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise DataError(
            f"{label} is not a UTF-8 text file (byte {e.start} cannot be decoded); "
            "a .csv table must be plain text with comma-separated numbers"
        ) from e
    except OSError as e:
        raise _reading_failed(label, "a text file", e) from e
    rows: list[list[float]] = []
    lines: list[int] = []
    width = 0
    first = True
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        fields = line.split(",")
        values = [_parse_number(f) for f in fields]
        # A header is the first line, and only when none of its fields is a number, so that a
        # typo in the first row of data is reported rather than taken for a header.
        header, first = first and all(v is None for v in values), False
        if header:
            if _other_delimiter(line):
                raise DataError(
                    f"{label} has no commas at line {number} but numbers separated otherwise; "
                    "separate the values with commas"
                )
            continue
        for column, (field, value) in enumerate(zip(fields, values, strict=True)):
            if value is None:
                raise DataError(
                    f"{label} has a value that is not a number, {_show(field)}, at "
                    f"line {number}, column {column}{_csv_hint(field)}"
                )
            if not math.isfinite(value):
                raise DataError(
                    f"{label} has a non-finite value ({value}) at line {number}, column "
                    f"{column}; remove or impute that row first"
                )
        if rows and len(values) != width:
            raise DataError(
                f"{label} has {len(values)} values at line {number} but {width} at line "
                f"{lines[0]}; every row needs the same number of comma-separated values"
            )
        width = len(values)
        rows.append(values)
        lines.append(number)
    if not rows:
        raise DataError(
            f"{label} has no rows of numbers{' after its header' if not first else ''}; "
            "it needs at least one line of comma-separated numbers"
        )
    return np.array(rows, dtype=np.float64).reshape(len(rows), width), lines


def _other_delimiter(line: str) -> bool:
    """Whether ``line`` is numbers separated by semicolons, tabs or spaces instead of commas."""
    parts = [p for p in re.split(r"[;\t ]+", line.strip()) if p]
    return len(parts) > 1 and all(_parse_number(p) is not None for p in parts)


def _show(field: str) -> str:
    field = field.strip()
    return repr(field if len(field) <= 40 else field[:37] + "...") if field else "an empty field"


def _csv_hint(field: str) -> str:
    if not field.strip():
        return "; fill in the value or remove the extra comma"
    if re.search(r"[;\t ]", field.strip()):
        return "; separate the values with commas"
    return "; a .csv table holds only numbers, with at most one header line at the top"


def _read_pt(path: Path, label: str, key: str | None, strict: bool) -> tuple[Any, None]:
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        match = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\n\n|$)", str(e), re.S)
        if match and "Unsupported global" in match.group(1):
            raise DataError(
                f"{label} holds Python objects other than tensors, which latentae does not load "
                "for safety; save plain tensors, e.g. torch.save(torch.as_tensor(array), path)"
            ) from e
        raise _reading_failed(
            label, "a file written by torch.save", match.group(1) if match else e
        ) from e
    if torch.is_tensor(content):
        return content, None
    if isinstance(content, dict):
        items = {str(k): v for k, v in content.items()}
        what = "keys"
    elif isinstance(content, list | tuple):
        items = {str(i): v for i, v in enumerate(content)}
        what = "items"
    else:
        raise DataError(
            f"{label} holds a {type(content).__name__}, not a tensor; save the table with "
            "torch.save(tensor, path)"
        )
    return _pick(items, key, strict, label, what, "a tensor", torch.is_tensor), None


def _pick(
    items: dict[str, Any],
    key: str | None,
    strict: bool,
    label: str,
    what: str,
    kind: str,
    accept: Callable[[Any], bool],
) -> Any:
    """The entry named ``key`` (required if ``strict``), else the only acceptable entry."""
    if key is not None and key in items:
        if not accept(items[key]):
            raise DataError(
                f"{label} has {key!r} but it is a {type(items[key]).__name__}, not {kind}; "
                f"store the table as {kind}"
            )
        return items[key]
    good = [k for k, v in items.items() if accept(v)]
    shown = sorted(items)[:10]
    if strict:
        raise DataError(
            f"{label} has no entry named {key!r} (its {what}: {shown}); pass one of those"
        )
    if len(good) != 1:
        named = f" and none named {key!r}" if key is not None else ""
        raise DataError(
            f"{label} has {len(good)} {what} holding {kind}{named} (its {what}: {shown}); "
            f"store the table alone{f' or under the name {key!r}' if key else ''}"
        )
    return items[good[0]]


def _read_nc(path: Path, label: str, key: str | None, strict: bool) -> tuple[Any, None]:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic.startswith(b"CDF"):
        raise DataError(
            f"{label} is a netCDF-3 file, but latentae reads netCDF-4 (HDF5) files; convert it "
            "with xarray.open_dataset(path).to_netcdf(new_path, engine='h5netcdf')"
        )
    try:
        import h5py
        import xarray as xr

        # Opened with h5py first: h5netcdf, given a damaged file that h5py opens but cannot
        # read, fails half-constructed and its finalizer then prints a second error to stderr.
        with h5py.File(path, "r") as f:
            f.attrs.get("_nc3_strict")
            groups = [k for k, v in f.items() if isinstance(v, h5py.Group)]
        # An ArviZ InferenceData file keeps the data in its observed_data group.
        group = "observed_data" if "observed_data" in groups else None
        with xr.open_dataset(
            path, engine="h5netcdf", group=group, decode_times=False, decode_timedelta=False
        ) as ds:
            variables = {str(k): v for k, v in ds.data_vars.items()}
            if not variables and groups:
                raise DataError(
                    f"{label} has no variables at its root and no 'observed_data' group (its "
                    f"groups: {groups}); store the table as a variable at the root, or pass an "
                    "ArviZ InferenceData file with observed_data"
                )
            chosen = _pick(variables, key, strict, label, "variables", "numbers", lambda v: True)
            values = chosen.values
    except DataError:
        raise
    except Exception as e:
        raise _reading_failed(label, "a netCDF-4 file", e) from e
    return values, None


_READERS = {".npy": _read_npy, ".csv": _read_csv, ".pt": _read_pt, ".nc": _read_nc}


# ---------------------------------------------------------------------- checks


def _numeric(raw: Any, label: str) -> np.ndarray:
    """The table as a numpy array of a numeric kind (bool, integers or floats)."""
    if torch.is_tensor(raw):
        tensor = raw.detach().cpu()
        if tensor.is_complex():
            raise DataError(
                f"{label} holds complex numbers, not real numbers; save a float or integer table"
            )
        try:
            if tensor.layout != torch.strided:
                tensor = tensor.to_dense()
            # numpy has no bfloat16 nor float8 formats: widen them.
            if tensor.dtype.is_floating_point and tensor.dtype not in _NUMPY_FLOATS:
                tensor = tensor.double()
            raw = tensor.numpy()
        except Exception as e:
            raise DataError(
                f"{label} holds a tensor of dtype {tensor.dtype} that latentae cannot convert "
                f"({' '.join(str(e).split())}); save it as float32 or float64"
            ) from e
    array = np.asarray(raw)
    if array.dtype.kind not in _NUMERIC_KINDS or array.dtype.fields is not None:
        kinds = {"c": "complex numbers", "U": "strings", "S": "byte strings", "O": "objects"}
        kind = kinds.get(array.dtype.kind, f"values of dtype {array.dtype}")
        if array.dtype.fields is not None:
            kind = f"records with fields {list(array.dtype.fields)}"
        raise DataError(f"{label} holds {kind}, not real numbers; save a float or integer table")
    return array


def _convert(
    table: np.ndarray, dtype: torch.dtype, label: str, lines: list[int] | None
) -> torch.Tensor:
    """The table as a fresh tensor of ``dtype``, with every value finite."""
    target = _NUMPY_FLOATS.get(dtype, np.float64)
    # A fresh C-ordered, native-endian copy: releases a memory map and is writable for torch.
    with np.errstate(over="ignore", invalid="ignore"):
        array = np.array(table, dtype=target, order="C")
    x = torch.from_numpy(array).to(dtype)
    index = first_nonfinite(x)
    if index is None:
        return x
    original = table[index]
    if np.isfinite(original):
        raise DataError(
            f"{label} has the value {original} at {_position(index, lines)}, too large for "
            f"{str(dtype).removeprefix('torch.')}; rescale the data"
        )
    try:
        check_finite(x, label)
    except ValueError as e:
        raise DataError(str(e)) from None
    raise AssertionError("unreachable: first_nonfinite found a value check_finite did not")


def _position(index: tuple[int, ...], lines: list[int] | None) -> str:
    where = f"row {index[0]}"
    if len(index) == 2:
        where += f", column {index[1]}"
    elif len(index) > 2:
        where += f", entry {index[1:]}"
    if lines is not None:
        where += f" (line {lines[index[0]]})"
    return where


def _fit_shape(x: torch.Tensor, joint: JointModel, label: str) -> torch.Tensor:
    """``x`` as ``(rows, *observed_shape)``, also from flattened rows ``(rows, observed_dim)``."""
    event = tuple(joint.observed_shape)
    if tuple(x.shape[1:]) == event:
        return x
    if x.dim() == 2 and x.shape[1] == joint.observed_dim:
        return x.reshape(x.shape[0], *event)
    expected = f"(rows, {', '.join(map(str, event))})".replace(", )", ")")
    if len(event) > 1:
        expected += f" or (rows, {joint.observed_dim}) with each row flattened"
    raise DataError(
        f"{label} has shape {tuple(x.shape)}, but {joint._where} observes {joint.observed!r} "
        f"with shape {event} per row; pass a table of shape {expected}"
    )


def _describe(support: constraints.Constraint) -> str:
    if support is constraints.boolean:
        return "binary, {0, 1}"
    if isinstance(support, constraints.integer_interval):
        return f"integers {support.lower_bound:g}..{support.upper_bound:g}"
    if support is constraints.nonnegative_integer:
        return "non-negative integers"
    if support is constraints.positive_integer:
        return "positive integers"
    if isinstance(support, constraints.interval | constraints.half_open_interval):
        return f"the interval [{support.lower_bound:g}, {support.upper_bound:g}]"
    if support is constraints.positive:
        return "positive numbers"
    if support is constraints.nonnegative:
        return "non-negative numbers"
    return type(support).__name__.strip("_").lower()  # simplex, ...


def _check_support(
    x: torch.Tensor,
    rows: torch.Tensor,
    joint: JointModel,
    label: str,
    lines: list[int] | None,
) -> None:
    """Refuse values outside the observed site's support, naming the first one."""
    support = joint.observed_support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    if support is constraints.real or isinstance(support, constraints._Dependent):
        return
    try:
        # An elementwise constraint checks the table as it is in the file, so the column
        # named below is the file's column; an event constraint (a simplex) checks whole rows.
        elementwise = support.event_dim == 0
        ok = support.check(x if elementwise else rows)
    except Exception:
        return  # a constraint torch cannot evaluate (it depends on other values): nothing to check
    if bool(ok.all()):
        return
    bad = tuple(int(i) for i in np.unravel_index(int((~ok).reshape(-1).nonzero()[0, 0]), ok.shape))
    what = (
        f"the value {x[bad].item():g} at {_position(bad, lines)}"
        if elementwise
        else (f"row {bad[0]}{f' (line {lines[bad[0]]})' if lines else ''}")
    )
    hint = (
        "binarize the data (e.g. x > 0.5)"
        if support is constraints.boolean
        else "transform the data into the support, or observe it with another distribution"
    )
    raise DataError(
        f"{label} has {what}, outside the support of {joint.observed!r} in {joint._where}, "
        f"which is {_describe(support)}; {hint}"
    )
