"""`spxbatch demo`: the whole product end to end against the embedded simulated archive, offline."""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable
from pathlib import Path

#: Marker written once the demo archive is complete, so an interrupted build is redone.
_READY = ".spxbatch-demo-ready"


def ensure_demo_archive(root: Path, npix: int) -> Path:
    """Build the demo archive under `root` unless a complete one is there; returns its catalog path."""
    from spxbatch.sim import make_archive

    marker = root / _READY
    if not marker.exists():
        print(f"Building the simulated SPHEREx archive in {root} (once) ...", flush=True)
        info = make_archive(root, npix=npix, seed=1, field="demo")
        marker.write_text(str(info.catalog))
    return Path(marker.read_text())


def run_demo(args: argparse.Namespace, make_config: Callable, report: Callable) -> int:
    """Serve the demo archive on loopback and run the pipeline on its catalog; returns the exit code."""
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
        cfg = make_config(args)
        ds = Pipeline(cfg).run()
    return report(ds, cfg)
