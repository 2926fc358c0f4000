"""`spxbatch plot CUBE`: the run summary and one PNG per source."""

from __future__ import annotations

import argparse
from pathlib import Path

from spxbatch.cli.exit_codes import EXIT_OK
from spxbatch.cli.options import existing_cube, positive_int
from spxbatch.figures.batch import plot_cube


def plot_main(argv: list[str]) -> int:
    """`spxbatch plot CUBE [--source NAME ...|--all] [-o DIR] [--mag]`."""
    p = argparse.ArgumentParser(prog="spxbatch plot", description="Draw per-source and summary figures.")
    p.add_argument("cube")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--source", action="append", help="a source name (repeatable)")
    who.add_argument("--all", action="store_true", help="every source (the default without --source)")
    p.add_argument("-o", "--outdir", help="where PNGs go (default CUBE_STEM_plots)")
    p.add_argument("--mag", action="store_true", help="AB magnitudes instead of µJy")
    p.add_argument("--workers", type=positive_int, help="processes drawing figures (default: one per core)")
    args = p.parse_args(argv)
    existing_cube(args.cube)
    outdir = args.outdir or str(Path(args.cube).with_suffix("")) + "_plots"
    paths = plot_cube(args.cube, args.source, outdir, args.mag, args.workers)
    print(f"{len(paths)} figures written to {outdir}")
    return EXIT_OK

