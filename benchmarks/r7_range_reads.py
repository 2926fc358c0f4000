"""Range reads against whole-file reads of R7 (QR3) files over loopback HTTP: bytes, requests and time per
image and per measurement, next to the physical bound, and a check that both give bit-identical fluxes.

Builds (or reuses) a simulated QR3 archive of full-size 2040 x 2040 detectors (two exposures: eight R7
files with tile-compressed FLAGS and an EPSF table), serves it on loopback, plans the catalog through TAP
as a run does, then fetches and measures every planned image with `--fetch range` and `--fetch whole`,
for 10, 100 and 1000 of each image's sources, as one worker does (one fresh cache per repeat, so the
calibration products are read once per detector). Bytes are the server's: level-2 file bytes per image
(against the file's size) apart from the calibration bytes of the whole pass. The physical bound is the
bytes the measurements themselves need: the union of the pixels within each source's background reach
(aperture + annulus) in the four planes (IMAGE, FLAGS as decompressed int32, VARIANCE, ZODI; 16 bytes a
pixel) plus one EPSF table row per zone used; headers excluded.

    python benchmarks/r7_range_reads.py [--root DIR] [--npix 2040] [--counts 10,100,1000] [--repeats 3]
        [--latency 0.02] [--bandwidth 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits

from spxbatch.fetch.cache import FetchCache
from spxbatch.level2.constants import DETECTOR_NPIX
from spxbatch.level2.naming import IBE_ROOT
from spxbatch.photometry import PhotometryConfig
from spxbatch.photometry.aperture import background_extent
from spxbatch.pipeline.config import RunConfig
from spxbatch.pipeline.jobs import ImageJob, image_jobs
from spxbatch.pipeline.measure import measure_image
from spxbatch.pipeline.stages import Pipeline
from spxbatch.sim import make_archive
from spxbatch.sim.server import serve_archive

#: Planes a measurement reads, at 4 bytes a pixel each (FLAGS counted decompressed).
PLANE_BYTES = 4 * 4


def build(root: Path, npix: int) -> Path:
    """A two-exposure QR3 archive (eight R7 files, ~1,450 sources each); reused when already there."""
    if not (root / "truth" / "measurements.parquet").exists():
        make_archive(root, npix=npix, n_visits=2, n_sources=1500, seed=11, release="qr3")
    return root


def bound_bytes(table: pd.DataFrame, shape: tuple[int, int], phot: PhotometryConfig, epsf_row_bytes: int) -> int:
    """The bytes one image's measurements need: pixels within each source's background reach (union over
    its sources) in the four planes, plus one EPSF table row per zone used."""
    m = table[table["measured"].astype(bool)]
    need = np.zeros(shape, dtype=bool)
    for x, y, r in zip(m["x"], m["y"], m["aperture_radius"], strict=True):
        reach = background_extent(phot, float(r)) + 0.5
        x0, x1 = max(int(x - reach), 0), min(int(x + reach) + 2, shape[1])
        y0, y1 = max(int(y - reach), 0), min(int(y + reach) + 2, shape[0])
        yy, xx = np.mgrid[y0:y1, x0:x1]
        need[y0:y1, x0:x1] |= np.hypot(xx - x, yy - y) <= reach
    return int(need.sum()) * PLANE_BYTES + m["psf_zone"].nunique() * epsf_row_bytes


def epsf_row_bytes(root: Path, jobs: list[ImageJob]) -> dict[int, int]:
    """Image id -> the byte length of one row (one zone) of its file's EPSF table."""
    out = {}
    for job in jobs:
        with fits.open(root / job.image["relpath"].split(f"{IBE_ROOT}/")[-1]) as hdul:
            out[int(job.image["image_id"])] = int(hdul["EPSF"].header["NAXIS1"])
    return out


def subsample(jobs: list[ImageJob], count: int) -> list[ImageJob]:
    """Each image with `count` of its sources (a fixed random choice; all when it has fewer)."""
    rng = np.random.default_rng(0)
    out = []
    for job in jobs:
        pick = np.sort(rng.choice(job.source_index.size, size=min(count, job.source_index.size), replace=False))
        out.append(ImageJob(job.image, job.source_index[pick], job.ra[pick], job.dec[pick]))
    return out


