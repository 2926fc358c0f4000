"""The measurement's own condition bits: their names, masks of names, and the condition word of many sources.

FLAGS bits of the file occupy bits 0-31 of the archive-style quality word; the measurement's own
conditions take bits 32 and up, so `flags | condition` carries both without collisions.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

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
    "PSF_FAILED": 44,  # no PSF fit: no PSF, a singular fit or too few usable pixels
    "PSF_CLIPPED": 45,  # the PSF fit's group reaches beyond the given region (region too small)
    "PSF_LOCAL_FIT": 46,  # its group exceeded psf_max_group: fitted with its direct neighbours only
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


def condition_word(n: int, conditions: Mapping[str, np.ndarray | bool]) -> np.ndarray:
    """The int64 condition word of n sources from {condition name: where it holds (booleans, or one bool)}."""
    word = np.zeros(n, dtype=np.int64)
    for name, where in conditions.items():
        word[np.broadcast_to(np.asarray(where, dtype=bool), (n,))] |= np.int64(1) << np.int64(CONDITION_BITS[name])
    return word
