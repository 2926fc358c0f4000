"""Bad input through the real command line, in process: every case ends with exit 2 and one sentence on
stderr naming the option, the file or the catalog row (never "unexpected error", never a traceback), and
nothing is created beside the inputs. Options from a config file get the same checks as the same options
given as flags, and the message names the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from spxbatch.cli.exit_codes import EXIT_INPUT
from spxbatch.cli.main import main as cli_main

RUN = ["{cat}", "-o", "{tmp}/out.zarr", "--archive", "{arch}", "--stages", "plan", "--no-progress"]
CFG = [*RUN, "--config", "{cfg}"]
GOOD_CATALOG = "name,ra,dec\na,160.9,58.0\n"

#: (id, argv, config file (name, content) or None, catalog content or None, what the message must say).
CASES = [
    ("flag-time-range-reversed", [*RUN, "--time-range", "60010", "60000"], None, None,
     "MJD_MIN 60010 is after MJD_MAX 60000"),
    ("flag-time-range-nan", [*RUN, "--time-range", "nan", "60000"], None, None, "time_range must be"),
    ("flag-workers-negative", [*RUN, "--workers", "-1"], None, None, "cluster.workers must be at least 1"),
    ("flag-release-unknown", [*RUN, "--release", "qr9"], None, None, "--release qr9: {arch} has no such release "
     "folder (it has qr2, truth)"),
    ("config-tap-mode-choice", CFG, ("run.toml", '[plan]\ntap_mode = "fast"\n'), None, "plan.tap_mode must be"),
    ("flag-workers-zero", [*RUN, "--workers", "0"], None, None, "cluster.workers must be at least 1"),
    ("flag-phot-choice", [*RUN, "--phot", "aperture=square"], None, None, "photometry.aperture must be fwhm"),
    ("flag-phot-type", [*RUN, "--phot", "fixed_radius=abc"], None, None, "photometry.fixed_radius must be a"),
    ("flag-phot-range", [*RUN, "--phot", "clip_sigma=-3"], None, None, "photometry.clip_sigma must be more"),
    ("flag-phot-nan", [*RUN, "--phot", "snr_threshold=NaN"], None, None, "photometry.snr_threshold must be"),
    ("flag-phot-unknown", [*RUN, "--phot", "nosuch=1"], None, None, "unknown photometry option 'nosuch'"),
    ("flag-phot-preset", [*RUN, "--phot", "preset=sextractor"], None, None, "preset 'sextractor' is unknown"),
    ("flag-phot-radius", [*RUN, "--phot", "fixed_radius=-1"], None, None, "aperture radii must be positive"),
    ("flag-phot-bad-flags-misspelt", [*RUN, "--phot", 'bad_flags=["HOT", "COLDD"]'], None, None,
     "photometry.bad_flags: unknown flag name 'COLDD' (did you mean COLD?)"),
    ("flag-archive-missing-dir", [*RUN[:4], "{tmp}/nosuchdir", *RUN[5:]], None, None, "nosuchdir"),
    ("flag-archive-no-host", [*RUN[:4], "http://", *RUN[5:]], None, None, "names no host"),
    ("flag-tap-url", [*RUN, "--tap-url", "notaurl"], None, None, "tap_url must be an http(s) URL"),
    ("flag-scheduler", [*RUN, "--scheduler", "garbage"], None, None, "cluster.scheduler must be a Dask"),
    ("flag-stages", [*RUN[:-3], "--stages", "plan,bogus"], None, None, "unknown stage(s) ['bogus']"),
    ("flag-name-col", [*RUN, "--name-col", "nope"], None, None, "'nope'"),
    ("config-fetch-choice", CFG, ("run.toml", 'fetch = "fast"\n'), None, "fetch must be auto, range"),
    ("config-bands-range", CFG, ("run.toml", "bands = [7]\n"), None, "bands are 1..6 or D1..D6, not 7"),
    ("config-bands-type", CFG, ("run.toml", 'bands = "1,2"\n'), None, "bands must be a list of integers"),
    ("config-time-range-reversed", CFG, ("run.toml", "time_range = [60010, 60000]\n"), None,
     "MJD_MIN 60010 is after MJD_MAX 60000"),
    ("config-time-range-nan", CFG, ("run.toml", "time_range = [nan, 60000]\n"), None, "time_range must be"),
    ("config-workers-negative", CFG, ("run.toml", "[cluster]\nworkers = -1\n"), None,
     "cluster.workers must be at least 1"),
    ("config-workers-type", CFG, ("run.yaml", "cluster:\n  workers: four\n"), None,
     "cluster.workers must be an integer"),
    ("config-images-per-task-type", CFG, ("run.json", '{"images_per_task": "4"}'), None,
     "images_per_task must be an integer"),
    ("config-fetch-attempts-type", CFG, ("run.toml", 'fetch_attempts = "many"\n'), None,
     "fetch_attempts must be an integer"),
    ("config-retry-range", CFG, ("run.toml", "[retry]\nmax_attempts = 0\n"), None,
     "retry.max_attempts must be at least 1"),
    ("config-phot-choice", CFG, ("run.toml", "[photometry]\naperture = 1\n"), None,
     "photometry.aperture must be fwhm or fixed"),
    ("config-phot-type", CFG, ("run.toml", '[photometry]\nfixed_radius = "abc"\n'), None,
     "photometry.fixed_radius must be a number"),
    ("config-phot-range", CFG, ("run.toml", "[photometry]\nclip_sigma = -1\n"), None,
     "photometry.clip_sigma must be more than 0"),
    ("config-phot-upper-range", CFG, ("run.toml", "[photometry]\nzodi_min_fraction = 2\n"), None,
     "photometry.zodi_min_fraction must be between 0 and 1"),
    ("config-phot-radius", CFG, ("run.toml", "[photometry]\nfixed_radius = -1\n"), None,
     "aperture radii must be positive"),
    ("config-phot-bad-flags-misspelt", CFG, ("run.toml", '[photometry]\nbad_flags = ["HOT", "SATELITE_HALO"]\n'),
     None, "photometry.bad_flags: unknown flag name 'SATELITE_HALO' (did you mean SATELLITE_HALO?)"),
    ("config-psf-source", CFG, ("run.toml", '[fetch_options]\npsf_source = "disk"\n'), None,
     "fetch_options.psf_source must be file, calibration or epsf"),
    ("config-scheduler", CFG, ("run.toml", '[cluster]\nscheduler = "garbage"\n'), None,
     "cluster.scheduler must be a Dask"),
    ("config-unknown-option", CFG, ("run.toml", "nosuch = 1\n"), None, "unknown option 'nosuch'"),
    ("config-archive", [*CFG[:3], *CFG[5:]], ("run.toml", 'archive = "{tmp}/nosuchdir"\n'), None,
     "nosuchdir' is not 'irsa'"),
    ("config-not-toml", CFG, ("run.toml", "this is not toml"), None, "cannot be parsed"),
    ("config-bad-yaml", CFG, ("run.yaml", "a: [unclosed"), None, "cannot be parsed"),
    ("config-binary", CFG, ("run.toml", b"\xff\xfe\x00bad"), None, "is not text"),
    ("config-not-a-mapping", CFG, ("run.json", "[1, 2]"), None, "must hold a mapping"),
    ("config-suffix", CFG, ("run.ini", "a=1"), None, "use .toml, .yaml, .yml or .json"),
    ("config-missing", [*RUN, "--config", "{tmp}/missing.toml"], None, None, "missing.toml does not exist"),
    ("catalog-missing", ["{tmp}/nosuch.csv", *RUN[1:]], None, None, "nosuch.csv does not exist"),
    ("catalog-empty", RUN, None, "", "is empty"),
    ("catalog-no-rows", RUN, None, "name,ra,dec\n", "no rows"),
    ("catalog-ra-text", RUN, None, "name,ra,dec\na,abc,1\n", "is not a number at row 1"),
    ("catalog-ra-range", RUN, None, "name,ra,dec\na,400,1\n", "outside [0, 360) deg at row 1"),
    ("catalog-no-ra", RUN, None, "name,dec\na,1\n", "no RA column"),
    ("catalog-duplicate", RUN, None, "name,ra,dec\na,1,1\na,2,2\n", "duplicate name 'a' at rows 1 and 2"),
    ("catalog-ragged", RUN, None, "name,ra,dec\na,1,2,3,4\n", "cannot be parsed"),
    ("stage-mirror-is-a-file", ["stage", "{cat}", "-o", "{cat}", "--archive", "{arch}", "--cube",
                                "{tmp}/out.zarr", "--no-progress"], None, GOOD_CATALOG, "is a file"),
    ("plot-unknown-source", ["plot", "{cube}", "-o", "{tmp}/figs", "--source", "nosuch", "--workers", "1"],
     None, None, "no source named 'nosuch'"),
    ("plot-not-a-cube", ["plot", "{arch}", "-o", "{tmp}/figs"], None, None, "is not a spxbatch cube"),
    ("qc-phot-type", ["qc", "{cube}", "-o", "{tmp}/qc.zarr", "--phot", "snr_threshold=abc"], None, None,
     "photometry.snr_threshold must be a number"),
    ("qc-phot-range", ["qc", "{cube}", "-o", "{tmp}/qc.zarr", "--phot", "clip_sigma=-1"], None, None,
     "photometry.clip_sigma must be more than 0"),
    ("qc-phot-flag-misspelt", ["qc", "{cube}", "-o", "{tmp}/qc.zarr", "--phot", 'extra_disqualifying_flags=["SORCE"]'],
     None, None, "photometry.extra_disqualifying_flags: unknown flag name 'SORCE' (did you mean SOURCE?)"),
    ("export-csv-into-a-file", ["export", "{cube}", "--format", "csv", "-o", "{cat}"], None, GOOD_CATALOG,
     "is a file"),
    ("export-parquet-into-a-folder", ["export", "{cube}", "--format", "parquet", "-o", "{arch}"], None, None,
     "is a folder"),
    ("export-votable-into-a-folder", ["export", "{cube}", "--format", "votable", "-o", "{arch}"], None, None,
     "is a folder"),
    ("plot-into-a-file", ["plot", "{cube}", "-o", "{cat}", "--workers", "1"], None, GOOD_CATALOG, "is a file"),
    ("config-is-a-folder", [*RUN, "--config", "{arch}"], None, None, "is a folder"),
    ("status-not-a-run", ["status", "{tmp}"], None, None, "is not a spxbatch run directory"),
]


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize(("argv", "config", "catalog", "message"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_one_sentence_and_exit_2(argv, config, catalog, message, sim_archive, sim_run, tmp_path,
                                              capsys, reliability):
    cat = sim_archive.catalog
    if catalog is not None:
        cat = tmp_path / "catalog.csv"
        cat.write_text(catalog)
    cfg = tmp_path / (config[0] if config else "none.toml")
    if config:
        content = config[1] if isinstance(config[1], bytes) else config[1].replace("{tmp}", str(tmp_path)).encode()
        cfg.write_bytes(content)
    values = {"cat": cat, "arch": sim_archive.root, "cfg": cfg, "tmp": tmp_path, "cube": sim_run}
    before = _tree(tmp_path)
    code = cli_main([a.format(**values) for a in argv])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT, err
    assert err.startswith("spxbatch: ") and err.count("\n") == 1, err
    assert "unexpected error" not in err and "Traceback" not in err, err
    assert message.format(**values) in err, err
    if config and argv is CFG:  # an option's value: the message names the file it came from
        assert f"config file {cfg}" in err, err
    assert _tree(tmp_path) == before  # nothing made: no run directory, no cube, no figures
    reliability(exit=code, says=message)


def test_unknown_collection_is_one_sentence_and_the_corrected_command_runs(sim_archive, tmp_path, capsys,
                                                                           reliability):
    """A misspelt --collection over TAP: exit 2 naming it and the collections the archive has around the
    sources (after the plan's query: nothing planned, nothing measured); the run directory it leaves holds no
    finished work, so the corrected command runs."""
    from spxbatch.sim.server import serve_archive

    with serve_archive(sim_archive.root) as srv:
        argv = [str(sim_archive.catalog), "-o", str(tmp_path / "out.zarr"), "--archive", srv.url, "--stages", "plan",
                "--no-progress"]
        assert cli_main([*argv, "--collection", "spherex_qr9"]) == EXIT_INPUT
        err = capsys.readouterr().err
        assert err.startswith("spxbatch: ") and err.count("\n") == 1 and "Traceback" not in err, err
        says = "--collection spherex_qr9 matches none of the 15 images the archive has around the catalog's sources"
        assert says in err and "(their collections: spherex_qr2)" in err, err
        assert not (tmp_path / "out.run" / "plan" / "plan.json").exists()
        assert cli_main([*argv, "--collection", "spherex_qr2"]) == 0, capsys.readouterr().err
    reliability(exit=EXIT_INPUT, says=says)
