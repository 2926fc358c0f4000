"""Bytes, requests and time of each fetch strategy on a simulated 2040x2040 field, for 10/100/1000 sources.

Builds (or reuses) a simulated archive with full-size detectors, serves it on loopback, and fetches the
neighbourhoods of N catalog sources from one image with every strategy, next to the whole-file size and what
the cost model ('auto') picks. 'cold' is a fresh process (header scan, PSF and calibration reads included);
'warm' is the steady state of a long run: another image of the same detector after one was fetched, so the
PSF cube and the calibration blocks are cached but the image's own header scan is not.

    python benchmarks/fetch_strategies.py [--root DIR] [--latency 0.02] [--bandwidth 0] [--counts 10,100,1000]
        [--cutout-cold-max 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from spxbatch.fetch.cache import FetchCache
from spxbatch.fetch.fetch import FetchOptions, fetch_image
from spxbatch.level2.constants import DETECTOR_NPIX
from spxbatch.level2.naming import IBE_ROOT
from spxbatch.photometry import PhotometryConfig, neighbourhood_halfsize
from spxbatch.sim import make_archive
from spxbatch.sim.server import serve_archive

#: (label, strategy, options changes): 'range' lets the cost model pick boxes or strips; 'strips' forces strips.
STRATEGIES = (("range", "range", {}), ("strips", "range", {"boxes": False}), ("cutout", "cutout", {}),
              ("whole", "whole", {}), ("auto", "auto", {}))


def build(root: Path) -> Path:
    """A one-exposure 2040-px archive (a few files) with ~1500 sources; reused when already there."""
    if not (root / "truth" / "measurements.parquet").exists():
        make_archive(root, npix=DETECTOR_NPIX, n_visits=1, n_sources=1500, seed=11)
    return root


def plan_row(srv, relpath: str) -> dict:
    row = srv.index.set_index("relpath").loc[relpath]
    return {"url": srv.file_url(relpath), "relpath": f"{IBE_ROOT}/{relpath}", "obs_id": row["obs_id"],
            "detector": int(row["detector"]), "version": row["version"], "size_bytes": int(row["size_bytes"]),
            "nx": int(row["nx"]), "ny": int(row["ny"])}


def layout(res, nx: int) -> str:
    """What the regions are: one full frame, full-width strips, boxes, or cutouts."""
    if not res.regions:
        return "-"
    if res.strategy == "cutout":
        return "cutouts"
    if len(res.regions) == 1 and res.regions[0][0].shape == (nx, nx):
        return "frame"
    return "strips" if all(r.shape[1] == nx for r, _ in res.regions) else "boxes"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "spxbatch-bench-fetch")
    ap.add_argument("--latency", type=float, default=0.02, help="server latency per request (s)")
    ap.add_argument("--bandwidth", type=float, default=0.0, help="server bandwidth cap (bytes/s, 0 = none)")
    ap.add_argument("--counts", default="10,100,1000")
    ap.add_argument("--cutout-cold-max", type=int, default=100)
    args = ap.parse_args()

    root = build(args.root)
    truth = pd.read_parquet(root / "truth" / "measurements.parquet")
    catalog = pd.read_csv(root / "truth" / "catalog.csv").set_index("name")
    truth = truth.join(catalog[["ra", "dec"]], on="name")
    # the two processing versions of one detector image: warm up on one, measure the other
    files = truth.groupby("relpath").size().sort_values(ascending=False).index
    target, warmup = next((f, g) for f in files for g in files if f != g and f.split("/")[4] == g.split("/")[4])
    halfsize = neighbourhood_halfsize(PhotometryConfig())
    options = FetchOptions(latency_s=max(args.latency, 1e-3),
                           bandwidth_bps=args.bandwidth or FetchOptions().bandwidth_bps)
    rng = np.random.default_rng(0)
    rows = []
    with serve_archive(root, latency=args.latency, bandwidth=args.bandwidth or None) as srv:
        image = plan_row(srv, target)
        whole_size = image["size_bytes"]
        on = truth[truth["relpath"] == target]
        for n in (int(c) for c in args.counts.split(",")):
            pick = on.iloc[rng.choice(len(on), size=min(n, len(on)), replace=False)]
            ra, dec = pick["ra"].to_numpy(), pick["dec"].to_numpy()
            for label, strategy, changes in STRATEGIES:
                opts = replace(options, **changes)
                # hundreds of 5 MB cutouts take minutes on loopback: cold (= warm + PSF and calibration
                # reads) is measured up to --cutout-cold-max sources only
                cold = strategy != "cutout" or ra.size <= args.cutout_cold_max
                for state in ("cold", "warm") if cold else ("warm",):
                    cache = FetchCache()
                    if state == "warm":
                        w = truth[truth["relpath"] == warmup]
                        fetch_image(plan_row(srv, warmup), w["ra"].to_numpy(), w["dec"].to_numpy(),
                                    strategy="range", halfsize=halfsize, cache=cache, options=options)
                    t0 = time.monotonic()
                    res = fetch_image(image, ra, dec, strategy=strategy, halfsize=halfsize, cache=cache,
                                      options=opts)
                    rows.append({
                        "sources": ra.size, "strategy": label, "state": state, "picked": res.strategy,
                        "layout": layout(res, image["nx"]),
                        "MB": res.bytes_read / 1e6, "requests": res.requests,
                        "% of whole file": 100.0 * res.bytes_read / whole_size,
                        "regions": len(res.regions), "seconds": time.monotonic() - t0,
                        "error": res.error or "",
                    })
                    print(f"  {ra.size:5d} {label:6s} {state}: {res.bytes_read / 1e6:8.2f} MB "
                          f"{res.requests:5d} req  -> {res.strategy}", flush=True)
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 160)
    print(f"\nimage {target} ({whole_size / 1e6:.1f} MB, {image['nx']}x{image['ny']}), "
          f"neighbourhood half-size {halfsize} px, server latency {args.latency} s")
    print(table.drop(columns="error").to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if table["error"].astype(bool).any():
        print("\nerrors:\n" + "\n".join(table.loc[table["error"].astype(bool), "error"]))


if __name__ == "__main__":
    main()
