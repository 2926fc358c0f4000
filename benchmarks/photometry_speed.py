"""Photometry throughput: measurements per second per core of measure_region on a 2040 x 2040 image.

For 10^3, 10^4 and 10^5 sources per image and each background method, the median of a few repeats, next
to two baselines on the same image and positions: plain sep.sum_circle (exact overlap, no extras) and
sep.sum_circle with its (mean) annulus. One process, one thread: SEP holds the GIL, the pipeline scales
with processes. CPU time is the figure to compare on a shared machine.

    python benchmarks/photometry_speed.py [--repeats 3] [--sizes 1000,10000,100000] [--photometry both]

`--photometry` is the config's: 'both' (the default: aperture and PSF fits), 'aperture' (aperture only).
"""

from __future__ import annotations

import argparse
import os
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import sep  # noqa: E402

from spxbatch.level2.wcs import celestial_wcs  # noqa: E402
from spxbatch.photometry import PhotometryConfig, measure_region  # noqa: E402
from spxbatch.sim.regions import make_region  # noqa: E402

NPIX = 2040


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of `repeats` calls after one warm-up call. CPU time (this process) is
    the per-core figure on a shared machine; wall time includes waiting for the core."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return float(np.median(wall)), float(np.median(cpu))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--methods", default="annulus,window,global,none")
    ap.add_argument("--photometry", default="both", choices=["both", "aperture", "psf"])
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    methods = args.methods.split(",")

    rng = np.random.default_rng(0)
    n_max = max(sizes)
    x = rng.uniform(3, NPIX - 4, n_max)
    y = rng.uniform(3, NPIX - 4, n_max)
    n_stars = min(n_max, 20000)
    t0 = time.perf_counter()
    region, _, _ = make_region(NPIX, x[:n_stars], y[:n_stars], 10 ** rng.uniform(-1, 2, n_stars), noise=True,
                               sky=0.3, zodi=0.25)
    ra, dec = celestial_wcs(region.image_header).all_pix2world(x, y, 0)
    print(f"synthetic {NPIX}x{NPIX} image with {n_stars} stars built in {time.perf_counter() - t0:.1f} s")
    img = region.image
    var = region.variance

    rows = []
    for n in sizes:
        t = timed(lambda n=n: sep.sum_circle(img, x[:n], y[:n], 2.5, var=var, subpix=0), args.repeats)
        rows.append((n, "sep.sum_circle (baseline)", t))
        t = timed(lambda n=n: sep.sum_circle(img, x[:n], y[:n], 2.5, var=var, bkgann=(3.9, 5.9), subpix=0),
                  args.repeats)
        rows.append((n, "sep.sum_circle + bkgann", t))
        for method in methods:
            cfg = PhotometryConfig(background=method, photometry=args.photometry)
            t = timed(lambda n=n, cfg=cfg: measure_region(region, ra[:n], dec[:n], cfg), args.repeats)
            rows.append((n, f"measure_region {method} ({args.photometry})", t))
        for n_, name, (w, c) in rows[-(2 + len(methods)):]:
            print(f"{n_:>8d}  {name:<36s} wall {w:9.4f} s  cpu {c:9.4f} s  {n_ / c:12,.0f} meas/s/core")
    print()
    print("| sources | method | wall s (median) | CPU s (median) | measurements/s/core (CPU) |")
    print("|---:|---|---:|---:|---:|")
    for n, name, (w, c) in rows:
        print(f"| {n} | {name} | {w:.4f} | {c:.4f} | {n / max(c, 1e-9):,.0f} |")


if __name__ == "__main__":
    main()
