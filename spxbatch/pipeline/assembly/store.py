"""The cube's Zarr store created empty with the full schema from a template, to be filled one region at a time
(a block's sources, its rows, a batch's failures: `cube.regions.write_region`) and consolidated last.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

#: The dimensions written region by region (the others, channel and band_id, are written with the template).
REGION_DIMS = ("source", "obs", "failure")
#: Templates up to this size (8 bytes a value) are written from memory, not as lazy arrays.
SMALL_TEMPLATE_BYTES = 64 * 2**20


def create_store(path: str | Path, sample: xr.Dataset, sizes: dict[str, int], chunks: dict[str, int],
                 names: np.ndarray, attrs: dict[str, Any]) -> None:
    """Create the store at `path` with every variable of `sample` (a cube of the same schema, e.g. one source
    of the run) at the full `sizes`, chunked by `chunks` along the region dimensions; the source names, the
    channel and band variables and the dataset attributes are written now, the rest by `write_region`."""
    variables = {}
    encoding = {}
    # a small cube's template is written whole from memory (~0.4 s less than building and storing 60 lazy
    # arrays); a large one's lazily, its chunks left for the regions
    small = sum(int(np.prod([sizes.get(d, var.sizes[d]) for d in var.dims])) * max(var.dtype.itemsize, 8)
                for var in sample.variables.values()) <= SMALL_TEMPLATE_BYTES
    for name, var in sample.variables.items():
        shape = tuple(sizes.get(d, var.sizes[d]) for d in var.dims)
        chunk = tuple(max(1, min(chunks.get(d, shape[i]), shape[i])) for i, d in enumerate(var.dims))
        encoding[name] = {"chunks": chunk}
        if name == "source":
            data: Any = np.asarray(names, dtype=object)
        elif not set(var.dims) & set(REGION_DIMS):
            data = var.values
        else:  # strings: numpy's variable-length dtype, as Zarr v3 stores them (not objects, which xarray loads)
            dtype = np.dtypes.StringDType() if var.dtype == object else var.dtype
            data = np.full(shape, _unwritten(var.dtype), dtype=dtype) if small else \
                da.full(shape, _unwritten(var.dtype), dtype=dtype, chunks=chunk)
        variables[name] = xr.Variable(var.dims, data, var.attrs)
    coords = {k: variables.pop(k) for k in list(sample.coords)}
    template = xr.Dataset(variables, coords=coords, attrs={**sample.attrs, **attrs})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        template.to_zarr(path, mode="w", zarr_format=3, consolidated=False, compute=small, encoding=encoding)


def _unwritten(dtype: np.dtype) -> Any:
    """What a never-written chunk reads as (its fill value): a small template holds it, a lazy one's values
    are never computed."""
    return "" if dtype.kind == "O" else np.nan if dtype.kind == "f" else 0
