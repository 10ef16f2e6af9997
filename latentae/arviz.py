"""The one module that builds ArviZ ``InferenceData``, so that a port to ArviZ 1.x (where
``from_dict`` and ``InferenceData`` change) touches one file."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from latentae._util import atomic_write

if TYPE_CHECKING:
    import arviz

__all__ = ["from_draws", "load_netcdf", "save_netcdf"]


def _numpy(t: Any) -> np.ndarray:
    if torch.is_tensor(t):
        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
        return t.numpy()
    return np.asarray(t)


def _dims(name: str, shape: Sequence[int], row_dim: str | None) -> list[str]:
    """Dimension names after (chain, draw): the row dimension, then the event's."""
    lead = [row_dim] if row_dim is not None and len(shape) else []
    event = shape[len(lead) :]
    if len(event) == 1:
        return [*lead, f"{name}_dim"]
    return lead + [f"{name}_dim_{i}" for i in range(len(event))]


def from_draws(
    posterior: Mapping[str, Any],
    *,
    observed: Mapping[str, Any] | None = None,
    sample_stats: Mapping[str, Any] | None = None,
    row_dim: str | None = "obs",
    attrs: Mapping[str, Any] | None = None,
) -> arviz.InferenceData:
    """Build ``InferenceData`` from draws with an explicit chain axis.

    Args:
        posterior: name -> array of shape ``(chain, draw, [rows,] *event)``.
        observed: name -> array of shape ``([rows,] *event)`` for ``observed_data``.
        sample_stats: name -> array of shape ``(chain, draw, ...)``.
        row_dim: name of the dimension indexing observation rows (after chain and draw), or
            ``None`` when the draws have no such axis.
        attrs: attributes stored on every group (method, model, ...).

    Examples:
        >>> idata = from_draws({"h": torch.zeros(4, 100, 3, 2)}, observed={"x": torch.zeros(3, 5)})
        >>> dict(idata.posterior.sizes)
        {'chain': 4, 'draw': 100, 'obs': 3, 'h_dim': 2}
    """
    import arviz as az

    dims: dict[str, list[str]] = {}
    post = {}
    for name, value in posterior.items():
        a = _numpy(value)
        if a.ndim < 2:
            raise ValueError(
                f"posterior draws {name!r} need a (chain, draw, ...) shape, got {a.shape}"
            )
        post[name] = a
        dims[name] = _dims(name, a.shape[2:], row_dim)
    obs = {}
    for name, value in (observed or {}).items():
        a = _numpy(value)
        obs[name] = a
        dims[name] = _dims(name, a.shape, row_dim)
    stats = {}
    for name, value in (sample_stats or {}).items():
        a = _numpy(value)
        stats[name] = a
        dims[name] = _dims(name, a.shape[2:], row_dim)
    kwargs: dict[str, Any] = {"dims": dims}
    if obs:
        kwargs["observed_data"] = obs
    if stats:
        kwargs["sample_stats"] = stats
    with warnings.catch_warnings():
        # Many chains with few draws each (GSN chains, many iid chains) is a legitimate
        # layout, and the chain axis is always explicit here, so ArviZ's guess that the
        # axes are swapped does not apply.
        warnings.filterwarnings("ignore", message=r"More chains \(\d+\) than draws")
        idata = az.from_dict(posterior=post, **kwargs)
    for group in idata.groups():
        idata[group].attrs.update(attrs or {})
    return idata


def save_netcdf(idata: arviz.InferenceData, path: str | os.PathLike) -> Path:
    """Write ``idata`` to ``path`` atomically: a failure leaves any previous file intact.

    The file is the one ``idata.to_netcdf`` writes (netCDF-4 through h5netcdf, one group per
    ArviZ group, numeric variables zlib-compressed), built in memory first: HDF5 writing
    straight to a disk that fills up, or past a file-size limit, can crash the process
    instead of raising; a plain write of the finished bytes raises the OS's error.
    """
    data = _netcdf_bytes(idata)
    if data is None:  # an xarray without in-memory netCDF-4: ArviZ writes the file itself
        return atomic_write(path, lambda tmp: idata.to_netcdf(str(tmp)))
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _netcdf_bytes(idata: arviz.InferenceData) -> bytes | None:
    """The bytes of ``idata.to_netcdf``'s file, or ``None`` where it cannot be built in
    memory (an xarray before its DataTree or without in-memory netCDF-4, or an ArviZ whose
    compression test has moved)."""
    import xarray as xr

    try:
        # ArviZ's own test of which variables it compresses (private, hence guarded).
        from arviz.data.inference_data import _compressible_dtype
    except ImportError:
        return None
    if not hasattr(xr, "DataTree"):
        return None

    groups = {f"/{g}": idata[g] for g in idata.groups()}
    tree = xr.DataTree.from_dict({"/": xr.Dataset(attrs=dict(idata.attrs)), **groups})
    # ArviZ's choice of compression, so that the file is the one it would write.
    encoding = {
        name: {v: {"zlib": True} for v, x in ds.variables.items() if _compressible_dtype(x.dtype)}
        for name, ds in groups.items()
    }
    try:
        data = tree.to_netcdf(None, engine="h5netcdf", encoding=encoding)
    except Exception:
        # Versions of xarray with a DataTree but no in-memory netCDF-4 refuse a None path in
        # their own ways; ArviZ's writer then writes the file (and raises any real error).
        return None
    return bytes(data) if isinstance(data, bytes | memoryview) else None


def load_netcdf(path: str | os.PathLike) -> arviz.InferenceData:
    """Read ``InferenceData`` written by [`save_netcdf`][] fully into memory."""
    import arviz as az

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no netcdf file at {str(path)!r}")
    try:
        idata = az.from_netcdf(str(path))
        for group in idata.groups():
            idata[group].load()
    except Exception as e:
        raise ValueError(f"{str(path)!r} is not a readable ArviZ netcdf file: {e}") from e
    return idata
