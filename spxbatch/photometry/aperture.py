"""Aperture and background radii, and the neighbourhood a measurement may read.

The neighbourhood half-size is the contract with the fetch layer: every pixel any measurement reads
(aperture, background region, zodi fit box, and the variance-repair box around each of those) lies
within it of the source's nearest pixel, so any region that contains it gives identical numbers.
"""

from __future__ import annotations

import math

import numpy as np

from spxbatch.photometry.config import PhotometryConfig
from spxbatch.photometry.psf import PSFModel


def aperture_radius(config: PhotometryConfig, fwhm: np.ndarray | float | None) -> np.ndarray:
    """Aperture radius (px) per source: fixed, or fwhm_multiplier * FWHM / 2, capped at max_aperture_radius.

    `fwhm` is the zone FWHM per source (native px), or None for the fallback FWHM.
    """
    if config.aperture == "fixed":
        r = np.asarray(config.fixed_radius, dtype=float)
    else:
        f = config.fallback_fwhm if fwhm is None else np.asarray(fwhm, dtype=float)
        f = np.where(np.isfinite(f), f, config.fallback_fwhm)
        r = 0.5 * config.fwhm_multiplier * f
    return np.minimum(r, config.max_aperture_radius)


def annulus_radii(config: PhotometryConfig, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(r_in, r_out) of the initial annulus: r_in = r + gap, r_out = sqrt(area/pi + r_in^2), capped."""
    r_in = np.asarray(radius, dtype=float) + config.annulus_gap
    r_out = np.sqrt(config.annulus_area / math.pi + r_in**2)
    if config.annulus_max_outer is not None:
        r_out = np.minimum(r_out, config.annulus_max_outer)
    return r_in, r_out


def max_radius(config: PhotometryConfig, psf: PSFModel | None) -> float:
    """Largest aperture radius any source can get with this config (and PSF, when known)."""
    if config.aperture == "fixed":
        return float(min(config.fixed_radius, config.max_aperture_radius))
    if psf is None:
        return float(config.max_aperture_radius)
    return float(aperture_radius(config, psf.max_fwhm()))


def background_extent(config: PhotometryConfig, radius: float) -> float:
    """Farthest distance (px) from the source the background estimate reads, for aperture `radius`."""
    if config.background == "annulus":
        _, r_out = annulus_radii(config, np.asarray(radius))
        return float(r_out) + config.annulus_step * config.annulus_steps
    if config.background == "window":
        return float(config.window_halfsize)
    return 0.0


def neighbourhood_halfsize(config: PhotometryConfig, psf: PSFModel | object | None = None) -> int:
    """Half-size (px) of the square around a source's nearest pixel that a measurement may read.

    `psf` may be a PSFModel or an l2.PSFCube; without it the bound holds for any PSF (FWHM-based radii
    are capped at max_aperture_radius). background='global' reads the whole region and is exempt.
    """
    model = psf if isinstance(psf, PSFModel) or psf is None else PSFModel.from_cube(psf)
    r = max_radius(config, model)
    reach = max(r + 0.5, background_extent(config, r) + 0.5)
    if config.zodi == "fit":
        reach = max(reach, float(config.zodi_halfsize))
    return math.ceil(reach) + config.variance_repair_halfsize + 1
