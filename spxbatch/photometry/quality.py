"""The verdicts of a measurement, `detected` and `good`, recomputable from a stored table (`spxbatch qc`).

The condition bits they read are defined in `conditions` (re-exported here, where callers have found them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from spxbatch.level2.constants import FLAG_BITS
from spxbatch.photometry.conditions import CONDITION_BITS, condition_mask, condition_names
from spxbatch.photometry.config import PhotometryConfig

__all__ = ["CONDITION_BITS", "condition_mask", "condition_names", "good_verdict", "verdicts"]


def good_verdict(
    table: Mapping[str, Any] | Any, config: PhotometryConfig, flag_bits: dict[str, int] | None = None
) -> np.ndarray:
    """`good` from an output table (dict of arrays or DataFrame) without measuring again.

    good = measured & snr >= threshold & no bad FLAGS bit in the aperture & no disqualifying condition.
    `flag_bits` (name -> bit, from the file's MP_* cards) defaults to spherex.FLAG_BITS; names missing
    from it are ignored (a file without that flag cannot have it set).
    """
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


def verdicts(
    table: Mapping[str, Any], config: PhotometryConfig, flag_bits: dict[str, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(detected, good) of a measured table: detected = measured & SNR >= threshold; good as good_verdict."""
    with np.errstate(invalid="ignore"):
        detected = table["measured"] & (table["snr"] >= config.snr_threshold)
    return detected, good_verdict(table, config, flag_bits)
