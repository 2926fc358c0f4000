"""Readers of a cube larger than memory go block of sources by block: `qc` (requalify), the VOTable export, the
run summary and the time span of the figures give the same answers in small blocks as in one, and `qc` never
changes the cube it reads when it writes another."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table
from cubes import assert_cubes_equal

from spxbatch.cube.assemble import assemble_cube
from spxbatch.cube.blocks import source_ranges
from spxbatch.cube.export import export_votable
from spxbatch.cube.requalify import requalify
from spxbatch.cube.store import open_cube, write_cube
from spxbatch.figures.batch import row_blocks
from spxbatch.figures.plots import longest_time_span
from spxbatch.figures.summary import run_summary
from spxbatch.photometry.config import photometry_config
from spxbatch.photometry.quality import good_verdict

#: Rules that change the verdict of the simulated run's measurements (its own threshold is 5).
RULES = {"snr_threshold": 30.0, "bad_flags": ["HOT", "COLD", "NONFUNC"]}
#: Requalified variables: the verdict and everything computed from it.
RECOMPUTED = ("good", "spectrum_flux", "spectrum_err", "spectrum_nobs", "var_mean_flux", "var_mean_err",
              "var_chi2_red", "var_amplitude", "var_ngood", "source_releases")


@pytest.fixture(scope="module")
def chunked(sim_run, tmp_path_factory):
    """The simulated run's cube rewritten in small chunks (16 rows, 8 sources), so blocks share chunks."""
    path = tmp_path_factory.mktemp("chunked") / "cube.zarr"
    write_cube(open_cube(sim_run).load(), path, obs_chunk=16, source_chunk=8)
    return path


@pytest.fixture(scope="module")
def requalified(chunked, tmp_path_factory):
    """The chunked cube requalified by RULES in blocks of at most 60 rows (several blocks), and its files'
    digests before: (the requalified cube, digests of the cube read, before and after)."""
    before = _digest(chunked)
    out = requalify(chunked, RULES, tmp_path_factory.mktemp("qc") / "small.zarr", block_rows=60).load()
    return out, before, _digest(chunked)


def _digest(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_source_ranges_cover_every_source_once_within_the_row_budget(chunked):
    ds = open_cube(chunked)
    size = ds["row_size"].values
    ranges = list(source_ranges(ds, max_rows=20, align=8))
    assert [r.first for r in ranges] == [0, *[r.stop for r in ranges[:-1]]] and ranges[-1].stop == ds.sizes["source"]
    start = ds["obs_start"].values
    for first, stop, o0, o1 in ranges:
        assert o0 == start[first] and o1 - o0 == size[first:stop].sum()
        assert o1 - o0 <= 20 or stop - first == 1
        assert stop - first < 8 or (stop - first) % 8 == 0 or stop == ds.sizes["source"]


def test_qc_in_blocks_equals_the_rules_applied_to_the_whole_cube(chunked, requalified, tmp_path):
    small, before, after = requalified
    whole = requalify(chunked, RULES, tmp_path / "whole.zarr", block_rows=10**9).load()
    assert after == before  # the cube read is untouched (its chunks are shared by hard links)
    assert_cubes_equal(small, whole)
    cube = open_cube(chunked).load()
    config = photometry_config({**json.loads(cube.attrs["config"])["photometry"], **RULES})
    obs = [v for v in cube.data_vars if cube[v].dims == ("obs",)]
    m = cube[obs].to_dataframe().reset_index(drop=True)
    m["good"] = good_verdict({**{c: m[c].to_numpy() for c in m}, "measured": np.ones(len(m), bool)}, config)
    reference = assemble_cube(cube["source"].values, cube["ra"].values, cube["dec"].values, m)
    assert 0 < small["good"].sum() < cube["good"].sum()  # the rules did change verdicts
    for name in RECOMPUTED:
        a, b = small[name].values, reference[name].values
        assert a.tolist() == b.tolist() if a.dtype.kind not in "f" else np.array_equal(a, b, equal_nan=True), name
    unchanged = [v for v in cube.variables if v not in RECOMPUTED]
    assert_cubes_equal(small[unchanged], cube[unchanged])
    assert json.loads(small.attrs["quality_rules"])["snr_threshold"] == 30.0


def test_qc_in_place_replaces_the_cube_with_the_requalified_one(chunked, requalified, tmp_path):
    cube = tmp_path / "cube.zarr"
    shutil.copytree(chunked, cube)
    requalify(cube, RULES, block_rows=60)
    assert_cubes_equal(open_cube(cube).load(), requalified[0])
    assert [p.name for p in tmp_path.iterdir()] == ["cube.zarr"]  # no temporary left


def test_votable_in_blocks_is_the_same_file_as_in_one(chunked, tmp_path):
    ds = open_cube(chunked)
    one = export_votable(ds.load(), tmp_path / "one.xml", block_rows=10**9)
    many = export_votable(ds, tmp_path / "many.xml", block_rows=20)
    assert one.read_bytes() == many.read_bytes()
    table = Table.read(many, format="votable")
    assert len(table) == ds.sizes["obs"]
    np.testing.assert_array_equal(table["flux"], ds["flux"].values)
    assert table["source"].tolist() == ds["source"].values[ds["source_index"].values].astype(str).tolist()


def test_votable_of_a_cube_without_measurements_has_its_fields_and_no_row(tmp_path):
    empty = assemble_cube(np.array(["a", "b"]), np.zeros(2), np.zeros(2), pd.DataFrame())
    table = Table.read(export_votable(empty, tmp_path / "empty.xml"), format="votable")
    assert len(table) == 0 and {"lambda", "flux", "flux_err", "mjd", "good"} <= set(table.colnames)


def test_summary_and_time_span_in_blocks_equal_the_whole_cube(chunked):
    ds = open_cube(chunked)
    loaded = ds.load()
    small, whole = run_summary(ds, block_rows=20), run_summary(loaded, block_rows=10**9)
    for field in ("ra", "dec", "row_size", "band_all", "band_good", "snr_counts"):
        np.testing.assert_array_equal(getattr(small, field), getattr(whole, field), err_msg=field)
    assert small.status == whole.status and sum(small.status.values()) == ds.sizes["source"]
    assert small.band_all.sum() == ds.sizes["obs"] == small.n_obs
    start, size, mjd = loaded["obs_start"].values, loaded["row_size"].values, loaded["mjd"].values
    naive = max(mjd[s:s + n].max() - mjd[s:s + n].min() for s, n in zip(start, size, strict=True) if n)
    assert longest_time_span(ds, block_rows=20) == longest_time_span(loaded, block_rows=10**9) == naive


def test_figure_blocks_of_a_selection_read_only_near_rows():
    rows = np.array([0, 1, 2, 3, 1000, 1001, 50_000])
    blocks = row_blocks(rows, 3)
    assert [b.tolist() for b in blocks] == [[0, 1, 2], [3], [1000, 1001], [50_000]]
    assert np.concatenate(blocks).tolist() == rows.tolist()
