"""`spxbatch CATALOG [options]` (plan, measure, assemble; any subset of stages) and `spxbatch stage CATALOG -o
MIRROR_DIR`, with what they print when they finish."""

from __future__ import annotations

import argparse
import shlex
from typing import TYPE_CHECKING

from spxbatch import __version__
from spxbatch.cli.exit_codes import EXIT_CODES_HELP, EXIT_FAILURES, EXIT_OK
from spxbatch.cli.options import add_run_options, make_config, stages_option

if TYPE_CHECKING:  # heavy imports, not needed for --help
    import xarray as xr

    from spxbatch.pipeline.config import RunConfig

#: The subcommands, for the main command's help.
SUBCOMMANDS_HELP = ("subcommands: spxbatch demo | stage CATALOG -o MIRROR_DIR | status RUN_DIR | plot CUBE | "
                    "export CUBE | qc CUBE | update CUBE | sim make DIR | sim serve DIR  (each has --help)")


def run_parser() -> argparse.ArgumentParser:
    """The parser of the main command."""
    p = argparse.ArgumentParser(
        prog="spxbatch", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"{SUBCOMMANDS_HELP}\n{EXIT_CODES_HELP}",
        description="Measure every SPHEREx observation of every source in CATALOG into one Zarr cube.")
    p.add_argument("catalog", help="CSV, ECSV, FITS, VOTable or Parquet catalog with name/ra/dec columns")
    p.add_argument("-o", "--output", help="the Zarr store to write (default CATALOG_STEM.zarr)")
    p.add_argument("--version", action="version", version=f"spxbatch {__version__}")
    p.add_argument("--mirror", help="where the 'stage' stage writes the data (default RUN_DIR/mirror)")
    add_run_options(p)
    return p


def stage_parser() -> argparse.ArgumentParser:
    """The parser of `spxbatch stage`."""
    p = argparse.ArgumentParser(prog="spxbatch stage", description=(
        "Plan, then write exactly the data the plan needs (whole files, or with --fetch cutout one cutout per "
        "group of sources) into MIRROR_DIR in IRSA's layout, with a manifest; resumable. Then measure with "
        "no network: `spxbatch CATALOG --stages measure,assemble` (same -o as --cube here) or "
        "`spxbatch CATALOG --archive MIRROR_DIR`."))
    p.add_argument("catalog", help="the catalog, as for the main command")
    p.add_argument("-o", "--output", required=True, metavar="MIRROR_DIR", help="the mirror directory")
    p.add_argument("--cube", help="the cube the later measuring run writes (default CATALOG_STEM.zarr): "
                   "its run directory records the mirror")
    add_run_options(p)
    return p


def run_main(argv: list[str]) -> int:
    """The main job: plan, measure, assemble (or the stages given)."""
    args = run_parser().parse_args(argv)
    from spxbatch.pipeline.stages import Pipeline

    stages = stages_option(args)
    cfg = make_config(args)
    pipeline = Pipeline(cfg, replan=args.replan)
    ds = pipeline.run(stages, mirror=args.mirror, in_memory=False)  # the report reads a few variables
    code = staged_report(pipeline.rundir.read_json("stage.json") or {}, cfg) if "stage" in stages else EXIT_OK
    if ds is None:
        print(f"Stages {','.join(stages)} done; run directory: {cfg.run_dir}")
        return code
    return max(code, cube_report(ds, cfg))


def stage_main(argv: list[str]) -> int:
    """Plan, then write exactly the data the plan needs into MIRROR_DIR (IRSA's layout, a manifest)."""
    args = stage_parser().parse_args(argv)
    from spxbatch.pipeline.stages import Pipeline

    mirror = args.output
    args.output = args.cube  # the run directory is the one the later measuring run uses
    cfg = make_config(args)
    pipeline = Pipeline(cfg, replan=args.replan)
    pipeline.run(("plan", "stage"), mirror=mirror)
    return staged_report(pipeline.rundir.read_json("stage.json") or {}, cfg)


def staged_report(record: dict, cfg: RunConfig) -> int:
    """After the 'stage' stage (its record in the run directory): where the mirror is, what failed, and how
    to measure from it offline."""
    failures = record.get("failures", [])
    print(f"Mirror: {record.get('mirror')} ({'complete' if not failures else f'{len(failures)} failed'})")
    for reason in failures[:5]:
        print(f"  failed: {reason}")
    if failures:
        print("Rerun the same command to fetch what is missing.")
        return EXIT_FAILURES
    print("Measure from it (no network needed; the run directory remembers the mirror):")
    print("  " + shlex.join(["spxbatch", str(cfg.catalog), "-o", str(cfg.output), "--stages", "measure,assemble"]))
    return EXIT_OK


def cube_report(ds: xr.Dataset, cfg: RunConfig) -> int:
    """Print where the cube is and how to open it; exit 1 when some images failed."""
    n_fail_src = int((ds["status"].values == "failed").sum())
    print(f"Cube written: {cfg.output}")
    print(f"  {ds.sizes['source']} sources, {ds.sizes['obs']} measurements, "
          f"{int((ds['status'].values == 'ok').sum())} sources measured, {n_fail_src} failed, "
          f"{ds.sizes['failure']} unmeasured (source, image) pairs recorded")
    print("Open it with:")
    print(f"  import spxbatch; ds = spxbatch.open_cube({cfg.output!r})")
    print(f"  # or: import xarray as xr; ds = xr.open_zarr({cfg.output!r})")
    print("Figures of every source: " + shlex.join(["spxbatch", "plot", str(cfg.output)]))
    failed_images = any(str(r).startswith("failed") for r in ds["failure_reason"].values)
    return EXIT_FAILURES if failed_images else EXIT_OK
