"""Jobs from the plan, built once: one per planned image with its sources' positions, for measuring (minus
what is done, pointed at staged cutouts) and for staging (plus the calibration products)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spxbatch.fetch.options import FetchOptions
from spxbatch.level2.naming import CALIBRATION_PRODUCTS
from spxbatch.pipeline.jobs import image_jobs, use_staged_cutouts
from spxbatch.pipeline.stage import calibration_jobs, stage_jobs
from spxbatch.plan import pairs as pairs_module
from spxbatch.plan.catalog import make_catalog
from spxbatch.plan.plan import Plan

ROOT = "ibe/data/spherex/qr2/level2/2025W18_2B/l2b-v20-2025-253"


def _plan() -> Plan:
    images = pd.DataFrame({
        "image_id": [0, 1, 2],
        "relpath": [f"{ROOT}/{d}/level2_{i}_D{d}.fits" for i, d in ((0, 1), (1, 2), (2, 1))],
        "url": [f"http://h/{i}" for i in range(3)],
        "obs_id": ["a", "a", "b"], "detector": [1, 2, 1], "release": ["qr2", "qr2", ""]})
    pairs = pd.DataFrame({"source_index": [0, 2, 1, 2, 3], "image_id": [0, 0, 1, 1, 2]})  # sorted, as planned
    return Plan(images, pairs, {})


CATALOG = make_catalog([10.0, 10.1, 10.2, 10.3], [5.0, 5.1, 5.2, 5.3], name=["p", "q", "r", "s"])


def test_one_job_per_image_with_its_sources():
    jobs = list(image_jobs(_plan(), CATALOG))
    assert [j.image["image_id"] for j in jobs] == [0, 1, 2]
    assert [j.source_index.tolist() for j in jobs] == [[0, 2], [1, 2], [3]]
    assert jobs[1].image["url"] == "http://h/1" and jobs[1].image["detector"] == 2
    for job in jobs:
        assert job.source_index.dtype == np.int64
        np.testing.assert_array_equal(job.ra, CATALOG.ra[job.source_index])
        np.testing.assert_array_equal(job.dec, CATALOG.dec[job.source_index])


def test_finished_images_are_skipped():
    assert [j.image["image_id"] for j in image_jobs(_plan(), CATALOG, skip={0, 2})] == [1]


def test_jobs_of_a_saved_plan_are_made_one_partition_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(pairs_module, "PARTITION_PAIRS", 2)  # images 0, 1, 2 in partitions of their own
    _plan().save(tmp_path)
    plan = Plan.load(tmp_path)
    assert [(p["first_image"], p["pairs"]) for p in plan.meta["partitions"]] == [(0, 2), (1, 2), (2, 1)]
    jobs = image_jobs(plan, CATALOG)
    first = next(jobs)
    # the last partition is read only when its jobs are asked for: gone now, the first two still come
    (plan.folder / plan.meta["pairs_dir"] / plan.meta["partitions"][2]["file"]).unlink()
    assert [first.image["image_id"], next(jobs).image["image_id"]] == [0, 1]
    assert first.source_index.tolist() == [0, 2] and plan.paired_images == 3
    with pytest.raises(FileNotFoundError):
        next(jobs)


def test_staged_cutouts_redirect_their_images():
    jobs = list(image_jobs(_plan(), CATALOG))
    short = jobs[2].image["relpath"].removeprefix("ibe/data/spherex/")
    assert list(use_staged_cutouts(jobs, {short: {"cutouts": ["x_cut000.fits"], "ny": 2040, "nx": 2040}})) == jobs
    assert jobs[2].image["cutouts"] == ["x_cut000.fits"] and jobs[2].image["ny"] == 2040
    assert "cutouts" not in jobs[0].image and "cutouts" not in jobs[1].image


def test_staging_jobs_are_the_image_jobs_then_calibration():
    plan = _plan()
    jobs = list(image_jobs(plan, CATALOG))
    work = list(stage_jobs(jobs, calibration_jobs(plan)))
    images = [w for w in work if w.kind == "image"]
    assert [w.image for w in images] == [j.image for j in jobs]
    assert all(np.array_equal(w.ra, j.ra) for w, j in zip(images, jobs, strict=True))
    calib = [w for w in work if w.kind == "calibration"]
    # one per product of detectors 1 and 2 of qr2 (an empty release is qr2), each carried by an image of its pair
    assert sorted((w.image["product"], int(w.image["detector"])) for w in calib) == sorted(
        (p, d) for p in CALIBRATION_PRODUCTS for d in (1, 2))
    assert all(w.image["release"] == "qr2" and w.image["product_release"] is None and w.ra.size == 0 for w in calib)
    qr3 = list(stage_jobs(jobs, calibration_jobs(plan, FetchOptions(psf_source="epsf", l3_flux_correction=True))))
    extra = {(w.image["product"], w.image["product_release"]) for w in qr3 if w.kind == "calibration"}
    assert {("epsf", "qr3"), ("l3_flux_corrections", "qr3")} <= extra


def test_staging_jobs_are_made_as_they_are_taken():
    """Staging takes image jobs one by one as its waves open: the client never lists the run's jobs whole."""
    plan = _plan()
    taken = []

    def jobs():
        for job in image_jobs(plan, CATALOG):
            taken.append(job)
            yield job

    work = stage_jobs(jobs(), calibration_jobs(plan))
    first = next(work)
    assert len(taken) == 1 and first.image == taken[0].image
    assert len(list(work)) == plan.paired_images - 1 + len(calibration_jobs(plan))
