"""`spxbatch export CUBE --format csv|parquet|votable -o PATH`."""

from __future__ import annotations

import argparse

from spxbatch.cli.exit_codes import EXIT_OK
from spxbatch.cli.options import existing_cube
from spxbatch.cube.export import export_csv, export_parquet, export_votable


def export_main(argv: list[str]) -> int:
    """`spxbatch export CUBE --format csv|parquet|votable -o PATH`."""
    from spxbatch.cube.store import open_cube

    p = argparse.ArgumentParser(prog="spxbatch export", description="Export a cube's measurements.")
    p.add_argument("cube")
    p.add_argument("--format", required=True, choices=["csv", "parquet", "votable"])
    p.add_argument("-o", "--output", required=True, help="a directory for csv, a file otherwise")
    args = p.parse_args(argv)
    ds = open_cube(existing_cube(args.cube))  # csv and parquet read it block by block
    if args.format == "votable":
        ds = ds.load()
    writers = {"csv": export_csv, "parquet": export_parquet, "votable": export_votable}
    out = writers[args.format](ds, args.output)
    n = len(out) if isinstance(out, list) else 1
    print(f"exported {ds.sizes['obs']} measurements to {args.output} ({n} file{'s' if n != 1 else ''})")
    return EXIT_OK

