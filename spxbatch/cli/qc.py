"""`spxbatch qc CUBE`: recompute the good verdict without measuring."""

from __future__ import annotations

import argparse

from spxbatch.cli.exit_codes import EXIT_OK
from spxbatch.cli.options import existing_cube, key_value_option
from spxbatch.cube.requalify import requalify


def qc_main(argv: list[str]) -> int:
    """`spxbatch qc CUBE [--phot KEY=VALUE ...] [-o OUT]`: recompute the good verdict without measuring."""
    p = argparse.ArgumentParser(prog="spxbatch qc", description=qc_main.__doc__)
    p.add_argument("cube")
    p.add_argument("--phot", action="append", type=key_value_option, default=[], metavar="KEY=VALUE",
                   help="quality rules, e.g. snr_threshold=3 or bad_flags='[\"HOT\",\"COLD\"]'")
    p.add_argument("-o", "--output", help="write a new cube instead of replacing CUBE")
    args = p.parse_args(argv)
    from spxbatch.pipeline.config import photometry_options

    rules = photometry_options(dict(args.phot), "command line")  # the same checks as a run's --phot
    ds = requalify(existing_cube(args.cube), rules, args.output)
    print(f"{int(ds['good'].sum())} of {ds.sizes['obs']} measurements good; written to {args.output or args.cube}")
    return EXIT_OK
