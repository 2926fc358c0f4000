"""Apertures: their radii (and the background's), the neighbourhood a measurement may read, each aperture's
exact pixel footprint, and the aperture sums.

The neighbourhood half-size is the contract with the fetch layer: every pixel any measurement reads
(aperture, background region, zodi fit box, and the variance-repair box around each of those) lies
within it of the source's nearest pixel, so any region that contains it gives identical numbers.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import sep

from spxbatch.level2.epsf import EPSFTable
from spxbatch.level2.region import PSFCube
from spxbatch.photometry.config import PhotometryConfig
from spxbatch.photometry.gather import Boxes, chunks_of, ring_size
from spxbatch.photometry.masks import Pixels
from spxbatch.photometry.overlap import grid_overlaps
from spxbatch.photometry.positions import LocalPixels
from spxbatch.photometry.psf import AnyPSFModel, psf_model_for
from spxbatch.photometry.psf_measure import psf_neighbourhood


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


def source_radii(config: PhotometryConfig, fwhm: np.ndarray | None, n: int) -> np.ndarray:
    """The aperture radius (px) of each of n sources, as a float array (see aperture_radius)."""
    return np.broadcast_to(aperture_radius(config, fwhm), (n,)).astype(float)


def annulus_radii(config: PhotometryConfig, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(r_in, r_out) of the initial annulus: r_in = r + gap, r_out = sqrt(area/pi + r_in^2), capped."""
    r_in = np.asarray(radius, dtype=float) + config.annulus_gap
    r_out = np.sqrt(config.annulus_area / math.pi + r_in**2)
    if config.annulus_max_outer is not None:
        r_out = np.minimum(r_out, config.annulus_max_outer)
    return r_in, r_out


def max_radius(config: PhotometryConfig, psf: AnyPSFModel | None, zones: np.ndarray | None = None) -> float:
    """Largest aperture radius any source in the PSF's `zones` (default all) can get with this config (and
    PSF, when known)."""
    if config.aperture == "fixed":
        return float(min(config.fixed_radius, config.max_aperture_radius))
    if psf is None:
        return float(config.max_aperture_radius)
    return float(aperture_radius(config, psf.max_fwhm(zones)))


def background_extent(config: PhotometryConfig, radius: float) -> float:
    """Farthest distance (px) from the source the background estimate reads, for aperture `radius`."""
    if config.background == "annulus":
        _, r_out = annulus_radii(config, np.asarray(radius))
        return float(r_out) + config.annulus_step * config.annulus_steps
    if config.background == "window":
        return float(config.window_halfsize)
    return 0.0


def neighbourhood_halfsize(config: PhotometryConfig, psf: AnyPSFModel | PSFCube | EPSFTable | None = None) -> int:
    """Half-size (px) of the square around a source's nearest pixel that a measurement may read: the
    aperture measurement's, and with PSF photometry on the PSF fit's through one neighbour
    (`psf_measure.psf_neighbourhood`).

    `psf` may be a PSF model or a level2 PSFCube or EPSFTable; without it the bound holds for any PSF (FWHM-based radii
    are capped at max_aperture_radius). background='global' reads the whole region and is exempt.
    """
    model = psf_model_for(psf) if isinstance(psf, PSFCube | EPSFTable) else psf
    half = aperture_neighbourhood(config, model)
    if config.photometry != "aperture":
        half = max(half, psf_neighbourhood(config, model))
    return half


def aperture_neighbourhood(config: PhotometryConfig, model: AnyPSFModel | None,
                           zones: np.ndarray | None = None) -> int:
    """Half-size (px) of what the aperture measurement of a source in the PSF's `zones` (default any) reads:
    aperture, background region, zodi fit box, and the variance-repair box around each."""
    r = max_radius(config, model, zones)
    reach = max(r + 0.5, background_extent(config, r) + 0.5)
    if config.zodi == "fit":
        reach = max(reach, float(config.zodi_halfsize))
    return math.ceil(reach) + config.variance_repair_halfsize + 1


class Footprint(NamedTuple):
    """Each aperture's exact pixel footprint (pixel weights w = circle-pixel overlap): `area` = sum of w over
    unmasked pixels, `var_sum` = sum of w^p VARIANCE over them (p = 2: the variance of the weighted sum),
    `flags_or` (OR of FLAGS over every touched pixel), `has_masked` (a masked pixel touched) and
    `variance_repaired` (a repaired VARIANCE touched)."""

    area: np.ndarray
    var_sum: np.ndarray
    flags_or: np.ndarray
    has_masked: np.ndarray
    variance_repaired: np.ndarray


