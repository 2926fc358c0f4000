"""`spxbatch CATALOG [options]` and the subcommands demo, stage, status, plot, export and sim.

Exit codes: 0 success; 1 the run finished but some images failed (recorded in the cube); 2 bad input
(catalog, options, config file); 3 a stage asked for before the stages it needs; 4 the archive cannot be
reached; 130 interrupted. Errors are one sentence on stderr, not a traceback (SPXBATCH_DEBUG=1 shows it).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from spxbatch import __version__
from spxbatch.cli.exit_codes import EXIT_ARCHIVE, EXIT_FAILURES, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_STAGE
from spxbatch.cli.options import add_run_options, key_value_option, make_config, photometry_help, stages_option


def _staged_report(pipeline, cfg) -> int:
    """After the 'stage' stage: where the mirror is, what failed, and how to measure from it offline."""
    record = pipeline.rundir.read_json("stage.json") or {}
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


def _report(ds, cfg) -> int:
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


def cmd_run(args: argparse.Namespace) -> int:
    """The main job: plan, measure, assemble."""
    from spxbatch.pipeline.stages import Pipeline

    cfg = make_config(args)
    pipeline = Pipeline(cfg)
    ds = pipeline.run(stages_option(args), mirror=args.mirror)
    code = _staged_report(pipeline, cfg) if "stage" in stages_option(args) else EXIT_OK
    if ds is None:
        print(f"Stages {','.join(stages_option(args))} done; run directory: {cfg.run_dir}")
        return code
    return max(code, _report(ds, cfg))


def cmd_stage(args: argparse.Namespace) -> int:
    """Plan, then write exactly the data the plan needs into MIRROR_DIR (IRSA's layout, a manifest)."""
    from spxbatch.pipeline.stages import Pipeline

    mirror = args.output
    args.output = args.cube  # the run directory is the one the later measuring run uses
    cfg = make_config(args)
    pipeline = Pipeline(cfg)
    pipeline.run(("plan", "stage"), mirror=mirror)
    return _staged_report(pipeline, cfg)


def cmd_demo(args: argparse.Namespace) -> int:
    """Build the demo archive (once), serve it on loopback, and run the demo catalog against it."""
    from spxbatch.cli.demo import run_demo

    return run_demo(args, make_config, _report)


def cmd_status(args: argparse.Namespace) -> int:
    """Print which stages of a run are done, what failed and the command that finishes it."""
    from spxbatch.pipeline.status import run_status

    print(run_status(args.run_dir))
    return EXIT_OK


def cmd_sim(args: argparse.Namespace) -> int:
    """`sim make DIR` builds a simulated archive; `sim serve DIR` serves one like IRSA does."""
    if args.sim_command == "make":
        from spxbatch.sim import make_archive

        info = make_archive(args.dir, npix=args.npix, seed=args.seed, field=args.field, ra=args.ra,
                            dec=args.dec, n_sources=args.n_sources, n_visits=args.n_visits, deep=args.deep,
                            noise=not args.noiseless, release=args.release)
        print(f"Simulated {args.release} archive in {args.dir}: {len(info.files)} files; catalog {info.catalog}")
        return EXIT_OK
    from spxbatch.sim.server import run_server

    faults = dict(key_value_option(f) for f in args.faults) if args.faults else None
    index = None
    if args.index:
        import pandas as pd

        index = pd.read_parquet(args.index)
    run_server(args.dir, host=args.host, port=args.port, latency=args.latency, bandwidth=args.bandwidth,
               faults=faults, seed=args.seed, access_log=args.access_log, index=index)
    return EXIT_OK


def build_parser() -> dict[str, argparse.ArgumentParser]:
    """The main parser and one parser per subcommand."""
    epilog = ("subcommands: spxbatch demo | stage CATALOG -o MIRROR_DIR | status RUN_DIR | plot CUBE | "
              "export CUBE | qc CUBE | sim make DIR | "
              "sim serve DIR  (each has --help)\n" + (__doc__ or "").split("\n\n", 1)[1])
    main = argparse.ArgumentParser(
        prog="spxbatch", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog,
        description="Measure every SPHEREx observation of every source in CATALOG into one Zarr cube.")
    main.add_argument("catalog", help="CSV, ECSV, FITS, VOTable or Parquet catalog with name/ra/dec columns")
    main.add_argument("-o", "--output", help="the Zarr store to write (default CATALOG_STEM.zarr)")
    main.add_argument("--version", action="version", version=f"spxbatch {__version__}")
    main.add_argument("--mirror", help="where the 'stage' stage writes the data (default RUN_DIR/mirror)")
    add_run_options(main)

    stage = argparse.ArgumentParser(prog="spxbatch stage", description=(
        "Plan, then write exactly the data the plan needs (whole files, or with --fetch cutout one cutout per "
        "group of sources) into MIRROR_DIR in IRSA's layout, with a manifest; resumable. Then measure with "
        "no network: `spxbatch CATALOG --stages measure,assemble` (same -o as --cube here) or "
        "`spxbatch CATALOG --archive MIRROR_DIR`."))
    stage.add_argument("catalog", help="the catalog, as for the main command")
    stage.add_argument("-o", "--output", required=True, metavar="MIRROR_DIR", help="the mirror directory")
    stage.add_argument("--cube", help="the cube the later measuring run writes (default CATALOG_STEM.zarr): "
                       "its run directory records the mirror")
    add_run_options(stage)

    demo = argparse.ArgumentParser(prog="spxbatch demo", description=(
        "Build the embedded simulated archive (once), serve it on 127.0.0.1 and measure the demo catalog."))
    demo.add_argument("-o", "--output", help="the Zarr store (default ./spxbatch-demo/demo.zarr)")
    demo.add_argument("--dir", default="spxbatch-demo", help="where the demo archive and outputs go")
    demo.add_argument("--npix", type=int, default=512, help="image size of the demo archive")
    add_run_options(demo)

    status = argparse.ArgumentParser(prog="spxbatch status", description=cmd_status.__doc__)
    status.add_argument("run_dir")

    sim = argparse.ArgumentParser(prog="spxbatch sim", description=cmd_sim.__doc__)
    sub = sim.add_subparsers(dest="sim_command", required=True)
    make = sub.add_parser("make", help="write a simulated archive in IRSA's layout")
    make.add_argument("dir")
    make.add_argument("--npix", type=int, default=512)
    make.add_argument("--seed", type=int, default=1)
    make.add_argument("--field", default="demo")
    make.add_argument("--ra", type=float), make.add_argument("--dec", type=float)
    make.add_argument("--n-sources", type=int), make.add_argument("--n-visits", type=int)
    make.add_argument("--deep", action="store_true")
    make.add_argument("--noiseless", action="store_true")
    make.add_argument("--release", choices=("qr2", "qr3", "mixed"), default="qr2",
                      help="qr2 (QR2 files), qr3 (R7 files of QR3 exposures) or mixed (QR2 files, R7 "
                      "reprocessings of some, QR3 exposures) (default qr2)")
    serve = sub.add_parser("serve", help="serve a directory of Level-2 files like IRSA (TAP, files, cutouts)")
    serve.add_argument("dir")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    serve.add_argument("--bandwidth", type=float, help="bytes per second cap")
    serve.add_argument("--faults", action="append", metavar="KIND=RATE",
                       help="inject faults, e.g. --faults 503=0.1 --faults truncate=0.05")
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument("--access-log")
    serve.add_argument("--index", help="the image table to serve (a parquet file such as a damaged archive's "
                       "truth/served_index.parquet; default: the directory's own header index)")
    return {"main": main, "demo": demo, "stage": stage, "status": status, "sim": sim}


def _extra_commands() -> dict[str, Callable[[list[str]], int]]:
    """Subcommands that live in their own modules (plots and exports)."""
    def plot(argv: list[str]) -> int:
        from spxbatch.cli.plot import plot_main

        return plot_main(argv)

    def export(argv: list[str]) -> int:
        from spxbatch.cli.export import export_main

        return export_main(argv)

    def qc(argv: list[str]) -> int:
        from spxbatch.cli.qc import qc_main

        return qc_main(argv)

    return {"plot": plot, "export": export, "qc": qc}


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    # A batch system or `kill` ends a run with SIGTERM: treat it like Ctrl-C so that worker jobs are
    # cancelled and the run directory is left resumable; the caller's handler is put back afterwards.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str]) -> int:
    """Dispatch to the main command or a subcommand; known errors become one sentence and an exit code."""
    parsers = build_parser()
    handlers = {"demo": cmd_demo, "stage": cmd_stage, "status": cmd_status, "sim": cmd_sim}
    if argv[:1] == ["--help-photometry"]:
        print(photometry_help())
        return EXIT_OK
    try:
        if argv and argv[0] in ("plot", "export", "qc"):
            return _extra_commands()[argv[0]](argv[1:])
        if argv and argv[0] in handlers:
            args = parsers[argv[0]].parse_args(argv[1:])
            return handlers[argv[0]](args)
        args = parsers["main"].parse_args(argv)
        return cmd_run(args)
    except KeyboardInterrupt:
        print("spxbatch: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        return _fail(exc)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM handler: raise KeyboardInterrupt in the main thread."""
    raise KeyboardInterrupt


def _fail(exc: Exception) -> int:
    """One clear sentence for the known error kinds; the traceback only with SPXBATCH_DEBUG=1."""
    from spxbatch.archive.errors import ArchiveUnreachable
    from spxbatch.errors import ConfigError
    from spxbatch.pipeline.stages import StageError
    from spxbatch.plan.catalog import CatalogError

    if os.environ.get("SPXBATCH_DEBUG"):
        raise exc
    kinds = [(CatalogError, EXIT_INPUT), (ConfigError, EXIT_INPUT), (StageError, EXIT_STAGE),
             (ArchiveUnreachable, EXIT_ARCHIVE), (FileNotFoundError, EXIT_INPUT)]
    for kind, code in kinds:
        if isinstance(exc, kind):
            print(f"spxbatch: {exc}", file=sys.stderr)
            return code
    print(f"spxbatch: unexpected error {type(exc).__name__}: {exc} (set SPXBATCH_DEBUG=1 for the traceback)",
          file=sys.stderr)
    return EXIT_INPUT if isinstance(exc, ValueError) else 5


if __name__ == "__main__":
    sys.exit(main())

