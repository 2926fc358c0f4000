"""The pure arithmetic of the assembly: source blocks, batches of parts, offsets of each block's rows in the
cube, and which chunks a region only partly covers."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: At most this many sources per block (and per `source` chunk: 10^4 spectra of 102 channels, ~8 MB).
MAX_SOURCES_PER_BLOCK = 10_000
#: At least this many sources per block: a small catalog is one block (a task's fixed cost is a large part
#: of a small block's).
MIN_SOURCES_PER_BLOCK = 1_000
#: At least this many blocks beyond that, so that every worker has blocks to do.
MIN_BLOCKS = 16
#: Rows per `obs` (and `failure`) chunk at most: one source's rows fall in one chunk unless they straddle a
#: boundary, and a chunk of one float variable is 256 kB, so reading one source decodes 256 kB per variable
#: (at 131,072 rows, the string variables' decoding alone made one source of a 10^6-source cube 0.4 s).
#: 10^8 measurements are then ~3,000 chunks a variable.
MAX_ROW_CHUNK = 32_768
#: Rows per chunk at least (small runs: a few chunk files per variable, not one per block).
MIN_ROW_CHUNK = 4_096
#: Part bytes (Parquet, on disk) per shuffle task at most: ~10^6 rows, a few hundred MB in a worker's memory.
BATCH_BYTES = 64 * 2**20
#: At least this many shuffle tasks when the parts allow it (so that both workers shuffle a run)...
MIN_BATCHES = 8
#: ... of at least this many part bytes each (a small run is one batch).
MIN_BATCH_BYTES = 8 * 2**20


def sources_per_block(n_sources: int) -> int:
    """Sources per block for a catalog of `n_sources`: MIN_BLOCKS blocks or more, between MIN_SOURCES_PER_BLOCK
    and MAX_SOURCES_PER_BLOCK sources in each (a smaller catalog is one block)."""
    return max(1, min(MAX_SOURCES_PER_BLOCK, max(MIN_SOURCES_PER_BLOCK, math.ceil(n_sources / MIN_BLOCKS))))


def n_blocks(n_sources: int, per_block: int) -> int:
    """Blocks of `per_block` consecutive sources covering the catalog (the last may be shorter)."""
    return max(1, math.ceil(n_sources / per_block))


def row_chunk(rows: int, pieces: int) -> int:
    """Rows per chunk of a dimension of `rows` written in `pieces` regions (blocks or batches): about one
    region's rows (a power of two), so that a region shares at most its two end chunks with its neighbours,
    within [MIN_ROW_CHUNK, MAX_ROW_CHUNK]."""
    per_piece = max(1, -(-rows // max(1, pieces)))
    return min(MAX_ROW_CHUNK, max(MIN_ROW_CHUNK, 1 << (per_piece - 1).bit_length()))


def batch_bytes(sizes: Sequence[int], most: int = BATCH_BYTES) -> int:
    """Part bytes per shuffle task: MIN_BATCHES tasks or more, between MIN_BATCH_BYTES and `most` in each."""
    return max(1, min(most, max(MIN_BATCH_BYTES, -(-sum(sizes) // MIN_BATCHES))))


def batches_by_size(sizes: Sequence[int], target_bytes: int) -> list[range]:
    """Consecutive runs of parts (their indices) of about `target_bytes` each, at least one part per run."""
    out: list[range] = []
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size > target_bytes:
            out.append(range(start, i))
            start, total = i, 0
        total += size
    if start < len(sizes):
        out.append(range(start, len(sizes)))
    return out


def offsets(counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """Where each consecutive group of rows starts: the exclusive cumulative sum of `counts` (int64)."""
    counts = np.asarray(counts, dtype=np.int64)
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if len(counts) else counts
