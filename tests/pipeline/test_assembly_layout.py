"""The assembly's arithmetic: blocks, batches, offsets and the chunks a region shares with its neighbours."""

import numpy as np

from spxbatch.cube.regions import partial_chunks
from spxbatch.pipeline.assembly.layout import batches_by_size, n_blocks, offsets, sources_per_block


def test_blocks_follow_the_catalog_size():
    assert sources_per_block(30) == 1000 and n_blocks(30, 1000) == 1  # a small catalog is one block
    assert sources_per_block(10**5) == 6250 and n_blocks(10**5, 6250) == 16  # 16 blocks for the workers
    assert sources_per_block(10**6) == 10_000 and n_blocks(10**6, 10_000) == 100
    assert n_blocks(7, 3) == 3


def test_batches_are_consecutive_and_never_empty():
    assert batches_by_size([5, 5, 5, 20, 1], 10) == [range(0, 2), range(2, 3), range(3, 4), range(4, 5)]
    assert batches_by_size([], 10) == []
    assert [i for b in batches_by_size([3] * 10, 7) for i in b] == list(range(10))


def test_offsets_are_exclusive_cumulative_sums():
    assert offsets([3, 0, 2]).tolist() == [0, 3, 3]
    assert offsets(np.array([], dtype=np.int64)).tolist() == []


def test_partial_chunks_are_those_shared_with_other_regions():
    assert partial_chunks(0, 10, 25, 10) == []  # a whole chunk
    assert partial_chunks(5, 25, 25, 10) == [0]  # ends at the array's end: the last chunk is whole
    assert partial_chunks(5, 12, 25, 10) == [0, 1]
    assert partial_chunks(12, 18, 25, 10) == [1]
    assert partial_chunks(7, 7, 25, 10) == []  # nothing written


def test_row_chunks_follow_the_rows_per_region():
    from spxbatch.pipeline.assembly.layout import MAX_ROW_CHUNK, MIN_ROW_CHUNK, row_chunk

    assert row_chunk(10**7, 100) == MAX_ROW_CHUNK  # 10^5 rows per block: the largest chunk
    assert row_chunk(88_000, 16) == 8192  # ~5,500 rows per block
    assert row_chunk(300, 15) == MIN_ROW_CHUNK and row_chunk(0, 0) == MIN_ROW_CHUNK


def test_batch_bytes_make_several_batches_of_a_small_run():
    from spxbatch.pipeline.assembly.layout import BATCH_BYTES, MIN_BATCHES, batch_bytes

    assert len(batches_by_size([2**20] * 80, batch_bytes([2**20] * 80))) == MIN_BATCHES
    assert len(batches_by_size([1000] * 80, batch_bytes([1000] * 80))) == 1  # a small run: one batch
    assert batch_bytes([BATCH_BYTES] * 100) == BATCH_BYTES
