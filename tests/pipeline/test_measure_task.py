"""The measuring task on files of a simulated archive read in place (no server, no cluster): every source of
an image ends as a measurement or a row saying why not, a bad file never raises, and a batch writes one part
per image."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spxbatch.pipeline.config import RunConfig
from spxbatch.pipeline.jobs import ImageJob, image_jobs
from spxbatch.pipeline.measure import link_sharers, measure_batch, measure_image, task_fetch_options
from spxbatch.pipeline.rundir import RunDir
from spxbatch.plan.catalog import read_catalog
from spxbatch.plan.plan import make_plan


@pytest.fixture(scope="module")
def planned(sim_archive):
    catalog = read_catalog(sim_archive.catalog)
    plan = make_plan(catalog, str(sim_archive.root))
    return catalog, plan, list(image_jobs(plan, catalog))


def test_fetch_options_of_a_task_follow_the_archive(sim_archive):
    cfg = RunConfig(retry={"max_attempts": 3})
    local = task_fetch_options(cfg, str(sim_archive.root))
    assert local.file_root == str(sim_archive.root.resolve()) + "/" and local.retry.max_attempts == 3
    assert task_fetch_options(cfg, "http://127.0.0.1:9").file_root is None
    assert local.link_sharers == 1 and task_fetch_options(cfg, "http://127.0.0.1:9", 6).link_sharers == 6


def test_link_sharers_are_the_images_fetched_at_once():
    cfg = RunConfig()  # 4 images per task, 4 in flight
    assert link_sharers(cfg, n_images=8, workers=2) == 8
    assert link_sharers(cfg, n_images=3, workers=2) == 3  # never more than the run's images
    assert link_sharers(cfg, n_images=0, workers=2) == 1
    assert link_sharers(RunConfig(images_per_task=1), n_images=100, workers=3) == 3
    assert link_sharers(RunConfig(fetch_options={"images_in_flight": 2}), n_images=100, workers=2) == 4


def test_every_source_is_measured_where_the_truth_says(planned, sim_archive):
    catalog, _, jobs = planned
    cfg = RunConfig()
    options = task_fetch_options(cfg, str(sim_archive.root))
    truth = pd.read_parquet(sim_archive.truth["measurements"])
    truth = truth[~truth["superseded"]].set_index(["name", "obs_id", "detector"])
    job = max(jobs, key=lambda j: len(j.source_index))
    table, meta = measure_image(job, cfg.fetch, cfg.photometry_config, options)
    assert sorted(table["source_index"]) == sorted(job.source_index)  # each planned source, once
    assert meta["image_id"] == job.image["image_id"] and meta["error"] is None and meta["strategy"] == "local"
    assert meta["measured"] == int(table["measured"].sum()) > 0
    measured = table[table["measured"]]
    for _, row in measured.iterrows():
        t = truth.loc[(catalog.name[row["source_index"]], row["obs_id"], int(row["band"]))]
        assert abs(row["x"] - t["x"]) < 0.01 and abs(row["y"] - t["y"]) < 0.01
    assert set(table.loc[~table["measured"], "status"]) <= {"off_image"}


def test_a_source_off_the_image_and_a_damaged_file_are_rows(planned, sim_archive, tmp_path):
    _, _, jobs = planned
    cfg = RunConfig()
    job = jobs[0]
    off = ImageJob(job.image, np.r_[job.source_index, 999], np.r_[job.ra, job.ra[0] + 5.0], np.r_[job.dec, job.dec[0]])
    table, _ = measure_image(off, cfg.fetch, cfg.photometry_config, task_fetch_options(cfg, str(sim_archive.root)))
    assert table.set_index("source_index").loc[999, "status"] == "off_image"
    damaged = tmp_path / "mirror" / job.image["relpath"].removeprefix("ibe/data/spherex/")
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"SIMPLE  = not a FITS file" * 200)
    mirror = task_fetch_options(cfg, str(tmp_path / "mirror"))
    table, meta = measure_image(job, cfg.fetch, cfg.photometry_config, mirror)
    assert meta["error"] and not table["measured"].any() and len(table) == len(job.source_index)
    assert all(s.startswith("failed: ") for s in table["status"])


def test_a_batch_writes_one_part_per_image(planned, sim_archive, tmp_path):
    _, _, jobs = planned
    rundir = RunDir(tmp_path / "run").create()
    cfg = RunConfig(photometry={"aperture": "fixed", "fixed_radius": 2.0})
    summaries = measure_batch(jobs[:2], str(rundir.path), cfg, str(sim_archive.root))
    assert [s["image_id"] for s in summaries] == [j.image["image_id"] for j in jobs[:2]]
    assert rundir.finished_images() == {int(j.image["image_id"]) for j in jobs[:2]}
    parts = rundir.read_parts()
    assert len(parts) == sum(len(j.source_index) for j in jobs[:2])
    assert np.allclose(parts.loc[parts["measured"], "aperture_radius"], 2.0)  # the config reached the task
    same, _ = measure_image(jobs[0], cfg.fetch, cfg.photometry_config,
                            task_fetch_options(cfg, str(sim_archive.root)))
    assert parts["date_added"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00").all()  # when measured
    pd.testing.assert_frame_equal(parts[parts["image_id"] == jobs[0].image["image_id"]].drop(columns="date_added")
                                  .reset_index(drop=True), same.reset_index(drop=True), check_dtype=False)
