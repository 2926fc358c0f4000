"""The linear variable filter: the true central wavelength and bandwidth at every detector position.

Wavelength runs linearly along y across each band's range (direction set per detector), with a modest
quadratic curvature of the iso-wavelength lines along x. Linear in y and quadratic in x keeps astropy's
bilinear interpolation of the 11x11 WCS-WAVE table within a fraction of a nm of the true function, which
is what both the table and the `spectral_wcs` CWAVE/CBAND calibration images sample.
"""

from __future__ import annotations

import numpy as np

from spxbatch.level2.constants import BANDS

#: +1 if wavelength increases with y on this detector, -1 if it decreases (D2: long wavelengths at low y).
DIRECTION = {1: 1, 2: -1, 3: 1, 4: -1, 5: 1, 6: -1}
#: Curvature of the iso-wavelength lines: shift along y (fraction of the detector) at the x edges.
CURVATURE = {1: 0.010, 2: 0.012, 3: 0.008, 4: 0.011, 5: 0.009, 6: 0.010}
#: WCS-WAVE control points per axis (QR2; R7 files have 9).
N_CONTROL = 11


def _band_fraction(detector: int, x: np.ndarray, y: np.ndarray, npix: int) -> np.ndarray:
    """Position in the band's range, 0..1, at 0-based pixel (x, y)."""
    t = np.asarray(y, dtype=float) / (npix - 1)
    if DIRECTION[detector] < 0:
        t = 1.0 - t
    u = np.asarray(x, dtype=float) / (npix - 1) - 0.5
    k = 4.0 * CURVATURE[detector]
    return (t + k * u * u) / (1.0 + k / 4.0)


def wavelength_um(detector: int, x, y, npix: int) -> np.ndarray:
    """True central wavelength (um) at 0-based pixel position (x, y)."""
    band = BANDS[detector]
    return band.lo_um + (band.hi_um - band.lo_um) * _band_fraction(detector, x, y, npix)


def bandwidth_um(detector: int, wavelength) -> np.ndarray:
    """Bandwidth (um) of the LVF at a wavelength: lambda / R of the band."""
    return np.asarray(wavelength, dtype=float) / BANDS[detector].resolving_power


def control_points(npix: int, n: int = N_CONTROL) -> np.ndarray:
    """1-based pixel positions of the WCS-WAVE control points along one axis (cover every pixel centre)."""
    return np.linspace(1.0, float(npix), n)


def wave_table_values(detector: int, npix: int, n: int = N_CONTROL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, Y, VALUES[iy, ix, 2]) of an n x n WCS-WAVE table: the true function at the control points."""
    cx = control_points(npix, n)
    cy = control_points(npix, n)
    gx, gy = np.meshgrid(cx - 1.0, cy - 1.0)
    lam = wavelength_um(detector, gx, gy, npix)
    values = np.stack([lam, bandwidth_um(detector, lam)], axis=-1)
    return cx, cy, values


def wave_images(detector: int, npix: int) -> tuple[np.ndarray, np.ndarray]:
    """CWAVE and CBAND images (um), the true function at every pixel centre."""
    yy, xx = np.mgrid[0:npix, 0:npix]
    lam = wavelength_um(detector, xx, yy, npix)
    return lam, bandwidth_um(detector, lam)
