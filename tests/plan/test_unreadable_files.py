"""Files of a local mirror that cannot be read stay in the plan, placed on the sky by another file of their
exposure, so that their measurements end as recorded failures; what nothing places is reported."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from spxbatch.plan.catalog import read_catalog
from spxbatch.plan.plan import make_plan
from spxbatch.sim import make_archive
from spxbatch.sim.variants import damage


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    info = make_archive(tmp_path_factory.mktemp("damaged"), npix=64, seed=11, n_visits=6)
    return info, damage(info)


def test_unreadable_files_are_planned_in_place_of_nothing(damaged):
    info, hurt = damaged
    plan = make_plan(read_catalog(info.catalog), str(info.root))
    planned = {r.split("spherex/", 1)[1] for r in plan.images["relpath"]}
    files = pd.read_csv(info.truth["files"])
    newest = set(files[files.present & ~files.superseded & (files.n_sources_on > 0)].relpath)
    unplaced = {r for r, _ in plan.meta["unreadable_unplaced"]}
    assert newest - unplaced <= planned  # garbage, empty, truncated ...: planned, or reported
    present = files[files.present & ~files.relpath.isin(hurt.relpath)]
    for r in hurt.itertuples():
        row = plan.images[plan.images.relpath.str.endswith(r.relpath)]
        if r.relpath in unplaced:  # only when no readable file of its exposure sees the same sky
            partner = {1: 4, 2: 5, 3: 6, 4: 1, 5: 2, 6: 3}[r.detector]
            assert not (present.obs_id.eq(r.obs_id) & present.detector.isin([r.detector, partner])).any()
            continue
        assert len(row) == 1 and row.iloc[0]["obs_id"] == r.obs_id and int(row.iloc[0]["detector"]) == r.detector
    assert len(unplaced) < len(hurt)


def test_a_lone_unreadable_file_is_reported(damaged, tmp_path):
    info, hurt = damaged
    garbage = hurt[hurt.kind == "garbage"].iloc[0]
    lone = tmp_path / "lone"
    shutil.copytree(info.root / garbage.relpath.rsplit("/", 3)[0], lone / garbage.relpath.rsplit("/", 3)[0],
                    ignore=lambda d, names: [n for n in names if n.endswith(".fits") and n not in garbage.relpath])
    plan = make_plan(read_catalog(info.catalog), str(lone))
    assert [r for r, _ in plan.meta["unreadable_unplaced"]] == [garbage.relpath]


def test_a_run_records_each_unreadable_files_sources_as_failures(damaged, tmp_path):
    from spxbatch.cube.store import open_cube
    from spxbatch.pipeline.executor import SerialExecutor
    from spxbatch.pipeline.stages import run

    info, hurt = damaged
    out = tmp_path / "cube.zarr"
    run(info.catalog, out, archive=str(info.root), progress=False, executor=SerialExecutor())
    cube = open_cube(out).load()
    plan_dir = tmp_path / "cube.run"
    planned = pd.read_parquet(plan_dir / "plan" / "images.parquet")
    failed = set(zip(cube["failure_obs_id"].values.astype(str), cube["failure_band"].values.astype(int),
                     strict=True))
    measured = set(zip(cube["obs_id"].values.astype(str), cube["band"].values.astype(int), strict=True))
    for r in hurt.itertuples():
        if not planned.relpath.str.endswith(r.relpath).any():
            continue
        assert (r.obs_id, r.detector) in failed and (r.obs_id, r.detector) not in measured, r.kind
    reasons = cube["failure_reason"].values.astype(str)
    assert all(reason.startswith("failed") for reason in reasons)


def test_over_http_each_unreadable_file_fails_its_image(damaged, tmp_path):
    """TAP lists a damaged file as IRSA lists any file: planned, it fails with its reason, and its sources
    are failure rows, whatever kind of damage it has."""
    from spxbatch.cube.store import open_cube
    from spxbatch.pipeline.executor import SerialExecutor
    from spxbatch.pipeline.stages import run
    from spxbatch.sim.server import serve_archive

    info, hurt = damaged
    out = tmp_path / "http.zarr"
    with serve_archive(info.root, index=pd.read_parquet(info.truth["served_index"])) as srv:
        run(info.catalog, out, archive=srv.url, progress=False, executor=SerialExecutor())
    cube = open_cube(out).load()
    failed = set(zip(cube["failure_obs_id"].values.astype(str), cube["failure_band"].values.astype(int),
                     strict=True))
    measured = set(zip(cube["obs_id"].values.astype(str), cube["band"].values.astype(int), strict=True))
    planned = pd.read_parquet(tmp_path / "http.run" / "plan" / "images.parquet")
    for r in hurt.itertuples():
        assert planned.relpath.str.endswith(r.relpath).any(), r.kind
        assert (r.obs_id, r.detector) in failed and (r.obs_id, r.detector) not in measured, r.kind