def aperture_footprint(pix: Pixels, at: LocalPixels, radius: np.ndarray, r_max: float,
                       error_weights: str) -> Footprint:
    """The footprints of apertures of `radius` at the local positions `at`, r_max bounding every radius."""
    k = at.xl.size
    out = Footprint(np.zeros(k), np.zeros(k), np.zeros(k, dtype=np.int64), np.zeros(k, dtype=bool),
                    np.zeros(k, dtype=bool))
    power = 2 if error_weights == "squared" else 1
    for sl in chunks_of(k, ring_size(r_max + 1.0)):
        # every pixel that can touch a circle of r_max centred anywhere in pixel (ix, iy)
        b = Boxes.ring(at.ix[sl], at.iy[sl], 0.0, r_max + 0.71, pix.image.shape)
        pin, w = _pixel_weights(b, at, radius, sl)
        badb = b.take(pix.bad)
        out.flags_or[sl] = np.bitwise_or.reduce(np.where(pin, b.take(pix.flags), 0), axis=1)
        out.has_masked[sl] = np.any(pin & badb, axis=1)
        out.variance_repaired[sl] = np.any(pin & b.take(pix.repaired), axis=1)
        wu = np.where(badb, 0.0, w)
        out.area[sl] = wu.sum(axis=1)
        out.var_sum[sl] = (wu**power * np.where(pin & ~badb, b.take(pix.variance), 0.0)).sum(axis=1)
    return out


def _pixel_weights(b: Boxes, at: LocalPixels, radius: np.ndarray, sl: slice) -> tuple[np.ndarray, np.ndarray]:
    """(touched, weight) of the gathered pixels `b` of sources `sl`: touched = the circle reaches the pixel;
    weight = 1 inside, the exact overlap on the edge, 0 elsewhere."""
    ix, iy, xl, yl = at.ix, at.iy, at.xl, at.yl
    # classify in float32 (touching / wholly inside), exact overlaps in float64 for the edge pixels
    cx = (ix[sl] - xl[sl]).astype(np.float32)
    cy = (iy[sl] - yl[sl]).astype(np.float32)
    adx = np.abs(cx[:, None] + b.ox.astype(np.float32)[None, :])
    ady = np.abs(cy[:, None] + b.oy.astype(np.float32)[None, :])
    r2 = (radius[sl, None] ** 2).astype(np.float32)
    near2 = np.maximum(adx - 0.5, 0) ** 2 + np.maximum(ady - 0.5, 0) ** 2
    pin = (near2 < r2) & b.inside
    w = pin.astype(float)
    edge = pin & ((adx + 0.5) ** 2 + (ady + 0.5) ** 2 > r2)
    er, ec = np.nonzero(edge)
    h = int(max(np.abs(b.ox).max(), np.abs(b.oy).max())) if b.ox.size else 0
    off = np.arange(-h, h + 1)
    w[er, ec] = grid_overlaps((ix[sl] - xl[sl])[:, None] + off[None, :], (iy[sl] - yl[sl])[:, None] + off[None, :],
                              radius[sl], er, b.ox[ec] + h, b.oy[ec] + h)
    return pin, w


def frame_edge(x: np.ndarray, y: np.ndarray, radius: np.ndarray, parent_shape: tuple[int, int]) -> np.ndarray:
    """Where the aperture's bounding square (parent pixels x, y) crosses the parent frame's border."""
    nyp, nxp = parent_shape
    return (x - radius < -0.5) | (x + radius > nxp - 0.5) | (y - radius < -0.5) | (y + radius > nyp - 0.5)


class ApertureSums(NamedTuple):
    """Exact-overlap (sep) aperture sums of IMAGE and of ZODI (zeros when zodi='none'), masked pixels 0."""

    image: np.ndarray
    zodi: np.ndarray


def aperture_sums(pix: Pixels, at: LocalPixels, radius: np.ndarray, with_zodi: bool) -> ApertureSums:
    """The sums over apertures of `radius` at the local positions `at` (masked pixels contribute nothing)."""
    s_img, _, _ = sep.sum_circle(np.where(pix.bad, 0.0, pix.image), at.xl, at.yl, radius, subpix=0)
    s_zod = np.zeros(at.xl.size)
    if with_zodi:
        s_zod, _, _ = sep.sum_circle(np.where(pix.bad, 0.0, pix.zodi.astype(float)), at.xl, at.yl, radius,
                                     subpix=0)
    return ApertureSums(s_img, s_zod)
