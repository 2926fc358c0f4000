"""`spxbatch demo`: the whole product end to end against the embedded simulated archive, offline."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

from spxbatch.cli.options import add_run_options, make_config
from spxbatch.cli.run import cube_report

#: Marker written once the demo archive is complete (with what it was built from), so an interrupted
#: build is redone and an archive built with other parameters is replaced.
_READY = ".spxbatch-demo-ready"
#: The demo archive's release mix: what IRSA serves today (QR2 files, R7 reprocessings of some, QR3).
DEMO_RELEASE = "mixed"


def demo_parser() -> argparse.ArgumentParser:
    """The parser of `spxbatch demo`."""
    p = argparse.ArgumentParser(prog="spxbatch demo", description=(
        "Build the embedded simulated archive (once), serve it on 127.0.0.1 and measure the demo catalog."))
    p.add_argument("-o", "--output", help="the Zarr store (default ./spxbatch-demo/demo.zarr)")
    p.add_argument("--dir", default="spxbatch-demo", help="where the demo archive and outputs go")
    p.add_argument("--npix", type=int, default=512, help="image size of the demo archive")
    add_run_options(p)
    return p


def ensure_demo_archive(root: Path, npix: int) -> Path:
    """Build the demo archive under `root` unless a complete one of the same parameters is there;
    returns its catalog path."""
    from spxbatch.sim import make_archive

    marker = root / _READY
    params = {"npix": npix, "release": DEMO_RELEASE}
    built = _read_marker(marker)
    if built is not None and {k: built.get(k) for k in params} == params:
        return Path(built["catalog"])
    if built is not None:  # a complete demo archive of other parameters (or an older spxbatch): replace it
        shutil.rmtree(root)
    print(f"Building the simulated SPHEREx archive in {root} (once): QR2 files, R7 reprocessings of some "
          "and QR3 exposures ...", flush=True)
    info = make_archive(root, npix=npix, seed=1, field="demo", release=DEMO_RELEASE)
    marker.write_text(json.dumps({**params, "catalog": str(info.catalog)}))
    return info.catalog


def _read_marker(marker: Path) -> dict | None:
    """What a complete demo archive was built from ({} for an older spxbatch's plain marker), or None."""
    if not marker.exists():
        return None
    try:
        built = json.loads(marker.read_text())
    except ValueError:
        return {}
    return built if isinstance(built, dict) else {}


def demo_config(cfg):
    """The demo's run options: QR3's l3_flux_corrections applied to the QR2-processed files, as IRSA advises
    when combining them with R7 data (the demo archive mixes both)."""
    return dataclasses.replace(cfg, fetch_options=dataclasses.replace(cfg.fetch_options, l3_flux_correction=True))


def demo_main(argv: list[str]) -> int:
    """Build the demo archive (once), serve it on loopback, and run the demo catalog against it."""
    args = demo_parser().parse_args(argv)
    from spxbatch.pipeline.stages import Pipeline
    from spxbatch.sim.server import serve_archive

    base = Path(args.dir).absolute()
    catalog = ensure_demo_archive(base / "archive", args.npix)
    args.catalog = str(catalog)
    if not args.output:
        args.output = str(base / "demo.zarr")
    with serve_archive(base / "archive") as server:
        print(f"Simulated archive serving at {server.url} (TAP at {server.url}/TAP)", flush=True)
        if not args.archive:
            args.archive = server.url
        cfg = make_config(args)
        # The server's port is new each time, so a demo always measures afresh.
        for old in (Path(cfg.output), Path(cfg.run_dir)):
            shutil.rmtree(old, ignore_errors=True)
        cfg = demo_config(make_config(args))
        ds = Pipeline(cfg, replan=args.replan).run()
    return cube_report(ds, cfg)
