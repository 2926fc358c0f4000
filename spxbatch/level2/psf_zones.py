"""Which PSF zone (QR2 cube plane, R7 ePSF table row) serves a parent pixel: from the PSF's zone centres, with
the QR2 header erratum (x and y labels swapped in pipeline versions <= 6.5.5). A property of the file, used
by photometry (each source's PSF) and by the fetch layer (which planes of a cube to read).
"""

from __future__ import annotations

import re

import numpy as np
from astropy.io import fits

from spxbatch.level2.epsf import EPSFTable
from spxbatch.level2.region import PSFCube, psf_zone_centres


def psf_labels_swapped(version: str | None) -> bool:
    """True for pipeline versions whose PSF zone labels have x and y swapped (erratum).

    Affected: VERSION <= 6.5.5 without the '+psffix1' suffix; >= 6.5.6 never was; unparsable: False.
    """
    if not version:
        return False
    v = str(version).strip()
    if "psffix1" in v:
        return False
    m = re.match(r"\s*v?(\d+)\.(\d+)\.(\d+)", v)
    if not m:
        return False
    return tuple(int(g) for g in m.groups()) <= (6, 5, 5)


def _corrected_centres(psf: PSFCube | EPSFTable | fits.Header, swapped: bool) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) centres (0-based parent pixels) of each plane, labels corrected for the erratum (QR2 cubes
    only: an R7 table's XCENTER, YCENTER columns never were swapped)."""
    if isinstance(psf, EPSFTable):
        return psf.zone_centres
    xc, yc = psf.zone_centres if isinstance(psf, PSFCube) else psf_zone_centres(psf)
    return (yc, xc) if swapped else (xc, yc)


def zone_index(
    psf: PSFCube | EPSFTable | fits.Header, x: np.ndarray, y: np.ndarray, version: str | None = None,
    method: str = "grid",
) -> np.ndarray:
    """0-based plane (or table row) index of the zone nearest each parent pixel (x, y), from a PSF's zone
    centres (a PSFCube, whose cards are read once, a PSF header, or an EPSFTable's XCENTER, YCENTER).

    'grid': nearest of the sorted unique x and y centre values, plane = iy * nx + ix (x fastest, any
    nx x ny lattice, e.g. 11 x 41), which does not depend on which card carries which label when the
    lattice is square. 'header': nearest labelled centre, with the labels swapped back for erratum versions.
    """
    xc, yc = _corrected_centres(psf, psf_labels_swapped(version))
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if method == "header":
        d2 = (x[:, None] - xc[None, :]) ** 2 + (y[:, None] - yc[None, :]) ** 2
        return np.argmin(d2, axis=1)
    if method != "grid":
        raise ValueError(f"unknown zone lookup method {method!r}")
    ux = np.unique(np.round(xc, 6))
    uy = np.unique(np.round(yc, 6))
    ix = _nearest_sorted(ux, x)
    iy = _nearest_sorted(uy, y)
    return iy * ux.size + ix


def _nearest_sorted(centres: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Index of the nearest value in sorted `centres` (ties go to the lower one)."""
    if centres.size == 1:
        return np.zeros(v.shape, dtype=np.int64)
    mids = 0.5 * (centres[1:] + centres[:-1])
    return np.searchsorted(mids, v, side="left").astype(np.int64)


def catalog_zones(psf: PSFCube | EPSFTable | fits.Header, x: np.ndarray, y: np.ndarray, shape: tuple[int, int],
                  version: str | None, methods: tuple[str, ...]) -> np.ndarray:
    """The sorted zones (by each of `methods`) of the catalog sources at parent pixels (x, y) that lie on a
    frame of `shape` (ny, nx): the planes an image's measurements use, the PSF fits' neighbours included, and
    over which the largest aperture is taken (the fetch layer reads just these planes of a QR2 cube)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ny, nx = shape
    on = (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
    if not on.any():
        return np.empty(0, dtype=np.int64)
    return np.unique(np.concatenate([zone_index(psf, x[on], y[on], version, m) for m in methods]))
