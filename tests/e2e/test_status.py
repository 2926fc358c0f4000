"""`spxbatch status RUN_DIR` on finished, half-finished and failed runs (measuring and staging): the stages
done, what failed, and a command that, when run, does finish the run."""

from __future__ import annotations

import shlex

from spxbatch.cli.exit_codes import EXIT_FAILURES, EXIT_OK
from spxbatch.cli.main import main
from spxbatch.pipeline.rundir import RunDir
from spxbatch.pipeline.stages import run
from spxbatch.pipeline.status import run_status
from spxbatch.sim.server import serve_archive


def _command(text: str) -> list[str]:
    """The arguments of the `spxbatch ...` command a status account ends with."""
    line = text.strip().splitlines()[-1].strip()
    assert line.startswith("spxbatch "), text
    return shlex.split(line)[1:]


def _line(text: str, start: str) -> str:
    return next(ln for ln in text.splitlines() if ln.strip().startswith(start))


def test_not_a_run_directory(tmp_path):
    assert "not a spxbatch run directory" in run_status(tmp_path)


def test_finished_and_half_finished_runs(sim_archive, client, tmp_path):
    out = tmp_path / "cube.zarr"
    run(sim_archive.catalog, out, archive=str(sim_archive.root), stages="plan", progress=False, client=client)
    text = run_status(tmp_path / "cube.run")
    assert "[done]    plan" in text and "[pending] measure" in text and "[pending] assemble" in text
    assert "[skipped] stage" in text
    n = int(_line(text, "Images:").split()[1])
    assert f"Images: {n} planned, 0 measured, 0 failed, {n} not yet done" in text
    assert _command(text) == [str(sim_archive.catalog), "-o", str(out)]

    # the printed command finishes the run (no --archive: the rerun picks up the saved configuration)
    assert main([*_command(text), "--workers", "1", "--no-progress"]) == EXIT_OK
    text = run_status(tmp_path / "cube.run")
    assert "[done]    measure" in text and "[done]    assemble" in text
    assert f"Images: {n} planned, {n} measured, 0 failed, 0 not yet done" in text
    assert text.strip().endswith("The run is complete.")

    # a run killed while measuring: some parts missing, measure not marked done
    rd = RunDir(tmp_path / "cube.run")
    for part in sorted(rd.parts_dir.glob("img_*.parquet"))[:3]:
        part.unlink()
    rd.clear_stage("measure")
    text = run_status(rd.path)
    assert "[done]    plan" in text and "[pending] measure" in text and "[pending] assemble" in text
    assert f"{n - 3} measured, 0 failed, 3 not yet done" in text
    assert "To finish the run:" in text and _command(text) == [str(sim_archive.catalog), "-o", str(out)]


def test_failed_measuring_run(sim_archive, client, tmp_path):
    out = tmp_path / "down.zarr"
    with serve_archive(sim_archive.root, faults={"http500": 1.0}) as srv:
        run(sim_archive.catalog, out, archive=srv.url, fetch="whole", progress=False, client=client,
            fetch_attempts=1)
    text = run_status(tmp_path / "down.run")
    n = int(_line(text, "Images:").split()[1])
    assert f"Images: {n} planned, 0 measured, {n} failed, 0 not yet done" in text
    assert "500" in _line(text, "failed image 0:")
    assert f"... and {n - 5} more failed images" in text
    assert "The run is complete." not in text
    assert "To finish the run (failed images are retried):" in text
    assert _command(text) == [str(sim_archive.catalog), "-o", str(out)]


def test_failed_then_finished_staging(sim_archive, tmp_path):
    out, mirror = tmp_path / "cube.zarr", tmp_path / "mirror"
    port = None
    with serve_archive(sim_archive.root, faults={"http500": 1.0}) as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        code = main(["stage", str(sim_archive.catalog), "-o", str(mirror), "--cube", str(out), "--archive",
                     srv.url, "--workers", "1", "--fetch-attempts", "1", "--no-progress"])
    assert code == EXIT_FAILURES
    text = run_status(tmp_path / "cube.run")
    assert f"Mirror: {mirror}" in text
    assert "[failed]  stage" in text and "[pending] measure" in text
    assert "500" in _line(text, "failed to stage:")
    assert _command(text) == ["stage", str(sim_archive.catalog), "-o", str(mirror), "--cube", str(out)]

    with serve_archive(sim_archive.root, port=port):  # the archive is back (the saved URL is reused)
        assert main([*_command(text), "--workers", "1", "--no-progress"]) == EXIT_OK
    text = run_status(tmp_path / "cube.run")
    assert "[done]    stage" in text and "[pending] measure" in text and "failed to stage" not in text
    assert "no network needed" in text
    assert _command(text) == [str(sim_archive.catalog), "-o", str(out), "--stages", "measure,assemble"]
    # ... and that command measures from the mirror with the server gone
    assert main([*_command(text), "--workers", "1", "--no-progress"]) == EXIT_OK
    assert run_status(tmp_path / "cube.run").strip().endswith("The run is complete.")
