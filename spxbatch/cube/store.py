"""The cube on disk: written as a Zarr v3 store in whole chunks (atomically), opened with xarray, and the
`ds.spx` accessor for one source's measurements.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
import zarr
from dask.local import get_sync
from xarray.coding.common import lazy_elemwise_func
from xarray.indexes import PandasIndex

from spxbatch.errors import ConfigError
from spxbatch.files import atomic_path

#: The title every cube spxbatch writes carries (cube.assemble sets it): how a cube is known as spxbatch's own.
CUBE_TITLE = "spxbatch SPHEREx forced photometry"


def is_spxbatch_cube(path: str | Path) -> bool:
    """Whether `path` is a Zarr store spxbatch wrote: its root metadata (zarr.json) carries spxbatch's title
    and software attributes. Reads one small JSON file, so it is cheap enough to ask before any work."""
    meta = Path(path) / "zarr.json"
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        return False
    return (isinstance(attrs, dict) and attrs.get("title") == CUBE_TITLE
            and str(attrs.get("software", "")).startswith("spxbatch"))


def check_replaceable(path: str | Path) -> None:
    """Refuse (ConfigError) to replace `path` unless it is absent, an empty folder (nothing to lose: users
    often make the folder first) or a cube spxbatch wrote, so that a mistyped -o never deletes a folder of
    the user's."""
    path = Path(path)
    empty_folder = path.is_dir() and not path.is_symlink() and not any(path.iterdir())
    if (path.exists() or path.is_symlink()) and not empty_folder and not is_spxbatch_cube(path):
        raise ConfigError(f"output {path} already exists and is not a spxbatch cube; refusing to replace it "
                          "(choose another -o, or remove it yourself)")


def write_cube(ds: xr.Dataset, path: str | Path, obs_chunk: int = 1_000_000,
               source_chunk: int = 100_000) -> Path:
    """Write the Dataset as a Zarr v3 store in whole chunks, then consolidate; replaces `path` atomically,
    and only when it is absent or a cube spxbatch wrote (ConfigError otherwise)."""
    path = Path(path)
    check_replaceable(path)
    encoding = {}
    for name, var in ds.variables.items():
        dims = var.dims
        chunks = tuple(
            min(obs_chunk if d == "obs" else source_chunk if d == "source" else ds.sizes[d], max(ds.sizes[d], 1))
            for d in dims)
        encoding[name] = {"chunks": chunks}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        with atomic_path(path) as tmp:
            ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=True, encoding=encoding)
    return path


def open_cube(path: str | Path, dask: bool = True) -> xr.Dataset:
    """Open a cube written by spxbatch (lazily, through xarray's Zarr backend): as dask arrays, or with
    `dask=False` as xarray's own lazy arrays (no dask start-up, for short-lived readers of a few rows)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        ds = xr.open_zarr(path, zarr_format=3, consolidated=True, create_default_indexes=False,
                          **({} if dask else {"chunks": None}))
    # Zarr v3 strings come back as numpy's StringDType, which many numpy/pandas calls refuse; use objects,
    # converted as they are read (without dask, astype would read every string variable whole at open).
    indexed = [d for d in ds.dims if d in ds.coords]
    for name, var in ds.variables.items():
        if var.dtype.kind == "T" and name not in indexed:
            if dask:
                ds[name] = var.astype(object)
            else:
                ds[name] = var.copy(data=lazy_elemwise_func(var._data, _as_objects, np.dtype(object)))
    # the dimension coordinates (source names, band ids): read whole, as objects, and indexed once (xarray's
    # default, building the index from the stored strings and again after the conversion, cost seconds for
    # 10^6 sources); strings straight from Zarr (through xarray and dask, 10^6 names took seconds more), and
    # indexed as the objects they are (pandas would infer its own string dtype: a copy, tenths of a second)
    group = zarr.open_group(str(path), mode="r", zarr_format=3)
    for d in indexed:
        var = ds[d].variable
        values = _loaded(var, group[d])
        ds = ds.assign_coords(xr.Coordinates.from_xindex(PandasIndex(pd.Index(values, dtype=values.dtype), d)))
        ds[d].attrs.update(var.attrs)
        ds[d].encoding = var.encoding
    return ds


#: Encodings under which the stored values are not the decoded ones (xarray must read those).
DECODED_BY_XARRAY = ("_FillValue", "missing_value", "scale_factor", "add_offset", "units", "calendar")


def _loaded(var: xr.Variable, stored: zarr.Array) -> np.ndarray:
    """A dimension coordinate's values, read whole straight from its stored array where xarray would decode
    nothing (strings as objects); else through xarray. A first read through dask costs tenths of a second, and
    wrapping 10^6 objects in a Variable another tenth (measured in xarray's Variable.copy)."""
    if var.dtype.kind == "T":
        return stored[...].astype(object)
    if stored.dtype == var.dtype and not set(DECODED_BY_XARRAY) & set(var.encoding):
        return stored[...]
    return var.load().values


def _as_objects(values: np.ndarray) -> np.ndarray:
    return values.astype(object)


@xr.register_dataset_accessor("spx")
class SpxAccessor:
    """`ds.spx.source(name)`: one source's measurements; `ds.spx.dataframe(name)` as a DataFrame."""

    # A few rows are read in this process, one chunk a variable, by dask's synchronous scheduler: naming it as a
    # function skips dask's look for a distributed Client (whose import alone costs tenths of a second).

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    def index(self, name: str) -> int:
        """Position of a source in the `source` dimension (KeyError naming it when absent)."""
        names = self._ds["source"].values
        hits = np.flatnonzero(names == name)
        if hits.size == 0:
            raise KeyError(f"no source named {name!r} in this cube")
        return int(hits[0])

    def source(self, name: str) -> xr.Dataset:
        """The `obs` rows of one source (time-ordered) plus its per-source and spectrum variables (lazy)."""
        i = self.index(name)
        bounds = self._ds[["obs_start", "row_size"]].isel(source=i).compute(scheduler=get_sync)  # a chunk each
        start, size = int(bounds["obs_start"]), int(bounds["row_size"])
        obs_vars = [v for v in self._ds.data_vars if self._ds[v].dims == ("obs",)]
        per_source = [v for v in self._ds.data_vars if self._ds[v].dims and self._ds[v].dims[0] == "source"]
        out = self._ds[obs_vars].isel(obs=slice(start, start + size))
        return out.merge(self._ds[per_source].isel(source=i)).merge(
            self._ds[["channel_wavelength", "channel_band"]])

    def dataframe(self, name: str) -> pd.DataFrame:
        """One source's measurements as a pandas DataFrame, one row per observation (read in one computation,
        not one per variable)."""
        sub = self.source(name)
        obs_vars = [v for v in sub.data_vars if sub[v].dims == ("obs",)]
        return sub[obs_vars].compute(scheduler=get_sync).to_dataframe().reset_index(drop=True)

