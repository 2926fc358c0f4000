"""The reduce side of the assembly (runs on a worker): one source block's rows gathered from the spill, made
into that block's cube by `assemble_cube` itself (the same sort, spectra, statuses and variability as a whole
run in memory), and written into the block's regions; and one batch's failure rows written into theirs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import xarray as xr

from spxbatch.cube.assemble import assemble_cube, failure_variables
from spxbatch.cube.regions import write_region
from spxbatch.pipeline.assembly.parts import empty_failures
from spxbatch.pipeline.assembly.shuffle import block_dir, failure_file


@dataclass(frozen=True)
class BlockJob:
    """One source block: sources [start, start + len(names)) and their rows from `obs_start` in the cube."""

    block: int
    start: int
    obs_start: int
    names: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    planned: np.ndarray


@dataclass(frozen=True)
class StoreLayout:
    """Where the cube is written and the sizes and chunks of its region dimensions."""

    path: str
    spill: str
    sizes: dict[str, int]
    chunks: dict[str, int]


def _read_spill(folder: Path, kind: str) -> pd.DataFrame | None:
    """One block's spill files of `kind` ('obs' or 'fail') concatenated in batch order, or None."""
    files = sorted(folder.glob(f"{kind}_*.parquet"))
    if not files:
        return None
    return pa.concat_tables([pq.read_table(f) for f in files]).to_pandas()


def block_cube(job: BlockJob, spill: str) -> xr.Dataset:
    """The cube of one block's sources, with `source_index` and `obs_start` counted in the whole cube."""
    folder = block_dir(spill, job.block)
    m = _read_spill(folder, "obs")
    failures = _read_spill(folder, "fail")
    m = pd.DataFrame() if m is None else m.assign(source_index=m["source_index"] - job.start)
    failures = empty_failures() if failures is None else failures.assign(
        source_index=failures["source_index"] - job.start)
    ds = assemble_cube(job.names, job.ra, job.dec, m, failures, job.planned)
    return ds.assign(source_index=ds["source_index"] + job.start, obs_start=ds["obs_start"] + job.obs_start)


def sample_cube(spill: str, block: int | None) -> xr.Dataset:
    """A one-source cube of the run's schema (the store's template): the first source of `block` with its
    rows, or, when nothing was measured (None), a source without rows."""
    m = pd.DataFrame()
    if block is not None:
        m = pq.read_table(sorted(block_dir(spill, block).glob("obs_*.parquet"))[0]).to_pandas()
        m = m[m["source_index"] == m["source_index"].iloc[0]].assign(source_index=0)
    return assemble_cube(np.array(["sample"], dtype=object), np.zeros(1), np.zeros(1), m, empty_failures(),
                         np.ones(1, dtype=bool))


def write_block(job: BlockJob, layout: StoreLayout) -> int:
    """Assemble one block and write its per-source variables and its rows; returns its row count."""
    ds = block_cube(job, layout.spill)
    per_source = [v for v in ds.data_vars if ds[v].dims and ds[v].dims[0] == "source"]
    obs = [v for v in ds.data_vars if ds[v].dims == ("obs",)]
    for dim, names, start in (("source", per_source, job.start), ("obs", obs, job.obs_start)):
        part = ds[names]
        part = part.drop_vars(list(part.coords))
        write_region(layout.path, part, dim, start, layout.chunks[dim], layout.sizes[dim])
    return int(ds.sizes["obs"])


def write_failures(batch: int, start: int, layout: StoreLayout) -> int:
    """Write one batch's failure rows into rows [start, ...) of the failure table; returns their count."""
    failures = pd.read_parquet(failure_file(layout.spill, batch))
    ds = xr.Dataset(failure_variables(failures))
    write_region(layout.path, ds, "failure", start, layout.chunks["failure"], layout.sizes["failure"])
    return len(failures)
