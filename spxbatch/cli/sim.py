"""`spxbatch sim make DIR` builds a simulated archive; `spxbatch sim serve DIR` serves one like IRSA does."""

from __future__ import annotations

import argparse

from spxbatch.cli.exit_codes import EXIT_OK
from spxbatch.cli.options import key_value_option


def sim_parser() -> argparse.ArgumentParser:
    """The parser of `spxbatch sim` and its two subcommands."""
    p = argparse.ArgumentParser(prog="spxbatch sim", description=__doc__)
    sub = p.add_subparsers(dest="sim_command", required=True)
    make = sub.add_parser("make", help="write a simulated archive in IRSA's layout")
    make.add_argument("dir")
    make.add_argument("--npix", type=int, default=512)
    make.add_argument("--seed", type=int, default=1)
    make.add_argument("--field", default="demo")
    make.add_argument("--ra", type=float)
    make.add_argument("--dec", type=float)
    make.add_argument("--n-sources", type=int)
    make.add_argument("--n-visits", type=int)
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
    serve.add_argument("--faults", action="append", type=key_value_option, metavar="KIND=RATE",
                       help="inject faults, e.g. --faults http503=0.1 --faults truncate=0.05")
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument("--access-log")
    serve.add_argument("--index", help="the image table to serve (a parquet file such as a damaged archive's "
                       "truth/served_index.parquet; default: the directory's own header index)")
    return p


def sim_main(argv: list[str]) -> int:
    """Build (`make`) or serve (`serve`) a simulated archive."""
    parser = sim_parser()
    args = parser.parse_args(argv)
    if args.sim_command == "make":
        from spxbatch.sim import make_archive

        info = make_archive(args.dir, npix=args.npix, seed=args.seed, field=args.field, ra=args.ra,
                            dec=args.dec, n_sources=args.n_sources, n_visits=args.n_visits, deep=args.deep,
                            noise=not args.noiseless, release=args.release)
        print(f"Simulated {args.release} archive in {args.dir}: {len(info.files)} files; catalog {info.catalog}")
        return EXIT_OK
    from spxbatch.sim.faults import FaultConfig
    from spxbatch.sim.server import run_server

    try:  # checked before the server starts: a misspelt setting is bad input (exit 2), not a crash
        faults = FaultConfig.coerce(dict(args.faults)) if args.faults else None
    except (TypeError, ValueError) as exc:
        parser.error(f"--faults: {exc}")
    index = None
    if args.index:
        import pandas as pd

        index = pd.read_parquet(args.index)
    run_server(args.dir, host=args.host, port=args.port, latency=args.latency, bandwidth=args.bandwidth,
               faults=faults, seed=args.seed, access_log=args.access_log, index=index)
    return EXIT_OK
