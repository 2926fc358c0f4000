"""A cube read block of sources by block: consecutive source ranges whose measurements fit a row budget, so
readers (export, qc, the summary figure) hold one block at a time, whatever the cube's size."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import xarray as xr

#: Measurements read at once by block-wise readers (about 100 MB of a dozen columns).
BLOCK_ROWS = 1_000_000


def store_chunk(ds: xr.Dataset, name: str) -> int:
    """The store's chunk length along the first dimension of variable `name` (its length when unchunked)."""
    chunks = ds[name].encoding.get("chunks")
    return int(chunks[0]) if chunks else max(1, ds[name].shape[0])


class SourceRange(NamedTuple):
    """Sources [first, stop) and their measurements, rows [obs_start, obs_stop) of the ragged `obs`."""

    first: int
    stop: int
    obs_start: int
    obs_stop: int


def source_ranges(ds: xr.Dataset, max_rows: int = BLOCK_ROWS, align: int = 1) -> Iterator[SourceRange]:
    """Consecutive source ranges covering every source once, each holding at most `max_rows` measurements
    (or one source's, when it has more), cut at multiples of `align` sources where a range spans more than
    that (so a writer of per-source variables fills whole chunks); with their `obs` rows, which the ragged
    layout keeps contiguous (a source's first row is the count of the rows before it)."""
    n = ds.sizes["source"]
    ends = np.cumsum(ds["row_size"].values.astype(np.int64))  # one small per-source array
    first = 0
    while first < n:
        done = int(ends[first - 1]) if first else 0
        stop = max(first + 1, int(np.searchsorted(ends, done + max_rows, side="right")))
        if stop < n and stop - first >= align:
            stop = first + (stop - first) // align * align
        stop = min(stop, n)
        yield SourceRange(first, stop, done, int(ends[stop - 1]))
        first = stop
