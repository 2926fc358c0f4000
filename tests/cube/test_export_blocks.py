"""The CSV and Parquet exports read a lazily opened cube block of sources by block: their files are the same
whatever the block size, every measurement exported once."""

from __future__ import annotations

import pandas as pd

from spxbatch.cube.export import export_csv, export_parquet, source_blocks
from spxbatch.cube.store import open_cube


def test_blocks_hold_whole_sources_in_order_and_every_row_once(sim_run):
    ds = open_cube(sim_run)
    blocks = list(source_blocks(ds, max_rows=25))
    assert len(blocks) > 3
    seen = pd.concat([b["source_index"].to_series() for b in blocks], ignore_index=True)
    assert seen.tolist() == ds["source_index"].values.tolist()  # every row once, in the cube's order
    firsts = [int(b["source_index"].values[0]) for b in blocks]
    lasts = [int(b["source_index"].values[-1]) for b in blocks]
    assert all(a < b for a, b in zip(lasts, firsts[1:], strict=False))  # no source split between blocks
    sizes = ds["row_size"].values
    assert all(b.sizes["obs"] <= 25 or len(set(b["source_index"].values)) == 1 for b in blocks)
    assert all(b.sizes["obs"] == sizes[sorted(set(b["source_index"].values))].sum() for b in blocks)


def test_exports_are_the_same_in_small_blocks_and_in_one(sim_run, tmp_path):
    ds = open_cube(sim_run)
    whole = export_csv(ds.load(), tmp_path / "one", block_rows=10**9)
    small = export_csv(ds, tmp_path / "many", block_rows=25)
    assert [p.name for p in whole] == [p.name for p in small]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(whole, small, strict=True))
    assert (tmp_path / "one" / "sources.csv").read_bytes() == (tmp_path / "many" / "sources.csv").read_bytes()
    one = pd.read_parquet(export_parquet(ds.load(), tmp_path / "one.parquet", block_rows=10**9))
    many = pd.read_parquet(export_parquet(ds, tmp_path / "many.parquet", block_rows=25))
    pd.testing.assert_frame_equal(one, many)
    assert len(many) == ds.sizes["obs"]
