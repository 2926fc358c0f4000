"""MJy/sr per pixel -> uJy: pixel solid angle from a calibration map or the local SIP WCS Jacobian."""

from __future__ import annotations

import numpy as np
from astropy.wcs import WCS

from spxbatch.level2.constants import MJY_PER_SR_TO_UJY_PER_ARCSEC2
from spxbatch.level2.region import ImageRegion
from spxbatch.photometry.wavelength import sample_map
from spxbatch.sky import unit_vectors

_ARCSEC2_PER_SR = (180.0 / np.pi * 3600.0) ** 2


def wcs_pixel_solid_angle(wcs: WCS, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Solid angle (arcsec^2) of the pixel at 0-based parent (x, y): |dS/dx x dS/dy| of the full
    (SIP-distorted) WCS by central differences over one pixel, so distortion is included."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    pts = np.concatenate([
        np.column_stack([x + 0.5, y]), np.column_stack([x - 0.5, y]),
        np.column_stack([x, y + 0.5]), np.column_stack([x, y - 0.5]),
    ])
    world = wcs.all_pix2world(pts, 0)
    v = unit_vectors(world[:, 0], world[:, 1]).reshape(4, x.size, 3)
    area = np.linalg.norm(np.cross(v[0] - v[1], v[2] - v[3]), axis=1)
    return area * _ARCSEC2_PER_SR


def ujy_per_mjysr_pixel(solid_angle_arcsec2: np.ndarray) -> np.ndarray:
    """Factor turning a sum of MJy/sr over pixels into uJy: 23.5045 uJy/arcsec^2 per MJy/sr x Omega."""
    return MJY_PER_SR_TO_UJY_PER_ARCSEC2 * np.asarray(solid_angle_arcsec2, dtype=float)


def source_solid_angle(region: ImageRegion, wcs: WCS, xl: np.ndarray, yl: np.ndarray, x: np.ndarray,
                       y: np.ndarray) -> np.ndarray:
    """Solid angle (arcsec^2) of each source's pixel: from the region's calibration map when it has one
    (at region-local xl, yl), else from the WCS (at parent x, y)."""
    if region.solid_angle is not None:
        return sample_map(region.solid_angle, xl, yl)
    return wcs_pixel_solid_angle(wcs, x, y)
