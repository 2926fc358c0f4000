"""Range reads against whole-file reads of R7 (QR3) files over loopback HTTP: bytes, requests and time per
image and per measurement, next to the physical bound, and a check that both give bit-identical fluxes.

Builds (or reuses) a simulated QR3 archive of full-size 2040 x 2040 detectors (two exposures: eight R7 files
with tile-compressed FLAGS and an EPSF table; two detectors hold ~1,460 sources on one exposure and a few on
the other), serves it on loopback, plans the catalog through TAP as a run does, then fetches and measures
those two full images with `--fetch range` and `--fetch whole` for 10, 100 and 1000 of their sources. 'cold'
is a fresh cache (the first image of a detector on a worker: header scan, ePSF table, calibration reads);
'warm' is the steady state of a long run: the cache primed by the other image of the same detector, so its
ePSF and the calibration blocks already read are cached but the image's own header scan is not; 'second run'
is a fresh process of a later run: nothing in memory, but the persistent product store (`fetch.store`) filled
by an earlier run of the image (its PSF and calibration bytes). Bytes are the server's: the level-2 file's
(against its size) and the calibration products' (and listings') apart. The physical bound is the bytes the
measurements themselves need: the union of the pixels within each source's background reach (aperture +
annulus) in the four planes (IMAGE, FLAGS as decompressed int32, VARIANCE, ZODI; 16 bytes a pixel) plus one
EPSF table row per zone used; headers excluded.

    python benchmarks/r7_range_reads.py [--root DIR] [--npix 2040] [--counts 10,100,1000] [--repeats 3]
        [--latency 0.02] [--bandwidth 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
from bounds import bound_bytes, psf_zone_bytes

from spxbatch.fetch.cache import FetchCache
from spxbatch.fetch.store import ProductStore
from spxbatch.level2.constants import DETECTOR_NPIX
from spxbatch.level2.naming import IBE_ROOT
from spxbatch.photometry import PhotometryConfig
from spxbatch.pipeline.config import RunConfig
from spxbatch.pipeline.jobs import ImageJob, image_jobs
from spxbatch.pipeline.measure import measure_image
from spxbatch.pipeline.stages import Pipeline
from spxbatch.sim import make_archive
from spxbatch.sim.server import serve_archive


def build(root: Path, npix: int) -> Path:
    """A two-exposure QR3 archive (eight R7 files); reused when already there."""
    if not (root / "truth" / "measurements.parquet").exists():
        make_archive(root, npix=npix, n_visits=2, n_sources=1500, seed=11, release="qr3")
    return root


def epsf_row_bytes(root: Path, job: ImageJob) -> int:
    """The byte length of one row (one zone) of the image's EPSF table."""
    return psf_zone_bytes(root / job.image["relpath"].split(f"{IBE_ROOT}/")[-1])


def subsample(job: ImageJob, count: int) -> ImageJob:
    """The image with `count` of its sources (a fixed random choice)."""
    pick = np.sort(np.random.default_rng(0).choice(job.source_index.size, size=count, replace=False))
    return ImageJob(job.image, job.source_index[pick], job.ra[pick], job.dec[pick])


def measure_once(job: ImageJob, fetch: str, phot: PhotometryConfig, options, srv, state: str,
                 primer: ImageJob) -> tuple[pd.DataFrame, dict]:
    """Fetch and measure one image from a fresh cache ('warm': primed with `primer`; 'second run': with a
    product store that a previous run of the same image filled): its measurements, and the server's bytes of
    its file and of everything else, its requests and seconds."""
    with tempfile.TemporaryDirectory() as store_dir:
        store = ProductStore(store_dir, max_bytes=10**10) if state == "second run" else None
        if state == "second run":
            measure_image(job, fetch, phot, options, FetchCache(store=store))
        cache = FetchCache(store=store)
        if state == "warm":
            measure_image(primer, fetch, phot, options, cache)
        return _measured(job, fetch, phot, options, srv, cache)


