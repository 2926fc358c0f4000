"""Aperture correction: the fraction of each star's light its measured sum holds, from its PSF tile.

The background-subtracted sum is F * (kept - area * own_light): `kept` the PSF fraction on the usable
aperture pixels (masked pixels and pixels off the region are missing), `own_light` the star's own PSF light
per background pixel. With aperture_correction on, fluxes are divided by that; off, by kept / enclosed only
(the correction for masked pixels), so they stay aperture fluxes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from spxbatch.photometry.config import PhotometryConfig
from spxbatch.photometry.gather import Boxes, chunks_of
from spxbatch.photometry.positions import LocalPixels
from spxbatch.photometry.psf import PsfTiles, aperture_fractions


class ApertureCorrection(NamedTuple):
    """Per source: the `fraction` of the total flux the measured sum holds, and `mask_corrected` where
    masked aperture pixels were made up for by the PSF."""

    fraction: np.ndarray
    mask_corrected: np.ndarray


def aperture_correction(config: PhotometryConfig, tiles: PsfTiles | None, bad: np.ndarray, at: LocalPixels,
                        radius: np.ndarray, area: np.ndarray, own_light: np.ndarray,
                        partial: np.ndarray) -> ApertureCorrection:
    """The correction of apertures of `radius` and unmasked `area` at the local positions `at`, from the
    stars' PSF `tiles`; `partial` marks the apertures that miss pixels (masked, off the frame, off the
    region). Without a PSF (no tiles): 1."""
    k = at.xl.size
    if tiles is None:
        return ApertureCorrection(np.ones(k), np.zeros(k, dtype=bool))
    full = np.empty(k)
    kept = np.empty(k)
    t = tiles.tiles.shape[1]
    mh = (t - 1) // 2
    for sl in chunks_of(k, t * t):
        missing = None
        if config.masked_aperture == "psf" and np.any(partial[sl]):
            b = Boxes.around(at.ix[sl], at.iy[sl], mh, bad.shape)
            missing = (~b.inside | b.take(bad)).reshape(-1, t, t)
            missing &= partial[sl, None, None]
        full[sl], kept[sl] = aperture_fractions(tiles.tiles[sl].astype(float), tiles.phase_x[sl], tiles.phase_y[sl],
                                                radius[sl], missing)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = kept / full
    fraction = kept - area * own_light if config.aperture_correction else ratio
    return ApertureCorrection(fraction, ratio < 1)
