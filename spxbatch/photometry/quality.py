"""Condition bits of a measurement and the `good` verdict, recomputable from a stored table.

FLAGS bits of the file occupy bits 0-31 of the archive-style quality word; the measurement's own
conditions take bits 32 and up, so `flags | condition` carries both without collisions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from spxbatch.photometry.config import PhotometryConfig

#: The measurement's own condition bits (bit numbers in the int64 `condition` word).
CONDITION_BITS: dict[str, int] = {
    "EDGE": 32,  # the aperture is clipped by the parent frame's edge
    "BAD_PIXEL": 33,  # a masked pixel (bad FLAGS bit or non-finite IMAGE) touches the aperture
    "BLENDED": 34,  # another catalog source's aperture overlaps this aperture (distance < 2 r)
    "BACKGROUND_FAILED": 35,  # too few usable background pixels even after widening; not measured
    "NOT_MEASURED": 36,  # off the frame, outside the region, too near the edge or no usable pixel
    "ZODI_FALLBACK": 37,  # the fitted zodi scale fell back to 1 (too few pixels or out of bounds)
    "REGION_CLIPPED": 38,  # the neighbourhood is not inside the given region (region too small)
    "NO_PSF": 39,  # no PSF cube: fallback FWHM and no aperture correction
    "BACKGROUND_WIDENED": 40,  # the annulus had to be widened to find enough pixels
    "BACKGROUND_RELAXED": 41,  # background_avoid_flags had to be allowed back in
    "VARIANCE_REPAIRED": 42,  # a non-finite or non-positive VARIANCE in the aperture was repaired
    "MASK_CORRECTED": 43,  # masked aperture pixels were replaced by the PSF correction
}


def condition_mask(names: tuple[str, ...] | list[str]) -> int:
    """OR of the condition bits of `names`."""
    mask = 0
    for name in names:
        mask |= 1 << CONDITION_BITS[name]
    return mask


def condition_names(word: int) -> list[str]:
    """Names of the condition bits set in one condition word."""
    return [name for name, bit in CONDITION_BITS.items() if int(word) >> bit & 1]


def good_verdict(
    table: Mapping[str, Any] | Any, config: PhotometryConfig, flag_bits: dict[str, int] | None = None
) -> np.ndarray:
    """`good` from an output table (dict of arrays or DataFrame) without measuring again.

    good = measured & snr >= threshold & no bad FLAGS bit in the aperture & no disqualifying condition.
    `flag_bits` (name -> bit, from the file's MP_* cards) defaults to spherex.FLAG_BITS; names missing
    from it are ignored (a file without that flag cannot have it set).
    """
    from spxbatch.level2.constants import FLAG_BITS

    bits = FLAG_BITS if flag_bits is None else flag_bits
    names = tuple(config.bad_flags) + tuple(config.extra_disqualifying_flags)
    bad = 0
    for name in names:
        if name in bits:
            bad |= 1 << bits[name]
    flags = np.asarray(table["flags"]).astype(np.int64)
    condition = np.asarray(table["condition"]).astype(np.int64)
    snr = np.asarray(table["snr"], dtype=float)
    measured = np.asarray(table["measured"], dtype=bool)
    with np.errstate(invalid="ignore"):
        ok_snr = snr >= config.snr_threshold
    return (
        measured
        & ok_snr
        & ((flags & bad) == 0)
        & ((condition & condition_mask(config.disqualifying_conditions)) == 0)
    )
