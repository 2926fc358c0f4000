"""Zarr stores written region by region: rows [start, stop) of a dimension at a time (a block of sources and
their measurements), chunks shared by two regions written read-modify-write under a lock named after the chunk,
metadata consolidated last. Used by the distributed assembly and by `qc`, which rewrites a cube block by block.

Zarr's local store writes each chunk file by rename, so a killed writer leaves a chunk whole, old or new.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import xarray as xr
import zarr

from spxbatch.errors import StageError


def partial_chunks(start: int, stop: int, size: int, chunk: int) -> list[int]:
    """The chunks of a dimension of `size` (chunks of `chunk`) that the region [start, stop) touches without
    covering them whole: those it shares with other regions, written under a lock."""
    if stop <= start:
        return []
    return [k for k in range(start // chunk, -(-stop // chunk))
            if start > k * chunk or stop < min((k + 1) * chunk, size)]


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
    shared = [f"spxbatch-region:{Path(path).resolve()}:{dim}:{k}" for k in partial_chunks(start, stop, size, chunk)]
    arrays = {name: group[name] for name in ds.data_vars}
    for name, arr in arrays.items():  # Zarr would cast silently (NaN into an integer array): refuse instead
        kinds = {ds[name].dtype.kind, arr.dtype.kind}
        if ds[name].dtype != arr.dtype and not kinds <= set("OUT"):
            raise StageError(f"writing {path}: {name} is {ds[name].dtype} in rows {start}..{stop} of {dim} but "
                             f"{arr.dtype} in the store (its template)")
    with chunk_locks(shared):
        for name, var in ds.data_vars.items():
            arrays[name][tuple(slice(start, stop) if d == dim else slice(None) for d in var.dims)] = var.values


def consolidate(path: str | Path) -> None:
    """Write the store's consolidated metadata (what `open_cube` reads)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        zarr.consolidate_metadata(str(path), zarr_format=3)
