"""The map side of the assembly (runs on a worker): one batch of image-major parts read once and split by
source block into spill files, so that each block later reads only its own rows.

Spill layout (below the run directory's assembly/spill/)::

    block_000012/obs_000003.parquet    batch 3's measured rows of sources in block 12, in part order
    block_000012/fail_000003.parquet   batch 3's failure rows of those sources (for their status)
    failures/batch_000003.parquet      batch 3's failure rows, in part order (the cube's failure table)

Every file of a batch is rewritten whole when the batch is redone, so a batch killed half-way leaves nothing
that a redo does not replace; the batch counts only once its marker is written (driver).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from spxbatch.pipeline.assembly.parts import split_parts
from spxbatch.pipeline.rundir import conform_part


def block_dir(spill: str | Path, block: int) -> Path:
    """The spill folder of one source block."""
    return Path(spill) / f"block_{block:06d}"


def failure_file(spill: str | Path, batch: int) -> Path:
    """The spill file of one batch's failure rows."""
    return Path(spill) / "failures" / f"batch_{batch:06d}.parquet"


def _write(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


def _split_by_block(frame: pd.DataFrame, per_block: int) -> dict[int, pd.DataFrame]:
    """The rows of each source block, part order kept inside a block (a stable sort by block)."""
    block = frame["source_index"].to_numpy(np.int64) // per_block
    order = np.argsort(block, kind="stable")
    ordered = block[order]
    out = {}
    for b in np.unique(ordered):
        lo, hi = np.searchsorted(ordered, [b, b + 1])
        out[int(b)] = frame.iloc[order[lo:hi]]
    return out


def shuffle_batch(paths: list[str], batch: int, urls: dict[int, str], spill: str, per_block: int,
                  blocks: int) -> dict[str, list[int] | int]:
    """Read the parts `paths` (in PART_SCHEMA), split their rows into measurements and failures, and write
    them per source block; returns the batch's measured rows per block and its failure rows."""
    table = pa.concat_tables([conform_part(pq.read_table(p)) for p in paths])
    m, failures = split_parts(table.to_pandas(), pd.Series(urls, dtype=object))
    del table
    rows = np.zeros(blocks, dtype=np.int64)
    for b, piece in _split_by_block(m, per_block).items():
        rows[b] = len(piece)
        _write(piece, block_dir(spill, b) / f"obs_{batch:06d}.parquet")
    for b, piece in _split_by_block(failures, per_block).items():
        _write(piece, block_dir(spill, b) / f"fail_{batch:06d}.parquet")
    _write(failures, failure_file(spill, batch))
    return {"obs": rows.tolist(), "failures": len(failures)}
