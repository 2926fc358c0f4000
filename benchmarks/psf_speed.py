"""PSF photometry throughput: measurements per second per core of measure_region's PSF fit on a 2040 x 2040
image, beside the aperture measurement on the same image and positions.

For each source count and PSF kind (QR2 cube integrated over pixels; R7 ePSF at pixel centres), the median
of a few repeats of measure_region with photometry 'aperture', 'psf' and 'both', the share of the sources
fitted jointly with a neighbour, and the PSF fit's own cost (both - aperture). One process, one thread;
CPU time is the figure to compare on a shared machine (see photometry_speed.py).

    python benchmarks/psf_speed.py [--repeats 3] [--sizes 1000,10000]
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from photometry_speed import timed  # noqa: E402

from spxbatch.level2.epsf import read_epsf  # noqa: E402
from spxbatch.level2.wcs import celestial_wcs  # noqa: E402
from spxbatch.photometry import PhotometryConfig, measure_region  # noqa: E402
from spxbatch.sim.epsf import make_epsf, table_hdu  # noqa: E402
from spxbatch.sim.regions import make_region  # noqa: E402

NPIX = 2040
MODES = {
    "aperture": PhotometryConfig(photometry="aperture"),
    "psf": PhotometryConfig(photometry="psf", flux_source="psf"),
    "both": PhotometryConfig(),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="1000,10000")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    rng = np.random.default_rng(0)
    n_max = max(sizes)
    x = rng.uniform(3, NPIX - 4, n_max)
    y = rng.uniform(3, NPIX - 4, n_max)
    t0 = time.perf_counter()
    qr2, _, _ = make_region(NPIX, x, y, 10 ** rng.uniform(-1, 2, n_max), noise=True, sky=0.3, zodi=0.25)
    r7 = replace(qr2, psf=read_epsf(table_hdu(make_epsf(1, NPIX)), "D1"))
    ra, dec = celestial_wcs(qr2.image_header).all_pix2world(x, y, 0)
    print(f"synthetic {NPIX}x{NPIX} image with {n_max} stars built in {time.perf_counter() - t0:.1f} s")

    rows = []
    for n in sizes:
        for kind, region in (("QR2 cube", qr2), ("R7 ePSF", r7)):
            out = measure_region(region, ra[:n], dec[:n], MODES["both"])
            joint = float(np.mean(out["psf_group_size"] > 1))
            for mode, cfg in MODES.items():
                t = timed(lambda n=n, region=region, cfg=cfg: measure_region(region, ra[:n], dec[:n], cfg),
                          args.repeats)
                rows.append((n, kind, mode, joint, t))
                w, c = t
                print(f"{n:>8d}  {kind:<9s} {mode:<9s} wall {w:8.3f} s  cpu {c:8.3f} s  {n / c:10,.0f} meas/s/core"
                      f"  (joint fits {joint:.0%})")
    print()
    print("| sources | PSF | photometry | joint | wall s (median) | CPU s (median) | measurements/s/core (CPU) |")
    print("|---:|---|---|---:|---:|---:|---:|")
    for n, kind, mode, joint, (w, c) in rows:
        print(f"| {n} | {kind} | {mode} | {joint:.0%} | {w:.3f} | {c:.3f} | {n / max(c, 1e-9):,.0f} |")
    print()
    print("The PSF fit's own cost, both - aperture (CPU): what PSF photometry adds to an aperture run.")
    cpu = {(n, kind, mode): c for n, kind, mode, _, (_, c) in rows}
    for n, kind in dict.fromkeys((n, kind) for n, kind, *_ in rows):
        extra = cpu[n, kind, "both"] - cpu[n, kind, "aperture"]
        rate = f"{n / extra:10,.0f} meas/s/core" if extra > 0 else "(below the timing noise: rerun on a quiet machine)"
        print(f"{n:>8d}  {kind:<9s} PSF phase {extra:7.3f} s  {rate}"
              f"  both/aperture {cpu[n, kind, 'both'] / cpu[n, kind, 'aperture']:.2f}")


if __name__ == "__main__":
    main()
