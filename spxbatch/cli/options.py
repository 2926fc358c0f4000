"""The options of a measuring run, as flags (shared by the main command, `stage` and `demo`), and the
run configuration built from them: defaults < config file < flags, on top of a run directory's saved config
when there is one. The heavy modules are imported when a run starts, so that `--help` answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from spxbatch.errors import ConfigError


def key_value_option(text: str) -> tuple[str, Any]:
    """'key=value' with value parsed as JSON when it can be (numbers, true/false, lists)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"takes KEY=VALUE, not {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (worker counts)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def existing_cube(path: str) -> str:
    """`path` when it is a cube spxbatch wrote; a ConfigError (exit 2) saying what it is otherwise."""
    from pathlib import Path

    from spxbatch.cube.store import is_spxbatch_cube

    if not Path(path).exists():
        raise ConfigError(f"cube {path} does not exist; give the -o of a finished run")
    if not is_spxbatch_cube(path):
        raise ConfigError(f"{path} is not a spxbatch cube (no spxbatch Zarr metadata); give the -o of a "
                          "finished run")
    return path


def bands_option(text: str) -> list[int]:
    """'1,2,D3' -> [1, 2, 3]."""
    from spxbatch.pipeline.config_tables import band_number

    try:
        return sorted({band_number(part) for part in text.split(",")})
    except ConfigError:
        raise argparse.ArgumentTypeError(f"bands are 1..6 or D1..D6, not {text!r}") from None


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options of a measuring run (shared by the main command and `demo`)."""
    g = p.add_argument_group("archive and data")
    g.add_argument("--archive", help="irsa (default), a base URL laid out like IRSA's "
                   "(http://127.0.0.1:8000), s3://bucket, or a local mirror directory")
    g.add_argument("--tap-url", dest="tap_url", help="plan with this TAP service instead of the archive's "
                   "own (e.g. an s3:// mirror planned by IRSA's TAP, the default for s3)")
    g.add_argument("--fetch", choices=["auto", "range", "cutout", "whole"],
                   help="how pixels are read (default auto: a cost model picks per image)")
    g.add_argument("--bands", type=bands_option, help="bands to measure, e.g. 1,2,3 or D4 (default all)")
    g.add_argument("--time-range", nargs=2, type=float, metavar=("MJD_MIN", "MJD_MAX"), dest="time_range")
    g.add_argument("--collection", action="append", dest="collections",
                   help="spherex_qr2 (wide) or spherex_qr2_deep; repeatable (default all)")
    g.add_argument("--release", action="append", dest="releases", help="e.g. qr2; repeatable (default all)")
    g.add_argument("--name-col"), g.add_argument("--ra-col"), g.add_argument("--dec-col")
    g = p.add_argument_group("photometry")
    g.add_argument("--phot", action="append", type=key_value_option, default=[], metavar="KEY=VALUE",
                   help="a photometry option, e.g. --phot aperture=fixed or --phot preset=spxquery "
                   "(`spxbatch --help-photometry` lists them all with their defaults)")
    g.add_argument("--photometry", choices=["aperture", "psf", "both"],
                   help="aperture sums, forced PSF fits with the catalog's neighbours, or both (default both)")
    g.add_argument("--flux-source", choices=["aperture", "psf"], dest="flux_source",
                   help="which measurement feeds flux, the spectra and the variability statistics (default "
                   "aperture)")
    g = p.add_argument_group("execution")
    g.add_argument("--config", help="a TOML, YAML or JSON file of options (flags override it)")
    g.add_argument("--stages", help="comma-separated subset of plan,stage,measure,assemble (default "
                   "plan,measure,assemble; 'stage' copies the data into --mirror; once staged, measure reads "
                   "the mirror with no network)")
    g.add_argument("--workers", type=int, help="local worker processes (default one per core)")
    g.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://host:port)")
    g.add_argument("--cluster", choices=["slurm", "pbs"], help="start workers as batch jobs (dask-jobqueue)")
    g.add_argument("--jobs", help="batch jobs: a count (2) or an adaptive range (1:4)")
    g.add_argument("--queue"), g.add_argument("--account")
    g.add_argument("--walltime", help="per job, e.g. 01:00:00")
    g.add_argument("--cores", type=int, help="cores per job")
    g.add_argument("--memory", help="memory per job, e.g. 8GB")
    g.add_argument("--log-directory", dest="log_directory", help="batch job logs (default RUN_DIR/logs)")
    g.add_argument("--python", help="the Python on the compute nodes (default: this interpreter)")
    g.add_argument("--images-per-task", type=int, dest="images_per_task")
    g.add_argument("--fetch-attempts", type=int, dest="fetch_attempts",
                   help="attempts per read before an image is recorded as failed (default 5)")
    g.add_argument("--no-progress", action="store_false", dest="progress", default=None)
    g.add_argument("--replan", action="store_true", help="discard the run directory's plan and measurements "
                   "and start over (needed after the catalog's names, positions or proper motions changed)")


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """RunConfig field values from parsed flags (None where not given)."""
    cluster = {k: getattr(args, k) for k in ("workers", "scheduler", "jobs", "queue", "account", "walltime",
                                              "cores", "memory", "log_directory", "python")}
    cluster["kind"] = args.cluster
    return {
        "catalog": getattr(args, "catalog", None), "output": getattr(args, "output", None),
        "archive": args.archive, "tap_url": args.tap_url, "fetch": args.fetch, "bands": args.bands,
        "time_range": args.time_range, "collections": args.collections, "releases": args.releases,
        "name_col": args.name_col, "ra_col": args.ra_col, "dec_col": args.dec_col,
        "images_per_task": args.images_per_task, "fetch_attempts": args.fetch_attempts,
        "progress": args.progress,
        "photometry": photometry_values(args), "cluster": cluster,
    }


def photometry_values(args: argparse.Namespace) -> dict[str, Any] | None:
    """The --phot KEY=VALUE options, with --photometry and --flux-source as the keys they stand for."""
    values = dict(args.phot)
    for key in ("photometry", "flux_source"):
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    return values or None


def make_config(args: argparse.Namespace):
    """Defaults < config file < flags; a rerun into an existing run directory starts from its saved config."""
    from spxbatch.pipeline.config import build_config, config_from_dict, read_config_file
    from spxbatch.pipeline.rundir import RunDir

    file_values = read_config_file(args.config) if args.config else None
    origin = f"config file {args.config}"
    cfg = build_config(file_values, flag_values(args), file_origin=origin).resolved()
    saved = RunDir(cfg.run_dir).read_config()
    if saved is None:
        return cfg
    return build_config(file_values, flag_values(args), base=config_from_dict(saved), file_origin=origin).resolved()


def stages_option(args: argparse.Namespace) -> tuple[str, ...]:
    """The stages asked for with --stages (default plan,measure,assemble)."""
    from spxbatch.pipeline.rundir import DEFAULT_STAGES

    return tuple(s.strip() for s in args.stages.split(",") if s.strip()) if args.stages else DEFAULT_STAGES


def photometry_help() -> str:
    """Every photometry option with its default (for --phot KEY=VALUE and the config file's [photometry])."""
    from spxbatch.photometry import PhotometryConfig

    lines = ["Photometry options (--phot KEY=VALUE, or a [photometry] table in the config file);",
             "--phot preset=spxquery starts from SPXQuery 0.4's settings.", ""]
    for f in dataclasses.fields(PhotometryConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  {f.name:28s} default {default!r}")
    doc = (PhotometryConfig.__doc__ or "").strip()
    return "\n".join([*lines, "", doc])

