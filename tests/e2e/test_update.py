"""`spxbatch update CUBE` (issue 16) against a simulated archive that grows in steps, as IRSA's does (the server
lists more files at each step: new exposures, then a reprocessing of a measured image), then a catalog that
grows: after each update the cube equals, variable by variable, a fresh run on the grown archive, and the
server's access log shows that no image measured before was fetched again. Also: nothing new (one line, no
image bytes), a dry run (changes nothing), a changed catalog refused, SIGKILL during the plan, the measuring
and the writing of the new cube (the old cube untouched, the rerun equal), and (-m slow) a windowed update,
a local mirror that grows and a cube requalified by `qc`. The swap's own kill points are in
tests/pipeline/test_update_swap.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cubes import assert_cubes_equal, kill_group

from spxbatch.cli.exit_codes import EXIT_INPUT, EXIT_OK
from spxbatch.cli.main import main
from spxbatch.cube.store import open_cube
from spxbatch.level2.naming import version_key
from spxbatch.pipeline.stages import run
from spxbatch.pipeline.update import update_cube
from spxbatch.plan.index import index_directory
from spxbatch.plan.plan import Plan
from spxbatch.sim.server import serve_archive

LEVEL2 = "/level2/"


@pytest.fixture(scope="module")
def steps(sim_archive) -> dict[str, pd.DataFrame]:
    """What the archive lists at each step: 'first' (the first period's exposures, no reprocessing), 'more'
    (plus the last period's exposures), 'reprocessed' (plus the newer processing of a measured image)."""
    idx = index_directory(sim_archive.root)
    key = idx["version"].map(version_key)
    newest = key == key.groupby([idx["obs_id"], idx["detector"]]).transform("max")
    reprocessing = newest & idx.duplicated(["obs_id", "detector"], keep=False)
    late = idx["obs_id"].str[:10] == idx.loc[idx["mjd_start"].idxmax(), "obs_id"][:10]
    assert reprocessing.sum() == 1 and 0 < late.sum() < len(idx) and not (late & reprocessing).any()
    return {"first": idx[~reprocessing & ~late], "more": idx[~reprocessing], "reprocessed": idx}


def _fresh(catalog, out: Path, url: str, client) -> object:
    run(catalog, out, archive=url, progress=False, client=client)
    return open_cube(out).load()


def _level2_paths(srv) -> set[str]:
    return {e["path"] for e in srv.access_log if LEVEL2 in e["path"] and e["method"] == "GET"}


def _files(index: pd.DataFrame) -> set[str]:
    return {f"/ibe/data/spherex/{r}" for r in index["relpath"]}


#: Quick retries (a stalled read is given up after 2 s): the cube's config, so its updates use them too.
RETRY = {"stall_timeout_s": 2.0, "backoff_s": 0.05, "max_backoff_s": 0.1}


def _first_cube(sim_archive, steps, client, out: Path) -> None:
    with serve_archive(sim_archive.root, index=steps["first"]) as srv:
        run(sim_archive.catalog, out, archive=srv.url, progress=False, client=client, retry=RETRY)


def _catalog_with_new_sources(sim_archive, tmp_path: Path, cube: Path) -> Path:
    """The catalog plus two sources: one 2" from the old source on the fewest images (so only the images that
    hold it are measured again) and one off every image."""
    cat = pd.read_csv(sim_archive.catalog)
    pairs = Plan.load(cube.with_suffix(".run")).pairs
    fewest = int(pairs["source_index"].value_counts().sort_values(kind="stable").index[0])
    near = cat.iloc[[fewest, fewest]].assign(name=["new-near", "new-far"])
    near.iloc[0, near.columns.get_loc("dec")] += 2.0 / 3600
    near.iloc[1, near.columns.get_loc("dec")] += 5.0
    big = tmp_path / "bigger.csv"
    pd.concat([cat, near], ignore_index=True).to_csv(big, index=False)
    return big


def test_update_follows_a_growing_archive_and_catalog(sim_archive, steps, client, tmp_path):
    cube = tmp_path / "cube.zarr"
    _first_cube(sim_archive, steps, client, cube)
    first = open_cube(cube).load()
    with serve_archive(sim_archive.root, index=steps["first"]) as srv:
        # new exposures
        srv.set_index(steps["more"])
        srv.clear_log()
        result = update_cube(cube, archive=srv.url, executor=client, progress=False)
        assert result.kinds["new"] == len(steps["more"]) - len(steps["first"]) and result.kinds["superseding"] == 0
        assert _level2_paths(srv) == _files(steps["more"]) - _files(steps["first"])  # nothing measured refetched
        assert_cubes_equal(_fresh(sim_archive.catalog, tmp_path / "f1.zarr", srv.url, client), open_cube(cube).load())
        after_new = open_cube(cube).load()
        kept = after_new["obs_id"].isin(first["obs_id"].values).values
        keys = ["obs_id", "band", "source_index"]
        carried = after_new[[*keys, "date_added"]].to_dataframe()[kept].merge(
            first[[*keys, "date_added"]].to_dataframe(), on=keys, suffixes=("", "_before"))
        assert len(carried) == first.sizes["obs"]
        assert (carried["date_added"] == carried["date_added_before"]).all()  # carried measurements keep their date
        assert min(after_new["date_added"].values[~kept]) >= max(first["date_added"].values)

        # a reprocessing supersedes a measured image
        srv.set_index(steps["reprocessed"])
        srv.clear_log()
        result = update_cube(cube, archive=srv.url, executor=client, progress=False)
        assert result.kinds == {"new": 0, "superseding": 1, "retry": 0, "new_sources": 0,
                                "old": len(steps["more"]) - 1}
        newer = steps["reprocessed"].loc[~steps["reprocessed"].index.isin(steps["more"].index)].iloc[0]
        assert _level2_paths(srv) == {f"/ibe/data/spherex/{newer['relpath']}"}
        fresh = _fresh(sim_archive.catalog, tmp_path / "f2.zarr", srv.url, client)
        ds = open_cube(cube).load()
        assert_cubes_equal(fresh, ds)
        that = (ds["obs_id"].values == newer["obs_id"]) & (ds["band"].values == newer["detector"])
        assert that.any() and set(ds["processing"].values[that]) == {newer["version"]}
        history = json.loads(ds.attrs["update_history"])
        n_new = len(steps["more"]) - len(steps["first"])
        assert [(h["images_added"], h["images_replaced"]) for h in history] == [(n_new, 0), (0, 1)]
        assert history[-1]["archive"] == srv.url and history[-1]["measurements_after"] == ds.sizes["obs"]

        # new catalog sources: measured on every image; old sources again only on the images holding a new one
        big = _catalog_with_new_sources(sim_archive, tmp_path, cube)
        srv.clear_log()
        result = update_cube(cube, archive=srv.url, catalog=big, executor=client, progress=False)
        plan = Plan.load(cube.with_suffix(".run"))
        holding = plan.pairs.loc[plan.pairs["source_index"] >= first.sizes["source"], "image_id"].unique()
        assert result.sources_added == 2 and result.kinds["new_sources"] == len(holding) > 0
        images = plan.images.set_index("image_id")
        assert _level2_paths(srv) == {f"/{r}" for r in images.loc[holding, "relpath"]}
        assert len(holding) < len(images)
        fresh = _fresh(big, tmp_path / "f3.zarr", srv.url, client)
        ds = open_cube(cube).load()
        assert_cubes_equal(fresh, ds)
        assert ds["status"].values[-1] == "no_coverage" and ds["row_size"].values[-2] > 0

        # nothing new
        srv.clear_log()
        result = update_cube(cube, archive=srv.url, catalog=big, executor=client, progress=False)
        assert result.up_to_date and not _level2_paths(srv)
    assert not any(p.name.startswith("cube.zarr.") for p in tmp_path.iterdir())  # nothing left beside the cube
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("cube")) == ["cube.run", "cube.zarr"]


@pytest.fixture(scope="module")
def first_cube(sim_archive, steps, client, tmp_path_factory) -> Path:
    """The cube of the archive's first step (copied by each test that changes it)."""
    out = tmp_path_factory.mktemp("first") / "cube.zarr"
    _first_cube(sim_archive, steps, client, out)
    return out


def _copy(cube: Path, dest: Path) -> Path:
    shutil.copytree(cube, dest / cube.name)
    return dest / cube.name


def test_dry_run_changes_nothing_and_nothing_new_is_one_line(sim_archive, steps, first_cube, client, tmp_path,
                                                              capsys):
    cube = _copy(first_cube, tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with serve_archive(sim_archive.root, index=steps["more"]) as srv:
        args = [str(cube), "--archive", srv.url, "--scheduler", client.scheduler.address, "--no-progress"]
        assert main(["update", *args, "--dry-run"]) == EXIT_OK
        out = capsys.readouterr().out
        n_new = len(steps["more"]) - len(steps["first"])
        assert out.startswith(f"Would fetch {n_new} image(s): {n_new} new, 0 reprocessed") and " MB at most" in out
        listed = {line.strip().removeprefix("new: ") for line in out.splitlines() if line.startswith("  new: ")}
        assert {f"/{r}" for r in listed} == _files(steps["more"]) - _files(steps["first"])  # each image named
        assert not _level2_paths(srv)
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    with serve_archive(sim_archive.root, index=steps["first"]) as srv:
        assert main(["update", *args[:1], "--archive", srv.url, *args[3:]]) == EXIT_OK
        out = capsys.readouterr().out
        assert out.count("\n") == 1 and "is up to date" in out and "nothing fetched" in out
        assert sum(e["bytes"] for e in srv.access_log if LEVEL2 in e["path"]) == 0
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_catalog_whose_rows_changed_is_refused(sim_archive, first_cube, tmp_path, capsys):
    cat = pd.read_csv(sim_archive.catalog)
    cat.loc[4, "ra"] += 1e-4
    edited = tmp_path / "edited.csv"
    pd.concat([cat, cat.iloc[[0]].assign(name="extra")]).to_csv(edited, index=False)
    cube = _copy(first_cube, tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["update", str(cube), "--catalog", str(edited), "--archive", str(sim_archive.root)]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "row 5" in err and cat.loc[4, "name"] in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # refused before any work


def _update_cli(cube: Path, url: str, client) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "spxbatch.cli", "update", str(cube), "--archive", url, "--scheduler",
         client.scheduler.address, "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0, poll: float = 0.05) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "timed out"
        time.sleep(poll)


def test_sigkill_during_plan_measure_and_assembly_then_the_rerun_finishes(sim_archive, steps, first_cube, client,
                                                                          tmp_path):
    """Killed while planning, while measuring and while writing the new cube: each time the old cube is the one
    in place, unchanged; the last rerun finishes, equal to a fresh run, without fetching an image again."""
    cube = _copy(first_cube, tmp_path)
    old = open_cube(cube).load()
    work = tmp_path / "cube.zarr.update-run"
    new_files = sorted(_files(steps["more"]) - _files(steps["first"]))
    with serve_archive(sim_archive.root, index=steps["more"]) as srv:
        # killed while planning (TAP answers nothing)
        srv.set_faults({"stall": 1.0, "stall_s": 8.0, "only": "^/TAP"})
        proc = _update_cli(cube, srv.url, client)
        _wait_for(lambda: (work / "config.json").exists(), proc)
        time.sleep(0.5)
        kill_group(proc)
        assert_cubes_equal(old, open_cube(cube).load())
        assert open_cube(cube).attrs == old.attrs
        # killed while measuring: one new image's file stalls, the others are measured
        stalled = new_files[-1]
        srv.set_faults({"stall": 1.0, "stall_s": 8.0, "only": f"^{stalled}$"})
        proc = _update_cli(cube, srv.url, client)
        _wait_for(lambda: len(_measured_parts(work)) >= 2, proc)
        kill_group(proc)
        assert_cubes_equal(old, open_cube(cube).load())
        done = _measured_parts(work)
        planned = Plan.load(work).images.set_index("image_id")
        # killed while writing the new cube (every image measured)
        srv.set_faults(None)
        srv.clear_log()
        proc = _update_cli(cube, srv.url, client)
        _wait_for(lambda: any(tmp_path.glob(".cube.zarr.new.*.tmp")), proc, poll=0.005)
        kill_group(proc)
        assert_cubes_equal(old, open_cube(cube).load())
        assert len(_measured_parts(work)) == len(new_files)
        # the rerun finishes; no image measured before a kill was fetched again
        proc = _update_cli(cube, srv.url, client)
        assert proc.wait(timeout=300) == EXIT_OK, proc.stdout.read()
        refetched = _level2_paths(srv) & {f"/{r}" for r in planned.loc[done, "relpath"]}
        assert not refetched and len(done) >= 2
        assert_cubes_equal(_fresh(sim_archive.catalog, tmp_path / "f.zarr", srv.url, client), open_cube(cube).load())
    assert not work.exists() and not (tmp_path / "cube.zarr.update.json").exists()


def _measured_parts(work: Path) -> list[int]:
    """Image ids of the parts an update measured (not carried over from the cube) without an error."""
    import pyarrow.parquet as pq

    ids = []
    for path in sorted((work / "parts").glob("img_*.parquet")) if (work / "parts").exists() else []:
        meta = json.loads(pq.read_schema(path).metadata[b"spxbatch"])
        if meta.get("strategy") != "carried" and not meta.get("error"):
            ids.append(int(meta["image_id"]))
    return ids


@pytest.mark.slow
def test_update_from_a_local_mirror_that_grows(sim_archive, steps, client, tmp_path):
    """The same update from a directory (a local mirror) to which the new exposures' files are added."""
    mirror = tmp_path / "mirror"

    def link(index: pd.DataFrame) -> None:
        for rel in [*index["relpath"], *sim_archive.calibration_files]:
            target = mirror / rel
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(sim_archive.root / rel, target)

    link(steps["first"])
    cube = tmp_path / "cube.zarr"
    run(sim_archive.catalog, cube, archive=str(mirror), progress=False, client=client)
    link(steps["more"])
    result = update_cube(cube, executor=client, progress=False)
    assert result.kinds["new"] == len(steps["more"]) - len(steps["first"]) and result.kinds["old"] == len(
        steps["first"])
    fresh = _fresh(sim_archive.catalog, tmp_path / "f.zarr", str(mirror), client)
    assert_cubes_equal(fresh, open_cube(cube).load())
    assert np.array_equal(np.unique(open_cube(cube)["processing"].values), np.unique(fresh["processing"].values))


@pytest.mark.slow
def test_an_update_keeps_the_quality_rules_of_spxbatch_qc(sim_archive, steps, first_cube, client, tmp_path):
    """A cube requalified by `spxbatch qc` is updated under the same rules: equal to a fresh run then qc."""
    from spxbatch.cube.requalify import requalify

    cube = _copy(first_cube, tmp_path)
    rules = {"snr_threshold": 50}
    requalify(cube, rules)
    with serve_archive(sim_archive.root, index=steps["more"]) as srv:
        update_cube(cube, archive=srv.url, executor=client, progress=False)
        run(sim_archive.catalog, tmp_path / "f.zarr", archive=srv.url, progress=False, client=client)
    fresh = requalify(tmp_path / "f.zarr", rules)
    updated = open_cube(cube).load()
    assert_cubes_equal(fresh, updated)
    assert 0 < updated["good"].sum() < open_cube(tmp_path / "f.zarr", dask=False)["detected"].sum()


def _without_ids(ds):
    """A cube with its failure rows in (source, obs_id, band) order and no plan image ids: how a windowed update
    (whose plan numbers the images it did not look at after the others) compares with a fresh run."""
    order = np.lexsort((ds["failure_band"].values, ds["failure_obs_id"].values.astype(str),
                        ds["failure_source_index"].values))
    return ds.isel(failure=order).drop_vars("image_id")


@pytest.mark.slow
def test_a_windowed_update_looks_only_inside_its_window(sim_archive, steps, first_cube, client, tmp_path):
    """--time-range over the last period: its new exposures are measured; the reprocessing of an earlier image
    is not looked at (that image keeps its old processing) and the earlier images are kept from the cube."""
    cube = _copy(first_cube, tmp_path)
    late = steps["more"].loc[~steps["more"].index.isin(steps["first"].index)]
    window = [str(late["mjd_start"].min() - 0.01), str(late["mjd_end"].max() + 0.01)]
    with serve_archive(sim_archive.root, index=steps["reprocessed"]) as srv:
        args = [str(cube), "--archive", srv.url, "--scheduler", client.scheduler.address, "--no-progress"]
        assert main(["update", *args, "--time-range", *window]) == EXIT_OK
        assert _level2_paths(srv) == _files(late)
    with serve_archive(sim_archive.root, index=steps["more"]) as srv:
        fresh = _fresh(sim_archive.catalog, tmp_path / "f.zarr", srv.url, client)
    updated = open_cube(cube).load()
    assert_cubes_equal(_without_ids(fresh), _without_ids(updated))
    history = json.loads(updated.attrs["update_history"])[-1]
    assert history["window_mjd"] == [float(w) for w in window] and history["images_kept"] == len(steps["first"])
    assert json.loads(updated.attrs["config"])["plan"]["time_range"] is None  # the cube's own range is kept
