"""The cube's Zarr store, written in pieces: created empty with the full schema from a template, filled one
region at a time (a block's sources, its rows, a batch's failures), consolidated last.

Regions of different blocks may share an `obs` or `failure` chunk (blocks end where sources end, chunks are
regular): such a chunk is written read-modify-write under a lock named after it (a Dask `Lock` on a worker;
tasks run one at a time outside a worker), so two blocks never overwrite each other's rows. Zarr's local store
writes each chunk file by rename, so a killed writer leaves a chunk whole, old or new.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from spxbatch.errors import StageError
from spxbatch.pipeline.assembly.layout import partial_chunks

#: The dimensions written region by region (the others, channel and band_id, are written with the template).
REGION_DIMS = ("source", "obs", "failure")


def create_store(path: str | Path, sample: xr.Dataset, sizes: dict[str, int], chunks: dict[str, int],
                 names: np.ndarray, attrs: dict[str, Any]) -> None:
    """Create the store at `path` with every variable of `sample` (a cube of the same schema, e.g. one source
    of the run) at the full `sizes`, chunked by `chunks` along the region dimensions; the source names, the
    channel and band variables and the dataset attributes are written now, the rest by `write_region`."""
    variables = {}
    encoding = {}
    for name, var in sample.variables.items():
        shape = tuple(sizes.get(d, var.sizes[d]) for d in var.dims)
        chunk = tuple(max(1, min(chunks.get(d, shape[i]), shape[i])) for i, d in enumerate(var.dims))
        encoding[name] = {"chunks": chunk}
        if name == "source":
            data: Any = np.asarray(names, dtype=object)
        elif not set(var.dims) & set(REGION_DIMS):
            data = var.values
        elif var.dtype == object:  # strings: numpy's variable-length dtype, as Zarr v3 stores them (not objects,
            data = da.full(shape, "", dtype=np.dtypes.StringDType(), chunks=chunk)  # which xarray would load)
        else:
            data = da.zeros(shape, dtype=var.dtype, chunks=chunk)
        variables[name] = xr.Variable(var.dims, data, var.attrs)
    coords = {k: variables.pop(k) for k in list(sample.coords)}
    template = xr.Dataset(variables, coords=coords, attrs={**sample.attrs, **attrs})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        template.to_zarr(path, mode="w", zarr_format=3, consolidated=False, compute=False, encoding=encoding)


@contextlib.contextmanager
def chunk_locks(names: list[str]) -> Iterator[None]:
    """Hold the named locks (in sorted order, so two writers never wait on each other) on a Dask worker;
    outside a worker tasks run one at a time and need none."""
    try:
        from distributed import Lock, get_worker

        get_worker()
    except ValueError:
        yield
        return
    locks = [Lock(n) for n in sorted(set(names))]
    taken = []
    try:
        for lock in locks:
            lock.acquire()
            taken.append(lock)
        yield
    finally:
        for lock in reversed(taken):
            lock.release()


def write_region(path: str | Path, ds: xr.Dataset, dim: str, start: int, chunk: int, size: int) -> None:
    """Write `ds` (variables along `dim`, in the store's dtypes) into rows [start, start + len) of the store's
    `dim`, which has `size` rows in chunks of `chunk`; chunks shared with other regions are written under
    their locks. Values go to the Zarr arrays as they are: the template gave each array xarray's encoding,
    and the cube's dtypes need no conversion (floats keep NaN, strings are variable-length)."""
    stop = start + ds.sizes.get(dim, 0)
    if stop == start or not ds.data_vars:
        return
    group = zarr.open_group(str(path), mode="r+", zarr_format=3)
    shared = [f"spxbatch-assembly:{Path(path).resolve()}:{dim}:{k}" for k in partial_chunks(start, stop, size, chunk)]
    arrays = {name: group[name] for name in ds.data_vars}
    for name, arr in arrays.items():  # Zarr would cast silently (NaN into an integer array): refuse instead
        kinds = {ds[name].dtype.kind, arr.dtype.kind}
        if ds[name].dtype != arr.dtype and not kinds <= set("OUT"):
            raise StageError(f"assembly: {name} is {ds[name].dtype} in rows {start}..{stop} of {dim} but "
                             f"{arr.dtype} in the store (its template)")
    with chunk_locks(shared):
        for name, var in ds.data_vars.items():
            arrays[name][tuple(slice(start, stop) if d == dim else slice(None) for d in var.dims)] = var.values


def consolidate(path: str | Path) -> None:
    """Write the store's consolidated metadata (what `open_cube` reads)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        zarr.consolidate_metadata(str(path), zarr_format=3)
