"""The verdicts of a measurement, `detected` and `good`, recomputable from a stored table (`spxbatch qc`).

The condition bits they read are defined in `conditions` (re-exported here, where callers have found them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from spxbatch.level2.constants import R7_FLAG_BITS
from spxbatch.photometry.conditions import CONDITION_BITS, condition_mask, condition_names
from spxbatch.photometry.config import PhotometryConfig

__all__ = ["CONDITION_BITS", "condition_mask", "condition_names", "good_verdict", "verdicts"]

#: Conditions of the aperture measurement alone: they do not disqualify a PSF flux (the fit models the
#: neighbours and leaves masked pixels out; psf_unmasked_fraction bounds what it may miss).
APERTURE_ONLY = ("BLENDED", "BAD_PIXEL", "BACKGROUND_FAILED", "MASK_CORRECTED", "BACKGROUND_WIDENED",
                 "BACKGROUND_RELAXED", "REGION_CLIPPED")
#: Conditions that disqualify a PSF flux (PSF_CLIPPED is its REGION_CLIPPED).
PSF_DISQUALIFYING = ("PSF_FAILED", "PSF_CLIPPED")


def disqualifying(config: PhotometryConfig) -> tuple[str, ...]:
    """The condition names that make a measurement not good: the config's, for a PSF flux without the
    aperture's own and with the fit's."""
    if config.flux_source != "psf":
        return tuple(config.disqualifying_conditions)
    kept = tuple(c for c in config.disqualifying_conditions if c not in APERTURE_ONLY)
    return kept + PSF_DISQUALIFYING


def _psf_fit_ok(table: Mapping[str, Any] | Any, config: PhotometryConfig) -> np.ndarray | bool:
    """Where a PSF flux's fit passes the thresholds (chi2, usable fraction); True for aperture fluxes."""
    if config.flux_source != "psf":
        return True
    chi2 = np.asarray(table["psf_chi2"], dtype=float)
    unmasked = np.asarray(table["psf_unmasked_fraction"], dtype=float)
    with np.errstate(invalid="ignore"):
        return (chi2 <= config.psf_max_chi2) & (unmasked >= config.psf_min_unmasked_fraction)


def good_verdict(
    table: Mapping[str, Any] | Any, config: PhotometryConfig, flag_bits: dict[str, int] | None = None
) -> np.ndarray:
    """`good` from an output table (dict of arrays or DataFrame) without measuring again.

    good = measured & snr >= threshold & no bad FLAGS bit in the aperture & no disqualifying condition
    (`disqualifying`); for a PSF flux (flux_source 'psf') only extra_disqualifying_flags count (bad pixels
    are out of the fit) and the fit must be within psf_max_chi2 and psf_min_unmasked_fraction.
    `flag_bits` (name -> bit, from the file's MP_* or MSKN cards) defaults to R7's bits (QR2's and the
    R7-only ones, which QR2 files never set), so a stored table of either layout is judged by the same
    names; names missing from it are ignored (a file without that flag cannot have it set).
    """
    bits = R7_FLAG_BITS if flag_bits is None else flag_bits
    # a PSF fit leaves the bad_flags pixels out (psf_unmasked_fraction bounds that): only the extra flags
    names = (() if config.flux_source == "psf" else tuple(config.bad_flags)) + tuple(config.extra_disqualifying_flags)
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
        & ((condition & condition_mask(disqualifying(config))) == 0)
        & _psf_fit_ok(table, config)
    )


def verdicts(
    table: Mapping[str, Any], config: PhotometryConfig, flag_bits: dict[str, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(detected, good) of a measured table: detected = measured & SNR >= threshold; good as good_verdict."""
    with np.errstate(invalid="ignore"):
        detected = table["measured"] & (table["snr"] >= config.snr_threshold)
    return detected, good_verdict(table, config, flag_bits)
