"""The command line: help, one-sentence errors with meaningful exit codes, the demo end to end, status."""

from __future__ import annotations

import subprocess
import sys

import pytest
from waits import wait_until

from spxbatch.cli.exit_codes import EXIT_INPUT, EXIT_OK, EXIT_STAGE
from spxbatch.cli.main import main


def _spx(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spxbatch.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_help_lists_options_and_subcommands():
    out = _spx("--help")
    assert out.returncode == 0
    for word in ("--archive", "--fetch", "--bands", "--cluster", "--jobs", "--scheduler", "--config", "--stages",
                 "demo", "status", "plot", "export", "sim", "Exit codes"):
        assert word in out.stdout, word


def test_bad_catalog_row_is_one_sentence_naming_the_row(tmp_path, capsys):
    cat = tmp_path / "bad.csv"
    cat.write_text("name,ra,dec\na,10.0,5.0\nb,400.0,5.0\n")
    code = main([str(cat), "--archive", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT
    assert err.startswith("spxbatch: ") and err.count("\n") == 1, err
    assert "row" in err and "ra" in err.lower()
    assert "Traceback" not in err
    assert not (tmp_path / "bad.run").exists()  # validated before anything was written or fetched


def test_unknown_photometry_option_and_bad_stage_order(tmp_path, capsys):
    cat = tmp_path / "ok.csv"
    cat.write_text("name,ra,dec\na,10.0,5.0\n")
    assert main([str(cat), "--phot", "bogus=1", "--archive", str(tmp_path)]) == EXIT_INPUT
    assert "bogus" in capsys.readouterr().err
    code = main([str(cat), "-o", str(tmp_path / "x.zarr"), "--stages", "measure", "--archive", str(tmp_path)])
    assert code == EXIT_STAGE
    assert "needs stage 'plan' first" in capsys.readouterr().err


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """`spxbatch demo` exactly as the README runs it, with small images to keep the suite fast."""
    d = tmp_path_factory.mktemp("demo")
    out = _spx("demo", "--npix", "128", "--dir", "demo", "--no-progress", cwd=d)
    assert out.returncode == EXIT_OK, out.stdout + out.stderr
    assert "Cube written:" in out.stdout and "open_cube" in out.stdout and "spxbatch plot" in out.stdout
    return d / "demo"


def test_demo_then_status_plot_export(demo_dir, tmp_path):
    import spxbatch

    ds = spxbatch.open_cube(demo_dir / "demo.zarr")
    assert ds.sizes["obs"] > 0 and ds.sizes["channel"] == 102
    status = _spx("status", str(demo_dir / "demo.run"))
    assert status.returncode == 0
    assert "[done]    plan" in status.stdout and "[done]    assemble" in status.stdout
    assert "The run is complete." in status.stdout
    name = str(ds["source"].values[0])
    plot = _spx("plot", str(demo_dir / "demo.zarr"), "--source", name, "-o", str(tmp_path / "figs"))
    assert plot.returncode == 0, plot.stderr
    assert (tmp_path / "figs" / f"{name}.png").exists() and (tmp_path / "figs" / "summary.png").exists()
    exp = _spx("export", str(demo_dir / "demo.zarr"), "--format", "parquet", "-o", str(tmp_path / "m.parquet"))
    assert exp.returncode == 0, exp.stderr
    import pandas as pd

    assert len(pd.read_parquet(tmp_path / "m.parquet")) == ds.sizes["obs"]


def test_sigterm_is_an_interrupt_with_a_resumable_run_dir(sim_archive, tmp_path):
    import signal

    from spxbatch.cli.exit_codes import EXIT_INTERRUPTED
    from spxbatch.sim.server import serve_archive

    with serve_archive(sim_archive.root, latency=0.3) as srv:
        proc = subprocess.Popen(
            [sys.executable, "-m", "spxbatch.cli", str(sim_archive.catalog), "-o", str(tmp_path / "t.zarr"),
             "--archive", srv.url, "--workers", "1", "--images-per-task", "1", "--no-progress"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: list((tmp_path / "t.run" / "parts").glob("img_*.parquet")), "a first part")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "interrupted; rerun the same command to resume" in err
    assert (tmp_path / "t.run" / "config.json").exists() and not (tmp_path / "t.zarr").exists()
