"""The pixels of a region ready to measure: which are bad, VARIANCE repaired where it cannot be used, and
which the background should avoid at first.

A bad pixel (a bad FLAGS bit, a non-finite IMAGE or ZODI value, a VARIANCE beyond repair) is masked out of
every aperture sum and background; the aperture correction makes up for its share of the star's light.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from spxbatch.level2.constants import FLAG_BITS
from spxbatch.level2.flags import flag_bits_from_header, flag_mask
from spxbatch.level2.region import ImageRegion
from spxbatch.photometry.config import PhotometryConfig
from spxbatch.photometry.gather import Boxes, chunks_of


class Pixels(NamedTuple):
    """A region's planes (C-contiguous) and masks: `variance` as float with repaired values, `bad` (masked
    everywhere), `repaired` (VARIANCE replaced), `avoid` (background_avoid_flags pixels, or None)."""

    image: np.ndarray
    zodi: np.ndarray
    flags: np.ndarray
    variance: np.ndarray
    bad: np.ndarray
    repaired: np.ndarray
    avoid: np.ndarray | None


def flag_bits(region: ImageRegion) -> dict[str, int]:
    """Flag name -> bit from the FLAGS header's MP_* cards (level2.constants.FLAG_BITS if it has none)."""
    bits = flag_bits_from_header(region.flags_header)
    return bits or dict(FLAG_BITS)


def known_mask(names: tuple[str, ...], bits: dict[str, int]) -> int:
    """Mask of the flag names this file defines (a file without a name's MP_ card cannot set it)."""
    return flag_mask([n for n in names if n in bits], bits)


def repair_variance(variance: np.ndarray, bad: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """VARIANCE with each non-finite or non-positive value on a not-bad pixel replaced by the median of
    the finite positive values within `half` px (NaN if none: that pixel is then masked); and the mask of
    repaired pixels. Bad pixels are masked anyway and left alone."""
    var = variance.astype(float)
    ok = np.isfinite(var) & (var > 0)
    todo = ~ok & ~bad
    if not np.any(todo):
        return var, todo
    iy, ix = np.nonzero(todo)
    for sl in chunks_of(ix.size, (2 * half + 1) ** 2):
        boxes = Boxes.around(ix[sl], iy[sl], half, var.shape)
        vals = np.where(boxes.inside & boxes.take(ok), boxes.take(var), np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN box: NaN, the pixel gets masked
            var[iy[sl], ix[sl]] = np.nanmedian(vals, axis=1)
    return var, todo


def corrected_planes(region: ImageRegion) -> tuple[np.ndarray, np.ndarray]:
    """IMAGE and VARIANCE with the region's flux correction applied (IMAGE x f, VARIANCE x f^2; ZODI is
    left alone, as IRSA prescribes for l3_flux_corrections), or as they are when it has none."""
    image = np.ascontiguousarray(region.image)
    if region.flux_factor is None:
        return image, region.variance
    f = region.flux_factor.astype(np.float64)
    return np.ascontiguousarray(image * f), region.variance * f * f


def region_pixels(region: ImageRegion, config: PhotometryConfig, bits: dict[str, int]) -> Pixels:
    """The planes and masks of `region` under `config` (bad_flags, zodi, variance_repair_halfsize,
    background_avoid_flags), flag names resolved through the file's `bits`."""
    flags = np.ascontiguousarray(region.flags)
    image, variance = corrected_planes(region)
    zodi = np.ascontiguousarray(region.zodi)
    bad = ((flags & known_mask(config.bad_flags, bits)) != 0) | ~np.isfinite(image)
    if config.zodi != "none":
        bad |= ~np.isfinite(zodi)
    var, repaired = repair_variance(variance, bad, config.variance_repair_halfsize)
    bad |= ~np.isfinite(var)
    avoid = None
    if config.background_avoid_flags:
        avoid = (flags & known_mask(config.background_avoid_flags, bits)) != 0
    return Pixels(image, zodi, flags, var, bad, repaired, avoid)
