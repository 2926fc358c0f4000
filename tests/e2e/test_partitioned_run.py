"""The plan partitioned on disk (`spxbatch.plan.pairs`), forced small on the test archive (30 sources, 14 images,
389 pairs): matched a few catalog rows at a time into partitions of two images, it equals the plan made whole,
a run over those partitions on a LocalCluster gives the cube of the serial whole-plan run, and a run killed
mid-measure resumes to that cube."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from cubes import assert_cubes_equal, kill_group
from waits import wait_until

from spxbatch.cube.store import open_cube
from spxbatch.pipeline.config import ClusterConfig
from spxbatch.pipeline.stages import run
from spxbatch.plan import match as match_module
from spxbatch.plan import pairs as pairs_module
from spxbatch.plan.catalog import read_catalog
from spxbatch.plan.plan import Plan, make_plan
from spxbatch.sim.server import serve_archive

#: Catalog rows matched at once and pairs per partition, forced small: 5 chunks, 7 partitions of 2 images.
SMALL = {"MATCH_SOURCES": 7, "PARTITION_PAIRS": 60}
#: The CLI in a process of its own, with the small partitions.
CLI = ("import sys; from spxbatch.plan import match, pairs; match.MATCH_SOURCES = {MATCH_SOURCES}; "
       "pairs.PARTITION_PAIRS = {PARTITION_PAIRS}; from spxbatch.cli.main import main; sys.exit(main())")


@pytest.fixture
def small_partitions(monkeypatch):
    monkeypatch.setattr(match_module, "MATCH_SOURCES", SMALL["MATCH_SOURCES"])
    monkeypatch.setattr(pairs_module, "PARTITION_PAIRS", SMALL["PARTITION_PAIRS"])


def _plan_in(sim_archive, run_dir) -> Plan:
    return make_plan(read_catalog(sim_archive.catalog), str(sim_archive.root), run_dir=run_dir)


def test_the_partitioned_plan_equals_the_whole_plan(sim_archive, tmp_path, monkeypatch):
    whole = _plan_in(sim_archive, tmp_path / "whole")
    assert len(whole.meta["partitions"]) == 1
    monkeypatch.setattr(match_module, "MATCH_SOURCES", SMALL["MATCH_SOURCES"])
    monkeypatch.setattr(pairs_module, "PARTITION_PAIRS", SMALL["PARTITION_PAIRS"])
    split = _plan_in(sim_archive, tmp_path / "split")
    parts = split.meta["partitions"]
    assert len(parts) == 7 and [p["images"] for p in parts] == [2] * 7
    pd.testing.assert_frame_equal(split.images, whole.images)
    pd.testing.assert_frame_equal(split.pairs, whole.pairs)
    assert split.meta["fingerprint"] == whole.meta["fingerprint"] and split.meta["pairs"] == len(whole.pairs)
    assert split.meta["sources_covered"] == whole.meta["sources_covered"] == whole.pairs["source_index"].nunique()
    for p, frame in zip(parts, split.partitions(), strict=True):  # each file its image range, sorted
        ids = frame["image_id"].to_numpy()
        assert p["first_image"] <= ids.min() and ids.max() < p["end_image"] and len(frame) == p["pairs"] <= 60
        assert np.all(np.diff(ids * 1000 + frame["source_index"].to_numpy()) > 0)
    assert not list((tmp_path / "split" / "plan").glob("*/.spill")) and not list(
        (tmp_path / "split" / "plan").glob("pairs.parquet"))


def test_a_plan_saved_in_the_old_layout_is_made_again(sim_archive, tmp_path):
    first = _plan_in(sim_archive, tmp_path)
    folder = tmp_path / "plan"
    # as format 2 saved it: one pairs file, no partitions
    first.pairs.to_parquet(folder / "pairs.parquet")
    meta = {k: v for k, v in first.meta.items() if k not in ("pairs_dir", "partitions")}
    (folder / "plan.json").write_text(json.dumps({**meta, "format": 2}))
    again = _plan_in(sim_archive, tmp_path)
    pd.testing.assert_frame_equal(again.pairs, first.pairs)
    assert again.meta["format"] == 3 and not (folder / "pairs.parquet").exists()


def test_a_run_over_many_partitions_gives_the_whole_plan_cube(sim_run, sim_archive, tmp_path, small_partitions):
    out = tmp_path / "split.zarr"
    run(sim_archive.catalog, out, archive=str(sim_archive.root), progress=False, images_per_task=3,
        cluster=ClusterConfig(workers=1))
    assert len(Plan.load(tmp_path / "split.run").meta["partitions"]) == 7
    assert_cubes_equal(open_cube(sim_run).load(), open_cube(out).load())


@pytest.mark.slow  # ~40-100 s here (two CLI runs); test_pipeline's default SIGKILL case resumes a one-partition plan
def test_killed_mid_measure_then_resumed_over_many_partitions(sim_run, sim_archive, tmp_path):
    out = tmp_path / "killed.zarr"
    parts = tmp_path / "killed.run" / "parts"
    args = [str(sim_archive.catalog), "-o", str(out), "--workers", "1", "--images-per-task", "1",
            "--no-progress", "--fetch", "range"]
    cli = [sys.executable, "-c", CLI.format(**SMALL)]
    with serve_archive(sim_archive.root, latency=0.15) as srv:
        proc = subprocess.Popen([*cli, *args, "--archive", srv.url], start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_until(lambda: len(list(parts.glob("img_*.parquet"))) >= 5 or proc.poll() is not None,
                   "five parts (the third partition)", 240)
        kill_group(proc)  # asserts the run was still going
        done_first = len(list(parts.glob("img_*.parquet")))
        assert 5 <= done_first < 14 and not out.exists()
        proc = subprocess.Popen([*cli, *args], start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        text, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, text
    assert len(Plan.load(tmp_path / "killed.run").meta["partitions"]) == 7
    assert_cubes_equal(open_cube(sim_run).load(), open_cube(out).load())
