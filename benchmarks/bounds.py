"""The bytes a set of measurements cannot do without: the physical bound the fetch benchmarks compare
against. Per image, the union of the pixels within each source's background reach (aperture + annulus) in
the four planes a measurement reads (IMAGE, FLAGS as decompressed int32, VARIANCE, ZODI; 16 bytes a pixel),
plus one PSF zone per zone used (a QR2 PSF cube plane, or an R7 EPSF table row); headers excluded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits

from spxbatch.photometry import PhotometryConfig
from spxbatch.photometry.aperture import background_extent

#: Planes a measurement reads, at 4 bytes a pixel each (FLAGS counted decompressed).
PLANE_BYTES = 4 * 4


def bound_bytes(table: pd.DataFrame, shape: tuple[int, int], phot: PhotometryConfig, psf_zone_bytes: int) -> int:
    """The bytes one image's measurements need: pixels within each measured source's background reach
    (union over its sources) in the four planes, plus one PSF zone (`psf_zone_bytes`) per zone used."""
    m = table[table["measured"].astype(bool)]
    need = np.zeros(shape, dtype=bool)
    for x, y, r in zip(m["x"], m["y"], m["aperture_radius"], strict=True):
        reach = background_extent(phot, float(r)) + 0.5
        x0, x1 = max(int(x - reach), 0), min(int(x + reach) + 2, shape[1])
        y0, y1 = max(int(y - reach), 0), min(int(y + reach) + 2, shape[0])
        yy, xx = np.mgrid[y0:y1, x0:x1]
        need[y0:y1, x0:x1] |= np.hypot(xx - x, yy - y) <= reach
    return int(need.sum()) * PLANE_BYTES + m["psf_zone"].nunique() * psf_zone_bytes


def psf_zone_bytes(path: str | Path) -> int:
    """The byte length of one PSF zone of a level-2 file: an EPSF table row (R7) or a PSF cube plane (QR2)."""
    with fits.open(path) as hdul:
        if "EPSF" in hdul:
            return int(hdul["EPSF"].header["NAXIS1"])
        h = hdul["PSF"].header
        return int(h["NAXIS1"]) * int(h["NAXIS2"]) * abs(int(h["BITPIX"])) // 8
