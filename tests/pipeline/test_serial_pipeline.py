"""`Pipeline` stage by stage on a local mirror with the serial executor: no server, no cluster. Every planned
(source, image) pair ends in the cube or its failure table, a rerun does nothing again, the config the cube
records reads back, and a run directory made before the typed config still resumes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from spxbatch.archive.errors import ArchiveUnreachable
from spxbatch.cube.store import open_cube
from spxbatch.errors import ConfigError, StageError
from spxbatch.pipeline.config import RunConfig, config_from_dict
from spxbatch.pipeline.executor import SerialExecutor
from spxbatch.pipeline.reachability import check_archive_reachable
from spxbatch.pipeline.stages import Pipeline, run
from spxbatch.plan.plan import Plan


@pytest.fixture(scope="module")
def serial_run(sim_archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "cube.zarr"
    pipe = Pipeline(RunConfig(catalog=str(sim_archive.catalog), output=str(out), archive=str(sim_archive.root),
                              progress=False, images_per_task=3))
    pipe.plan()
    totals = pipe.measure(SerialExecutor())
    ds = pipe.assemble()
    return pipe, totals, ds


def test_every_planned_pair_is_in_the_cube(serial_run, sim_archive):
    pipe, totals, ds = serial_run
    plan = Plan.load(pipe.rundir.path)
    assert totals["images"] == plan.pairs["image_id"].nunique() and totals["failed_images"] == 0
    assert pipe.rundir.stage_done("measure") and pipe.rundir.stage_done("assemble")
    assert ds.sizes["obs"] + ds.sizes["failure"] == len(plan.pairs) and ds.sizes["obs"] == totals["measured"]
    truth = pd.read_parquet(sim_archive.truth["measurements"])
    truth = truth[~truth["superseded"]].set_index(["name", "obs_id", "detector"])
    names = ds["source"].values[ds["source_index"].values]
    for name, obs_id, band, x in zip(names, ds["obs_id"].values, ds["band"].values, ds["x"].values, strict=True):
        assert abs(x - truth.loc[(name, obs_id, int(band)), "x"]) < 0.01


def test_rerun_measures_nothing_again(serial_run):
    pipe, _, _ = serial_run
    again = Pipeline(pipe.config).measure(SerialExecutor())
    assert again["images"] == 0


def test_the_cube_records_a_config_that_reads_back(serial_run):
    pipe = serial_run[0]
    cfg = config_from_dict(json.loads(open_cube(pipe.config.output).attrs["config"]))
    assert cfg == pipe.config and cfg.archive == pipe.config.archive
    assert Pipeline.from_run_dir(pipe.rundir.path, progress=True).config.progress is True


def test_python_api_with_the_serial_executor_equals_stage_by_stage(serial_run, sim_archive, tmp_path):
    _, _, ds = serial_run
    other = run(sim_archive.catalog, tmp_path / "api.zarr", archive=str(sim_archive.root), progress=False,
                executor=SerialExecutor(), images_per_task=1)
    for name in ("flux", "flux_err", "wavelength", "mjd", "x", "y", "good", "condition", "spectrum_flux"):
        np.testing.assert_array_equal(other[name].values, ds[name].values, err_msg=name)


def test_an_old_run_directory_resumes_and_refuses_other_options(sim_archive, tmp_path, monkeypatch):
    """A run directory whose config.json has the flat layout of earlier versions: same options resume (the
    catalog also when named by a relative path), a changed fixed option is refused before any work."""
    flat = {"archive": str(sim_archive.root), "bands": [], "catalog": str(sim_archive.catalog),
            "cluster": {"workers": None, "job_extra": []}, "collections": [], "dec_col": None, "fetch": "auto",
            "fetch_attempts": 5, "fetch_backoff_s": 0.5, "images_per_task": 4, "name_col": None,
            "output": str(tmp_path / "old.zarr"), "photometry": {}, "progress": False, "ra_col": None,
            "releases": [], "run_dir": str(tmp_path / "old.run"), "tap_url": None, "task_retries": 2,
            "time_range": []}
    (tmp_path / "old.run").mkdir()
    (tmp_path / "old.run" / "config.json").write_text(json.dumps(flat))
    resumed = Pipeline(config_from_dict(flat))
    resumed.plan()  # same options: accepted
    monkeypatch.chdir(sim_archive.catalog.parent)  # the same catalog named relative to the working directory
    Pipeline(config_from_dict({**flat, "catalog": sim_archive.catalog.name})).plan()
    with pytest.raises(ConfigError, match=r"made with other options \(bands: \[\] -> \[1\]\)"):
        Pipeline(config_from_dict(flat).updated({"bands": [1]})).plan()
    with pytest.raises(StageError, match="not a spxbatch run directory"):
        Pipeline.from_run_dir(tmp_path)


def test_reachability_check_on_the_serial_executor(sim_archive, tmp_path):
    check_archive_reachable(SerialExecutor(), str(sim_archive.root))
    with pytest.raises(ArchiveUnreachable, match="cannot see the local mirror"):
        check_archive_reachable(SerialExecutor(), str(sim_archive.root), str(tmp_path / "no" / "x.fits"))


def test_stage_then_measure_from_the_mirror_serially(serial_run, sim_archive, tmp_path):
    _, _, ds = serial_run
    out = tmp_path / "staged.zarr"
    options = {"archive": str(sim_archive.root), "progress": False, "fetch": "whole", "executor": SerialExecutor()}
    assert run(sim_archive.catalog, out, stages="plan,stage", mirror=tmp_path / "mirror", **options) is None
    pipe = Pipeline.from_run_dir(tmp_path / "staged.run")
    assert pipe.rundir.stage_done("stage") and pipe.read_archive() == str((tmp_path / "mirror").resolve())
    staged = json.loads((tmp_path / "mirror" / "spxbatch-manifest.json").read_text())
    plan = Plan.load(pipe.rundir.path)
    assert {e["kind"] for e in staged["files"].values()} >= {"image"}
    assert sum(e["kind"] == "image" for e in staged["files"].values()) == len(plan.images)
    cube = run(sim_archive.catalog, out, stages="measure,assemble", **options)
    for name in ("flux", "flux_err", "wavelength", "x", "y", "good"):
        np.testing.assert_array_equal(cube[name].values, ds[name].values, err_msg=name)
