"""`fetch='cutout'` through the simulator's HTTP server: parts that mix measured and unmeasured rows (whose
integer columns pandas makes float) assemble with the schema's types, and a failed assembly keeps every
measurement: the parts stay, and assembling again (no new measuring) makes the cube."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from spxbatch.pipeline.config import RunConfig
from spxbatch.pipeline.executor import SerialExecutor
from spxbatch.pipeline.rundir import PART_SCHEMA
from spxbatch.pipeline.stages import Pipeline
from spxbatch.plan.plan import Plan
from spxbatch.sim.server.lifecycle import serve_archive


@pytest.mark.slow  # 38 s; assembly of conformed parts is also covered by tests/pipeline/test_rundir.py
def test_a_cutout_run_assembles_and_a_failed_assembly_keeps_the_parts(sim_archive, tmp_path):
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the cube's folder should be")  # makes writing the cube fail
    with serve_archive(sim_archive.root) as srv:
        pipe = Pipeline(RunConfig(catalog=str(sim_archive.catalog), output=str(blocker / "cube.zarr"),
                                  run_dir=str(tmp_path / "run"), archive=srv.url, fetch="cutout", progress=False,
                                  images_per_task=4))
        pipe.plan()
        totals = pipe.measure(SerialExecutor())
    assert totals["failed_images"] == 0 and totals["measured"] > 0
    parts = sorted(pipe.rundir.parts_dir.glob("img_*.parquet"))
    tables = [pq.read_table(p) for p in parts]
    assert all(t.schema.remove_metadata() == PART_SCHEMA for t in tables)
    measured = [np.asarray(t["measured"]) for t in tables]
    assert any(m.any() and not m.all() for m in measured)  # a mixed part: the one that broke assembly
    assert any(m.all() for m in measured)
    before = {p.name: p.read_bytes() for p in parts}

    with pytest.raises(OSError):
        pipe.assemble()
    assert {p.name: p.read_bytes() for p in pipe.rundir.parts_dir.glob("img_*.parquet")} == before
    assert pipe.rundir.stage_done("measure") and not pipe.rundir.stage_done("assemble")

    blocker.unlink()
    again = Pipeline(pipe.config)
    assert again.measure(SerialExecutor())["images"] == 0  # nothing is measured twice
    ds = again.assemble()
    plan = Plan.load(pipe.rundir.path)
    assert ds.sizes["obs"] + ds.sizes["failure"] == len(plan.pairs) and ds.sizes["obs"] == totals["measured"]
    assert ds["flags"].dtype == np.int32 and ds["psf_zone"].dtype == np.int16 and ds["band"].dtype == np.int8
    assert np.isfinite(ds["flux"].values).all()
