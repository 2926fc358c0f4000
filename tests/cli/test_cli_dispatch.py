"""The command line without running a pipeline: dispatch to each subcommand, every bad option (flag or
config file) as one sentence with exit 2 before anything is written, the exit code of each error kind, and
Ctrl-C and SIGTERM as exit 130 whatever SIGINT disposition the command inherited."""

from __future__ import annotations

import os
import signal
import time

import pytest

from spxbatch.archive.errors import ArchiveUnreachable
from spxbatch.cli import main as cli_main
from spxbatch.cli.exit_codes import (
    EXIT_ARCHIVE,
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STAGE,
    EXIT_UNEXPECTED,
    EXIT_WRITE,
    exit_code,
)
from spxbatch.errors import CatalogError, ConfigError, StageError, WriteError


@pytest.fixture
def catalog(tmp_path):
    path = tmp_path / "stars.csv"
    path.write_text("name,ra,dec\na,10.0,5.0\n")
    return path


def _one_sentence(err: str) -> None:
    assert err.startswith("spxbatch: ") and err.count("\n") == 1 and "Traceback" not in err, err


@pytest.mark.parametrize(("config", "flags", "needle"), [
    ("fetch = 'fast'\n", [], "fetch must be auto, range, cutout or whole"),
    ("images_per_task = 0\n", [], "images_per_task must be at least 1"),
    ("[cluster]\nworkers = -1\n", [], "cluster.workers must be at least 1"),
    ("[cluster]\njobs = '3:1'\n", [], "cluster.jobs"),
    ("[retry]\nmax_attempts = 'many'\n", [], "retry.max_attempts must be an integer"),
    ("[photometry]\naperture = 'square'\n", [], "photometry.aperture must be fwhm or fixed"),
    ("time_range = [60010, 60000]\n", [], "MJD_MIN 60010 is after MJD_MAX 60000"),
    ("bogus = 1\n", [], "unknown option 'bogus'"),
    ("", ["--workers", "-1"], "cluster.workers must be at least 1"),
    ("", ["--fetch-attempts", "0"], "fetch_attempts must be at least 1"),
    ("", ["--time-range", "5", "3"], "MJD_MIN 5 is after MJD_MAX 3"),
    ("", ["--phot", "fixed_radius=big"], "photometry.fixed_radius must be a number"),
    ("", ["--jobs", "0"], "--jobs takes a count"),
])
def test_bad_options_are_refused_before_anything_is_written(config, flags, needle, catalog, tmp_path, capsys):
    args = [str(catalog), "--archive", str(tmp_path), "--no-progress", *flags]
    if config:
        (tmp_path / "run.toml").write_text(config)
        args += ["--config", str(tmp_path / "run.toml")]
    assert cli_main.main(args) == EXIT_INPUT
    err = capsys.readouterr().err
    _one_sentence(err)
    assert needle in err
    assert not (tmp_path / "stars.run").exists() and not (catalog.parent / "stars.run").exists()


def test_help_photometry_and_status(tmp_path, capsys):
    assert cli_main.main(["--help-photometry"]) == EXIT_OK
    assert "snr_threshold" in capsys.readouterr().out
    assert cli_main.main(["status", str(tmp_path)]) == EXIT_INPUT  # bad input, as the README's exit codes say
    assert "not a spxbatch run directory" in capsys.readouterr().err


def test_each_subcommand_is_dispatched(monkeypatch, capsys):
    for name, target in cli_main.SUBCOMMANDS.items():
        module, function = target.split(":")
        mod = __import__(f"spxbatch.cli.{module}", fromlist=[function])
        monkeypatch.setattr(mod, function, lambda argv, name=name: print(f"{name} {argv}") or EXIT_OK)
        assert cli_main.main([name, "x", "--y"]) == EXIT_OK
        assert capsys.readouterr().out == f"{name} ['x', '--y']\n"
    from spxbatch.cli import run

    monkeypatch.setattr(run, "run_main", lambda argv: print(f"run {argv}") or EXIT_OK)
    assert cli_main.main(["cat.csv", "-o", "c.zarr"]) == EXIT_OK
    assert capsys.readouterr().out == "run ['cat.csv', '-o', 'c.zarr']\n"


@pytest.mark.parametrize(("error", "code"), [
    (CatalogError("row 3: ra is 400"), EXIT_INPUT), (ConfigError("bad"), EXIT_INPUT),
    (FileNotFoundError("no such catalog"), EXIT_INPUT), (StageError("needs plan"), EXIT_STAGE),
    (ArchiveUnreachable("down"), EXIT_ARCHIVE), (KeyboardInterrupt(), EXIT_INTERRUPTED),
    (WriteError("cannot write x: No space left on device"), EXIT_WRITE),
    (ValueError("odd"), EXIT_INPUT), (RuntimeError("bug"), EXIT_UNEXPECTED),
])
def test_errors_become_exit_codes(error, code, monkeypatch, capsys):
    from spxbatch.cli import status

    def fail(argv):
        raise error

    monkeypatch.setattr(status, "status_main", fail)
    assert cli_main.main(["status", "x"]) == code
    err = capsys.readouterr().err
    _one_sentence(err)
    assert ("unexpected error" in err) == (exit_code(error) is None and not isinstance(error, KeyboardInterrupt))


def test_photometry_and_flux_source_flags_are_the_photometry_options(catalog):
    from spxbatch.cli.options import make_config
    from spxbatch.cli.run import run_parser

    cfg = make_config(run_parser().parse_args([str(catalog), "--photometry", "psf", "--flux-source", "psf",
                                               "--phot", "snr_threshold=3"]))
    phot = cfg.photometry_config
    assert (phot.photometry, phot.flux_source, phot.snr_threshold) == ("psf", "psf", 3)
    default = make_config(run_parser().parse_args([str(catalog)])).photometry_config
    assert (default.photometry, default.flux_source) == ("both", "aperture")
    with pytest.raises(SystemExit):
        run_parser().parse_args([str(catalog), "--photometry", "tractor"])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("inherited", [signal.SIG_IGN, signal.default_int_handler], ids=["ignored", "default"])
def test_ctrl_c_and_sigterm_interrupt_even_when_started_with_sigint_ignored(signum, inherited, monkeypatch,
                                                                              capsys):
    """A shell without job control starts its background jobs with SIGINT ignored (a batch script's
    `spxbatch ... &`, a test suite run in the background): Ctrl-C must still stop the command with exit 130,
    and the caller's handlers are back afterwards (the fault matrix's Ctrl-C case once ran to the end so)."""
    from spxbatch.cli import status

    def signalled(argv):
        os.kill(os.getpid(), signum)
        time.sleep(30)  # interrupted at once, or the test takes 30 s and fails
        return EXIT_OK

    monkeypatch.setattr(status, "status_main", signalled)
    before = signal.signal(signal.SIGINT, inherited), signal.getsignal(signal.SIGTERM)
    try:
        started = time.monotonic()
        assert cli_main.main(["status", "x"]) == EXIT_INTERRUPTED
        assert time.monotonic() - started < 10
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == (inherited, before[1])
    finally:
        signal.signal(signal.SIGINT, before[0])
    assert "interrupted; rerun the same command" in capsys.readouterr().err
