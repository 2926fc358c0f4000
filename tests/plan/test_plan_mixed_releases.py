"""Planning a mixed archive (QR2 files, their R7 reprocessings, retried ones, QR3 wide and deep): one image
per (exposure, detector), the newest processing, found the same way from a local mirror and from TAP."""

from __future__ import annotations

import pandas as pd
import pytest

from spxbatch.plan.catalog import read_catalog
from spxbatch.plan.plan import make_plan
from spxbatch.sim.server import serve_archive


@pytest.fixture(scope="module")
def mixed(sim_archive_mixed):
    files = pd.read_csv(sim_archive_mixed.truth["files"])
    return sim_archive_mixed, read_catalog(sim_archive_mixed.catalog), files[files.present & (files.n_sources_on > 0)]


def _relpaths(plan) -> list[str]:
    return sorted(r.split("spherex/", 1)[1] for r in plan.images["relpath"])


def test_local_mirror_plan_keeps_the_newest_processing_of_each_exposure(mixed):
    info, catalog, files = mixed
    plan = make_plan(catalog, str(info.root))
    assert _relpaths(plan) == sorted(files[~files.superseded].relpath)
    assert not plan.images.duplicated(["obs_id", "detector"]).any()
    kept = plan.images.set_index("relpath")
    assert any("l2b_retry-v26-2026-197" in r for r in kept.index)  # the retry is newer than what it retried
    assert {"spherex_qr2", "spherex_qr3", "spherex_qr3_deep"} <= set(plan.images["collection"])


@pytest.mark.slow  # tests/e2e/test_mixed_releases.py plans the same archive over TAP in the default suite
def test_tap_plan_equals_the_mirror_plan(mixed):
    info, catalog, _ = mixed
    with serve_archive(info.root) as srv:
        plan = make_plan(catalog, srv.url)
    assert _relpaths(plan) == _relpaths(make_plan(catalog, str(info.root)))


def test_asking_for_a_release_keeps_only_its_files(mixed):
    info, catalog, files = mixed
    plan = make_plan(catalog, str(info.root), releases=["qr3"])
    assert _relpaths(plan) == sorted(files[~files.superseded & (files.release == "qr3")].relpath)
    plan = make_plan(catalog, str(info.root), releases=["QR2"])
    newest_qr2 = files[files.release == "qr2"].copy()
    assert set(_relpaths(plan)) <= set(newest_qr2.relpath)
    assert not plan.images.duplicated(["obs_id", "detector"]).any()