def measure_all(jobs: list[ImageJob], fetch: str, phot: PhotometryConfig, options, srv) -> tuple[pd.DataFrame, dict]:
    """Fetch and measure every image from one fresh cache: the measurements, and the totals with the
    server's bytes split into level-2 files and everything else (calibration products, listings)."""
    cache = FetchCache()
    srv.clear_log()
    tables, requests = [], 0
    t0 = time.monotonic()
    for job in jobs:
        table, meta = measure_image(job, fetch, phot, options, cache)
        if meta["error"]:
            raise RuntimeError(f"{fetch}: image {meta['image_id']}: {meta['error']}")
        tables.append(table)
        requests += meta["requests"]
    seconds = time.monotonic() - t0
    log = srv.access_log
    level2 = sum(e["bytes"] for e in log if "/level2/" in e["path"])
    totals = {"seconds": seconds, "requests": requests, "level2_bytes": level2,
              "other_bytes": sum(e["bytes"] for e in log) - level2}
    out = pd.concat(tables, ignore_index=True).sort_values(["image_id", "source_index"], kind="stable")
    return out.reset_index(drop=True), totals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "spxbatch-bench-r7")
    ap.add_argument("--npix", type=int, default=DETECTOR_NPIX)
    ap.add_argument("--counts", default="10,100,1000", help="sources measured per image")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--latency", type=float, default=0.02, help="server latency per request (s)")
    ap.add_argument("--bandwidth", type=float, default=0.0, help="server bandwidth cap (bytes/s, 0 = none)")
    args = ap.parse_args()

    t0 = time.monotonic()
    root = build(args.root, args.npix)
    print(f"archive {root} ready in {time.monotonic() - t0:.0f} s", flush=True)
    rows, identical = [], True
    server = serve_archive(root, latency=args.latency, bandwidth=args.bandwidth or None)
    with server as srv, tempfile.TemporaryDirectory() as tmp:
        config = RunConfig(catalog=str(root / "truth" / "catalog.csv"), output=f"{tmp}/plan.zarr",
                           archive=srv.url, progress=False)
        pipeline = Pipeline(config)
        plan = pipeline.plan()
        all_jobs = image_jobs(plan, pipeline.catalog)
        phot, options = pipeline.photometry_config, pipeline.config.fetch_options_for(None)
        sizes = plan.images.set_index("image_id")["size_bytes"]
        file_bytes = float(sizes.loc[[int(j.image["image_id"]) for j in all_jobs]].sum())
        n_images = len(all_jobs)
        row_bytes = epsf_row_bytes(root, all_jobs)
        for count in (int(c) for c in args.counts.split(",")):
            jobs = subsample(all_jobs, count)
            runs: dict[str, list] = {"range": [], "whole": []}
            for _ in range(args.repeats):
                for fetch in runs:
                    runs[fetch].append(measure_all(jobs, fetch, phot, options, srv))
            reference = runs["whole"][0][0]
            for fetch_runs in runs.values():
                for t, _ in fetch_runs:
                    identical &= all(np.array_equal(t[c].to_numpy(), reference[c].to_numpy(), equal_nan=True)
                                     for c in ("flux", "flux_err", "flux_aperture", "background"))
            n_meas = int(reference["measured"].sum())
            bound = sum(bound_bytes(t, (args.npix, args.npix), phot, row_bytes[int(i)])
                        for i, t in reference.groupby("image_id"))
            rows.append(_row(count, "physical bound", bound, n_meas, n_images, file_bytes))
            for fetch, fetch_runs in runs.items():
                totals = fetch_runs[0][1]
                rows.append(_row(count, fetch, totals["level2_bytes"], n_meas, n_images, file_bytes,
                                 requests=totals["requests"] / n_images, calibration=totals["other_bytes"],
                                 seconds=float(np.median([t["seconds"] for _, t in fetch_runs]))))
                print(f"  {count:5d} sources/image {fetch:5s}: {totals['level2_bytes'] / 1e6:8.2f} MB level-2 "
                      f"+ {totals['other_bytes'] / 1e6:6.2f} MB other, {rows[-1]['seconds (median)']:.2f} s",
                      flush=True)
    table = pd.DataFrame(rows)
    for col, ref in (("x bound", "physical bound"), ("x whole", "whole")):
        base = table[table["reads"] == ref].set_index("sources / image")["kB / measurement"]
        table[col] = table["kB / measurement"] / table["sources / image"].map(base)
    pd.set_option("display.width", 200)
    print(f"\n{n_images} R7 images of {args.npix} x {args.npix} px ({file_bytes / n_images / 1e6:.1f} MB a file), "
          f"server latency {args.latency} s, bandwidth {args.bandwidth / 1e6 or 'unlimited'} MB/s,\n"
          f"median of {args.repeats} passes, each from a fresh cache; level-2 "
          "bytes per image and measurement, calibration (and listing) bytes of the whole pass apart")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}", na_rep="-"))
    print(f"\nrange and whole-file measurements bit-identical (flux, flux_err, flux_aperture, background; every "
          f"count and pass): {identical}")
    if not identical:
        raise SystemExit(1)


def _row(count: int, reads: str, level2_bytes: float, n_meas: int, n_images: int, file_bytes: float,
         requests: float = np.nan, calibration: float = np.nan, seconds: float = np.nan) -> dict:
    """One line of the table."""
    return {"sources / image": count, "reads": reads, "measurements": n_meas,
            "kB / measurement": level2_bytes / n_meas / 1e3, "MB / image": level2_bytes / n_images / 1e6,
            "% of file": 100 * level2_bytes / file_bytes, "requests / image": requests,
            "calibration MB": calibration / 1e6, "seconds (median)": seconds}


if __name__ == "__main__":
    main()