def _measured(job: ImageJob, fetch: str, phot: PhotometryConfig, options, srv,
              cache: FetchCache) -> tuple[pd.DataFrame, dict]:
    """Measure one image through `cache`: the measurements and the server's figures of that call."""
    srv.clear_log()
    t0 = time.monotonic()
    table, meta = measure_image(job, fetch, phot, options, cache)
    seconds = time.monotonic() - t0
    if meta["error"]:
        raise RuntimeError(f"{fetch}: image {meta['image_id']}: {meta['error']}")
    path = urlparse(job.image["url"]).path
    log = srv.access_log
    level2 = sum(e["bytes"] for e in log if e["path"] == path)
    return table.sort_values("source_index").reset_index(drop=True), {
        "seconds": seconds, "requests": meta["requests"], "level2_bytes": level2,
        "other_bytes": sum(e["bytes"] for e in log) - level2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "spxbatch-bench-r7")
    ap.add_argument("--npix", type=int, default=DETECTOR_NPIX)
    ap.add_argument("--counts", default="10,100,1000", help="sources measured per image")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--latency", type=float, default=0.02, help="server latency per request (s)")
    ap.add_argument("--bandwidth", type=float, default=0.0, help="server bandwidth cap (bytes/s, 0 = none)")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]

    t0 = time.monotonic()
    root = build(args.root, args.npix)
    print(f"archive {root} ready in {time.monotonic() - t0:.0f} s", flush=True)
    rows, identical, reference = [], True, {}
    server = serve_archive(root, latency=args.latency, bandwidth=args.bandwidth or None)
    with server as srv, tempfile.TemporaryDirectory() as tmp:
        config = RunConfig(catalog=str(root / "truth" / "catalog.csv"), output=f"{tmp}/plan.zarr",
                           archive=srv.url, progress=False)
        pipeline = Pipeline(config)
        plan = pipeline.plan()
        jobs = list(image_jobs(plan, pipeline.catalog))
        phot, options = pipeline.photometry_config, pipeline.config.fetch_options_for(None)
        sizes = plan.images.set_index("image_id")["size_bytes"]
        # the images holding enough sources whose detector has another image to warm the cache with
        primers = {int(t.image["image_id"]): p for t in jobs for p in jobs
                   if t.source_index.size >= max(counts) and p is not t and p.image["detector"] == t.image["detector"]}
        targets = [j for j in jobs if int(j.image["image_id"]) in primers]
        for count in counts:
            for fetch in ("range", "whole"):
                for state in ("cold", "warm", "second run"):
                    per_image, tables = [], []
                    for target in targets:
                        image_id = int(target.image["image_id"])
                        passes = [measure_once(subsample(target, count), fetch, phot, options, srv, state,
                                               primers[image_id])
                                  for _ in range(args.repeats)]
                        tables += [t for t, _ in passes]
                        totals = passes[0][1]
                        per_image.append({**totals, "file": float(sizes.loc[image_id]),
                                          "seconds": float(np.median([t["seconds"] for _, t in passes])),
                                          "measured": int(passes[0][0]["measured"].sum()),
                                          "bound": bound_bytes(passes[0][0], (args.npix, args.npix), phot,
                                                               epsf_row_bytes(root, target))})
                    identical &= _same_numbers(tables, reference.setdefault(count, tables))
                    rows.append(_row(count, fetch, state, pd.DataFrame(per_image)))
                    print(f"  {count:5d} sources/image {fetch:5s} {state}: {rows[-1]['MB / image']:7.2f} MB "
                          f"+ {rows[-1]['calibration MB / image']:6.2f} MB calibration, "
                          f"{rows[-1]['seconds / image']:.2f} s", flush=True)
    table = pd.DataFrame(rows)
    table["x bound"] = table["kB / measurement"] / table["bound kB / measurement"]
    whole = table[table["reads"] == "whole"].set_index(["sources / image", "cache"])["kB / measurement"]
    table["x whole"] = table["kB / measurement"] / whole.loc[list(zip(table["sources / image"], table["cache"],
                                                                      strict=True))].to_numpy()
    pd.set_option("display.width", 220)
    print(f"\n{len(targets)} R7 images of {args.npix} x {args.npix} px "
          f"({sizes.loc[[int(t.image['image_id']) for t in targets]].mean() / 1e6:.1f} MB a file), server latency "
          f"{args.latency} s, bandwidth {args.bandwidth / 1e6 or 'unlimited'} MB/s; per image, time the median "
          f"of {args.repeats}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}", na_rep="-"))
    print(f"\nrange and whole-file measurements bit-identical (flux, flux_err, flux_aperture, background; every "
          f"count, cache state and repeat): {identical}")
    if not identical:
        raise SystemExit(1)


def _same_numbers(tables: list[pd.DataFrame], reference: list[pd.DataFrame]) -> bool:
    """Whether two lists of measurements (the same images, sources and repeats) are equal, bit for bit."""
    cols = ("flux", "flux_err", "flux_aperture", "background")
    return all(np.array_equal(t[c].to_numpy(), r[c].to_numpy(), equal_nan=True)
               for t, r in zip(tables, reference, strict=True) for c in cols)


def _row(count: int, reads: str, state: str, per_image: pd.DataFrame) -> dict:
    """One line of the table from the per-image figures."""
    n_meas = per_image["measured"].sum()
    return {"sources / image": count, "reads": reads, "cache": state, "measurements": int(n_meas),
            "kB / measurement": per_image["level2_bytes"].sum() / n_meas / 1e3,
            "bound kB / measurement": per_image["bound"].sum() / n_meas / 1e3,
            "MB / image": per_image["level2_bytes"].mean() / 1e6,
            "% of file": 100 * (per_image["level2_bytes"] / per_image["file"]).mean(),
            "requests / image": per_image["requests"].mean(),
            "calibration MB / image": per_image["other_bytes"].mean() / 1e6,
            "seconds / image": per_image["seconds"].mean()}


if __name__ == "__main__":
    main()
