"""The FWHM of a PSF plane (QR2 cube plane or R7 ePSF zone) from its radial profile about the declared centre."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=4)
def _radial_bins(shape: tuple[int, int]) -> np.ndarray:
    """Fine-pixel radius bins (1-fine-pixel wide, about the plane centre) of a plane of `shape` (ny, nx)."""
    yy, xx = np.indices(shape)
    return np.floor(np.hypot(xx - (shape[1] - 1) / 2.0, yy - (shape[0] - 1) / 2.0) + 0.5).astype(int).ravel()


def plane_fwhm(plane: np.ndarray, oversamp: int) -> float:
    """FWHM in native pixels: twice the half-maximum radius of the plane's radial profile about its
    declared centre (1-fine-pixel bins, linear interpolation), divided by OVERSAMP (as SPXQuery)."""
    rb = _radial_bins(tuple(plane.shape))
    sums = np.bincount(rb, weights=np.asarray(plane, dtype=float).ravel())
    prof = sums / np.maximum(np.bincount(rb), 1)
    half = prof.max() / 2.0
    ipk = int(np.argmax(prof))
    below = np.flatnonzero(prof[ipk:] < half)
    if below.size == 0:
        return float("nan")
    i1 = ipk + int(below[0])
    i0 = i1 - 1
    rhalf = i0 + (prof[i0] - half) / (prof[i0] - prof[i1])
    return 2.0 * rhalf / oversamp
