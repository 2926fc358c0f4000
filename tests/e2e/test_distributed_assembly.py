"""The assembly shuffle on a real run's parts: on a LocalCluster of two workers (TCP), in several blocks and
batches, with sources without rows and failed images, it equals the in-memory `assemble_cube` variable by
variable (values, dtypes, attributes); a run killed with SIGKILL during assembly and resumed by the CLI gives
the same cube; one source's rows read from the cube quickly."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from cubes import assert_cubes_equal, kill_group
from distributed import Client, LocalCluster

from spxbatch.cube.store import open_cube
from spxbatch.pipeline.assembly.driver import AssemblyOptions, assemble_run
from spxbatch.pipeline.config import RunConfig
from spxbatch.pipeline.executor import DaskExecutor, SerialExecutor
from spxbatch.pipeline.measure import unmeasured_rows
from spxbatch.pipeline.stages import Pipeline, build_dataset, cube_attrs, run
from spxbatch.plan.plan import Plan

#: Images whose parts are replaced by a failed task's (every pair 'failed: ...'), as a crashed task leaves.
N_FAILED_IMAGES = 3


@pytest.fixture(scope="module")
def measured(sim_archive, tmp_path_factory):
    """A run measured (serially, from the local mirror) but not assembled, with some images failed; its
    Pipeline and the in-memory reference cube of its parts."""
    out = tmp_path_factory.mktemp("asm") / "cube.zarr"
    run(sim_archive.catalog, out, archive=str(sim_archive.root), progress=False, executor=SerialExecutor(),
        stages="plan,measure")
    pipe = Pipeline(RunConfig(catalog=str(sim_archive.catalog), output=str(out), archive=str(sim_archive.root),
                              progress=False))
    plan = Plan.load(pipe.rundir.path)
    images = plan.images.set_index("image_id")
    for image_id in sorted(plan.pairs["image_id"].unique())[1::4][:N_FAILED_IMAGES]:
        sources = plan.pairs.loc[plan.pairs["image_id"] == image_id, "source_index"].to_numpy()
        table = unmeasured_rows(images.loc[image_id].to_dict(), sources, "failed: task error OSError: gone")
        table["image_id"] = np.int64(image_id)
        pipe.rundir.write_part(int(image_id), table, {"image_id": int(image_id), "error": "failed: gone"})
    reference = build_dataset(pipe.catalog, plan, pipe.rundir.read_parts(), pipe.config, pipe.photometry_config)
    return pipe, reference


def _assert_same_cube(cube, reference, other_run: tuple[str, ...] = ()):
    """Equal values (cubes.assert_cubes_equal), and the same dtypes and attributes (`created` and the
    attributes of `other_run`, e.g. the config of a run with another output, aside)."""
    assert_cubes_equal(cube, reference)
    for name, var in reference.variables.items():
        assert cube[name].dtype == var.dtype, name
        assert cube[name].attrs == var.attrs, name
    skip = {"created", *other_run}
    assert {k: v for k, v in cube.attrs.items() if k not in skip} == \
        {k: v for k, v in reference.attrs.items() if k not in skip}


def _assemble(pipe, out, executor, options=None):
    urls = Plan.load(pipe.rundir.path).images.set_index("image_id")["url"]
    cat = pipe.catalog
    return assemble_run(pipe.rundir, out, cat.name, cat.ra, cat.dec, urls,
                        cube_attrs(pipe.config, pipe.photometry_config, pipe.catalog), executor, options)


def test_reference_has_what_the_shuffle_must_keep(measured):
    _, ref = measured
    assert (ref["row_size"].values == 0).sum() >= 2  # sources without rows (no image covers them)
    assert sum(r.startswith("failed") for r in ref["failure_reason"].values) > 10  # the failed images' pairs
    assert sum("image(s) failed" in d for d in ref["status_detail"].values) > 5  # sources that lost images


def test_on_two_workers_in_blocks_and_batches_equals_in_memory(measured, tmp_path):
    pipe, ref = measured
    # tiny chunks and batches: blocks share obs and failure chunks (written under locks), several batches
    options = AssemblyOptions(sources_per_block=3, obs_chunk=16, failure_chunk=8, batch_bytes=40_000)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        path = _assemble(pipe, tmp_path / "dist.zarr", DaskExecutor(client), options)
    assert not (pipe.rundir.path / "assembly").exists() and not list(tmp_path.glob(".*assembling"))
    cube = open_cube(path).load()
    _assert_same_cube(cube, ref)
    assert cube["flux"].encoding["chunks"] == (16,) and cube["spectrum_flux"].encoding["chunks"] == (3, 102)


def test_serial_default_layout_equals_in_memory(measured, tmp_path):
    pipe, ref = measured
    _assert_same_cube(open_cube(_assemble(pipe, tmp_path / "serial.zarr", SerialExecutor())).load(), ref)


def _cli(args):
    return subprocess.Popen([sys.executable, "-m", "spxbatch.cli", *args], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


#: Assemble a run directory on a LocalCluster of two workers, two sources per block (15 blocks).
ASSEMBLE_IN_SMALL_BLOCKS = """
import sys
from distributed import Client, LocalCluster
from spxbatch.pipeline.assembly.driver import AssemblyOptions
from spxbatch.pipeline.stages import Pipeline
with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0") as cluster, \\
        Client(cluster) as client:
    Pipeline.from_run_dir(sys.argv[1]).assemble(client, AssemblyOptions(sources_per_block=2))
"""


def test_killed_during_assembly_then_resumed_by_the_cli_equals_uninterrupted(measured, sim_archive, tmp_path):
    pipe, ref = measured
    out, run_dir = tmp_path / "killed.zarr", tmp_path / "killed.run"
    # the measured run directory, copied under the new output's name (parts, plan, state: measure done)
    subprocess.run(["cp", "-a", str(pipe.rundir.path), str(run_dir)], check=True)
    config = json.loads((run_dir / "config.json").read_text())
    config.update(output=str(out), run_dir=str(run_dir))
    (run_dir / "config.json").write_text(json.dumps(config))
    written = run_dir / "assembly" / "written"
    proc = subprocess.Popen([sys.executable, "-c", ASSEMBLE_IN_SMALL_BLOCKS, str(run_dir)], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list(written.glob("*.json"))) < 2:
        time.sleep(0.01)
    kill_group(proc)  # SIGKILL, the workers with it, after two blocks are written
    n_blocks = 15
    done_first = len(list(written.glob("*.json")))
    assert 2 <= done_first < n_blocks and not out.exists()

    # the CLI resumes it: the blocks not written, in the killed assembly's blocks (not the default one block)
    proc = _cli([str(sim_archive.catalog), "-o", str(out), "--stages", "assemble", "--workers", "2", "--no-progress"])
    text, _ = proc.communicate(timeout=300)
    assert proc.returncode in (0, 1), text  # 1: some images failed (the failed parts above)
    cube = open_cube(out).load()
    _assert_same_cube(cube, ref, other_run=("config",))  # its output, run directory, workers
    assert cube["spectrum_flux"].encoding["chunks"] == (2, 102)
    print(f"killed after {done_first} of {n_blocks} blocks written; resumed by the CLI")

    t0 = time.perf_counter()
    cube = open_cube(out, dask=False)
    one = cube.spx.dataframe(str(ref["source"].values[int(np.argmax(ref["row_size"].values))]))
    print(f"open the cube and read one source's {len(one)} rows: {time.perf_counter() - t0:.3f} s")
    assert len(one) == int(ref["row_size"].values.max())
    assert pd.Index(one["mjd"]).is_monotonic_increasing
