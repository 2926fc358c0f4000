"""Calibration products in IRSA's layout: `solid_angle_pixel_map`, `spectral_wcs` and `average_psf`.

They sample the same per-detector truth the Level-2 files were rendered with: the solid-angle map is the
one used to convert uJy to MJy/sr, CWAVE/CBAND the true LVF function, and the average PSF the cube.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from spxbatch.level2.naming import CALIBRATION_PRODUCTS, calibration_relpath
from spxbatch.sim import psf
from spxbatch.sim.instrument import Detector
from spxbatch.sim.paths import processing_date, strip_ibe


def _primary(product: str, detector: int) -> fits.PrimaryHDU:
    hdr = fits.Header()
    hdr["TELESCOP"] = "SPHEREx"
    hdr["ORIGIN"] = ("spxbatch.sim", "Simulated IRSA QR2 calibration product")
    hdr["DATE"] = (processing_date(CALIBRATION_PRODUCTS[product][2]), "File creation date")
    hdr["DETECTOR"] = (detector, "Detector (band) number")
    hdr["CALTYPE"] = (product, "Calibration product")
    hdr["CALVERS"] = (CALIBRATION_PRODUCTS[product][2], "Calibration version")
    return fits.PrimaryHDU(header=hdr)


def _image(data: np.ndarray, name: str, bunit: str) -> fits.ImageHDU:
    hdu = fits.ImageHDU(data=data.astype(np.float32), name=name)
    hdu.header["BUNIT"] = bunit
    return hdu


def write_all(root: Path, dets: dict[int, Detector]) -> list[str]:
    """Write the three products for every detector; returns their paths relative to `root`."""
    out = []
    for d, det in dets.items():
        cwave, cband = det.wave_images
        psf_hdu = fits.ImageHDU(data=det.psf_cube, name="PSF")
        for k, v, c in psf.header_cards(det.npix):
            psf_hdu.header[k] = (v, c)
        products = {
            "solid_angle_pixel_map": [_image(det.solid_angle, "IMAGE", "arcsec2")],
            "spectral_wcs": [_image(cwave, "CWAVE", "um"), _image(cband, "CBAND", "um")],
            "average_psf": [psf_hdu],
        }
        for product, hdus in products.items():
            rel = strip_ibe(calibration_relpath(product, d))
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            fits.HDUList([_primary(product, d), *hdus]).writeto(path, overwrite=True)
            out.append(rel)
    return out
