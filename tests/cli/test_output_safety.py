"""The command never replaces what spxbatch did not create, and a failed start never blocks the corrected
command: an -o folder of the user's (or a run directory spxbatch did not make) is refused with one sentence
and exit 2 before anything is written; spxbatch's own cube is still replaced by a rerun; a first run that
failed early (dead port, missing archive) leaves nothing that refuses the same command with the fix."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from spxbatch.cli.exit_codes import EXIT_INPUT, EXIT_OK
from spxbatch.cli.main import main as cli_main
from spxbatch.cube.store import is_spxbatch_cube, open_cube


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` (and `root`) -> its bytes (None for a directory)."""
    return {str(p.relative_to(root.parent)): (None if p.is_dir() else p.read_bytes())
            for p in [root, *sorted(root.rglob("*"))]}


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _refused(capsys, argv: list[str], path: Path) -> None:
    assert cli_main(argv) == EXIT_INPUT
    err = capsys.readouterr().err
    assert err.startswith("spxbatch: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert str(path) in err and "not" in err, err


def test_user_folder_as_output_is_refused_untouched(sim_archive, tmp_path, capsys):
    thesis = tmp_path / "results"
    (thesis / "figs").mkdir(parents=True)
    (thesis / "thesis.tex").write_text("\\documentclass{article}\n")
    (thesis / "figs" / "f1.pdf").write_bytes(b"%PDF-1.4 \x00\x01")
    before = _snapshot(thesis)
    _refused(capsys, [str(sim_archive.catalog), "-o", str(thesis), "--archive", str(sim_archive.root),
                      "--no-progress"], thesis)
    assert _snapshot(thesis) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no run directory, no temporary store


def test_a_file_as_output_is_refused(sim_archive, tmp_path, capsys):
    notes = tmp_path / "notes.zarr"
    notes.write_text("mine\n")
    _refused(capsys, [str(sim_archive.catalog), "-o", str(notes), "--archive", str(sim_archive.root),
                      "--stages", "plan"], notes)
    assert notes.read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.zarr"]


def test_run_directory_not_made_by_spxbatch_is_refused(sim_archive, tmp_path, capsys):
    run_dir = tmp_path / "cube.run"
    run_dir.mkdir()
    (run_dir / "data.txt").write_text("keep me\n")
    before = _snapshot(run_dir)
    _refused(capsys, [str(sim_archive.catalog), "-o", str(tmp_path / "cube.zarr"), "--archive",
                      str(sim_archive.root), "--stages", "plan"], run_dir)
    assert _snapshot(run_dir) == before and not (tmp_path / "cube.zarr").exists()


def test_spxbatch_cube_is_replaced_by_a_rerun(sim_archive, tmp_path, capsys):
    out = tmp_path / "cube.zarr"
    out.mkdir()  # an empty folder made beforehand holds nothing to lose: accepted
    argv = [str(sim_archive.catalog), "-o", str(out), "--archive", str(sim_archive.root), "--workers", "1",
            "--no-progress"]
    assert cli_main(argv) == EXIT_OK
    assert is_spxbatch_cube(out)
    n_obs = open_cube(out, dask=False).sizes["obs"]
    (out / "stale").write_text("from the first run\n")
    assert cli_main(argv) == EXIT_OK, capsys.readouterr().err
    assert is_spxbatch_cube(out) and not (out / "stale").exists()  # a whole new store replaced it
    assert open_cube(out, dask=False).sizes["obs"] == n_obs > 0


@pytest.mark.parametrize("broken", ["dead_port", "missing_archive"])
def test_failed_start_then_corrected_command_succeeds(sim_archive, tmp_path, capsys, broken):
    out = tmp_path / "cube.zarr"
    bad = f"http://127.0.0.1:{_dead_port()}" if broken == "dead_port" else str(tmp_path / "no_such_archive")
    common = [str(sim_archive.catalog), "-o", str(out), "--stages", "plan", "--no-progress"]
    assert cli_main([*common, "--archive", bad]) not in (EXIT_OK, 1)
    capsys.readouterr()
    assert cli_main([*common, "--archive", str(sim_archive.root)]) == EXIT_OK, capsys.readouterr().err
    assert (tmp_path / "cube.run" / "plan").is_dir()
