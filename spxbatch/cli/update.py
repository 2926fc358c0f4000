"""`spxbatch update CUBE`: measure only the images the archive added (or reprocessed) since CUBE was made, and
swap the updated cube in atomically; `--dry-run` says what would be fetched."""

from __future__ import annotations

import argparse

from spxbatch.cli.exit_codes import EXIT_CODES_HELP, EXIT_FAILURES, EXIT_OK
from spxbatch.cli.options import positive_int


def update_parser() -> argparse.ArgumentParser:
    """The parser of `spxbatch update`."""
    p = argparse.ArgumentParser(prog="spxbatch update", epilog=EXIT_CODES_HELP, description=(
        "Plan CUBE's catalog and options again against the archive as it is now, measure only the images that "
        "are new, that a newer processing supersedes, that failed before, or (with --catalog) that hold new "
        "sources, and replace CUBE atomically with a cube equal to a fresh run. Interrupted, rerun the same "
        "command: it resumes. The old CUBE is untouched until the end."))
    p.add_argument("cube", help="a cube spxbatch wrote (the -o of a finished run)")
    p.add_argument("--archive", help="where to look (default: the cube's own archive)")
    p.add_argument("--catalog", help="a catalog whose first rows are the cube's sources, unchanged, and whose "
                   "further rows are new sources to measure on every image")
    window = p.add_mutually_exclusive_group()
    window.add_argument("--since", metavar="DATE", help="look only at images taken since DATE (ISO, UTC: 2026-07-20)")
    window.add_argument("--time-range", nargs=2, type=float, metavar=("MJD_MIN", "MJD_MAX"), dest="time_range",
                        help="look only at images of this MJD range")
    p.add_argument("--dry-run", action="store_true", help="print what would be fetched; change nothing")
    p.add_argument("--workers", type=positive_int, help="local worker processes (default one per core)")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://host:port)")
    p.add_argument("--no-progress", action="store_false", dest="progress", default=None)
    return p


def update_main(argv: list[str]) -> int:
    """`spxbatch update CUBE [--archive A] [--catalog BIGGER] [--since DATE | --time-range A B] [--dry-run]`."""
    args = update_parser().parse_args(argv)
    from spxbatch.pipeline.update import update_cube

    cluster = {k: getattr(args, k) for k in ("workers", "scheduler") if getattr(args, k) is not None}
    options = {**({"cluster": cluster} if cluster else {}),
               **({"progress": args.progress} if args.progress is not None else {})}
    result = update_cube(args.cube, archive=args.archive, catalog=args.catalog, since=args.since,
                         time_range=args.time_range, dry_run=args.dry_run, **options)
    print(report(result, args.dry_run))
    return EXIT_FAILURES if result.failed_images else EXIT_OK


def report(result, dry_run: bool) -> str:
    """What the update found (and, unless a dry run, did), in a few lines; one line when nothing is new."""
    k = result.kinds
    if result.resumed_swap:
        return f"{result.cube}: finished the interrupted update (the updated cube is in place)"
    if result.up_to_date:
        return (f"{result.cube} is up to date: no new or reprocessed images among the {sum(k.values())} planned "
                "(nothing fetched)")
    if dry_run:
        size = f"{result.fetch_bytes / 1e6:.1f} MB at most (whole files)"
        if result.unknown_sizes:
            size += f"; size unknown for {result.unknown_sizes} image(s)"
    else:
        size = f"{result.measured.get('bytes', 0) / 1e6:.1f} MB read"
    lines = [f"{'Would fetch' if dry_run else 'Fetched'} {result.to_measure} image(s): {k['new']} new, "
             f"{k['superseding']} reprocessed (superseding the measured processing), {k['retry']} that failed "
             f"before, {k['new_sources']} holding new sources; {size}",
             f"Kept from the cube: {k['old'] + result.kept_unplanned} image(s); sources added: {result.sources_added}"]
    lines += [f"  {line}" for line in result.to_fetch]
    if not dry_run:
        lines.append(f"Cube updated: {result.cube}" + (f" ({result.failed_images} image(s) failed; rerun to "
                                                       "retry them)" if result.failed_images else ""))
    return "\n".join(lines)
