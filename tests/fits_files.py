"""Test helpers: small FITS files shaped like Level-2 images, and a counting range reader of a local file."""

from __future__ import annotations

import numpy as np
from astropy.io import fits


def write_mef(path, n: int = 256, psf_cards: int = 121, seed: int = 0, obs_id: str = "2025W18_2B_0001_1",
              detector: int = 3) -> None:
    """A 7-HDU file shaped like Level 2: long IMAGE and PSF headers (the PSF one ~40 kB), a WCS-WAVE table,
    and the cards an archive index needs (OBSID, DETECTOR, MJD-BEG/END, a TAN WCS)."""
    rng = np.random.default_rng(seed)
    img = fits.ImageHDU(rng.normal(size=(n, n)).astype(">f4"), name="IMAGE")
    img.header.update({"OBSID": obs_id, "DETECTOR": detector, "MJD-BEG": 60800.0, "MJD-END": 60800.0013,
                       "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRPIX1": n / 2, "CRPIX2": n / 2,
                       "CRVAL1": 150.0, "CRVAL2": 2.0, "CD1_1": -6.15 / 3600, "CD1_2": 0.0, "CD2_1": 0.0,
                       "CD2_2": 6.15 / 3600, "CRPIX1A": 1.0, "CRPIX2A": 1.0})
    for i in range(90):
        img.header[f"FILL{i}"] = (i, "filler: a multi-block header")
    flags = fits.ImageHDU(rng.integers(0, 2**22, size=(n, n)).astype(">i4"), name="FLAGS")
    flags.header["HIERARCH MP_TRANSIENT"] = 0
    var = fits.ImageHDU(rng.uniform(1, 2, size=(n, n)).astype(">f4"), name="VARIANCE")
    zodi = fits.ImageHDU(rng.uniform(0, 1, size=(n, n)).astype(">f4"), name="ZODI")
    psf = fits.ImageHDU(rng.uniform(size=(121, 11, 11)).astype(">f4"), name="PSF")
    for k in range(1, psf_cards + 1):
        for key in ("XCTR", "YCTR", "XWID", "YWID"):
            psf.header[f"{key}_{k}"] = (float(k), f"Center of x zone ({k % 11}, {k // 11})")
    grid = np.linspace(1, n, 11)
    cols = [fits.Column("X", "11D", array=grid[None]), fits.Column("Y", "11D", array=grid[None]),
            fits.Column("VALUES", "242D", dim="(2,11,11)", array=rng.uniform(1, 2, size=(1, 11, 11, 2)))]
    wave = fits.BinTableHDU.from_columns(cols, name="WCS-WAVE")
    fits.HDUList([fits.PrimaryHDU(), img, flags, var, zodi, psf, wave]).writeto(path, overwrite=True)


class FileReader:
    """Range reads of a local file that count the rounds (calls) and ranges asked for."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.data = f.read()
        self.calls: list[list[tuple[int, int]]] = []

    def __call__(self, ranges):
        self.calls.append(list(ranges))
        return [self.data[s:e] for s, e in ranges]
