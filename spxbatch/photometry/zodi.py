"""Per-source zodi scale: s = sum(w I Z) / sum(w Z^2), w = 1/var, over the qualifying pixels of a FIXED
box around the source (SPXQuery fits whatever array it was given, so its s depends on the cutout).

The per-pixel products are quantised to integers (2^-24 steps) and summed exactly (int64): through a
summed-area table for dense sources (O(1) per source) or over gathered boxes for sparse ones. Integer
sums are exact, so both give the same bits, whatever region holds the box.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from spxbatch.level2.region import ImageRegion
from spxbatch.photometry.config import PhotometryConfig
from spxbatch.photometry.gather import Boxes, chunks_of, exact_box_sums
from spxbatch.photometry.masks import Pixels
from spxbatch.photometry.positions import LocalPixels

_Q = 2.0**24
_QMAX = 2.0**38


def _quantised(v: np.ndarray) -> np.ndarray:
    """Fixed-point int64 image of v (non-finite -> 0, clipped to +-2^38); v is overwritten."""
    v[~np.isfinite(v)] = 0.0  # as nan_to_num(nan=posinf=neginf=0), a third of its time
    np.clip(v, -_QMAX, _QMAX, out=v)
    v *= _Q
    np.rint(v, out=v)
    return v.astype(np.int64)


def zodi_scale(
    image: np.ndarray,
    zodi: np.ndarray,
    variance: np.ndarray,
    qualifies: np.ndarray,
    ix: np.ndarray,
    iy: np.ndarray,
    half: int,
    n_in_frame: np.ndarray,
    min_fraction: float,
    min_scale: float,
    max_scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(scale, fell_back) per source, from region arrays `image`, `zodi`, `variance` (weights 1/variance) and
    the boolean `qualifies` (good, non-SOURCE, finite), over the box of half-size `half` around each (ix, iy).
    Weights are computed only where they are used (the gathered boxes of sparse sources).
    `n_in_frame` is the number of box pixels inside the parent frame: the fraction of qualifying pixels
    is counted against it, so the frame's own edge does not look like bad data, while a region too small
    to hold the box does (its sources are REGION_CLIPPED anyway).
    """
    side = 2 * half + 1
    if ix.size * side * side < image.size:  # sparse sources: sum the gathered boxes (same integers)
        num = np.empty(ix.size)
        den = np.empty(ix.size)
        nq = np.empty(ix.size, dtype=np.int64)
        for sl in chunks_of(ix.size, side * side):
            b = Boxes.around(ix[sl], iy[sl], half, image.shape)
            q = b.inside & b.take(qualifies)
            with np.errstate(divide="ignore", invalid="ignore"):
                w = np.where(q, 1.0 / b.take(variance), 0.0)
            z = np.where(q, b.take(zodi).astype(float), 0.0)
            num[sl] = _quantised(w * b.take(image) * z).sum(axis=1) / _Q
            den[sl] = _quantised(w * z * z).sum(axis=1) / _Q
            nq[sl] = q.sum(axis=1)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(qualifies, 1.0 / variance, 0.0)
        z = np.where(qualifies, zodi, np.float64(0.0))
        wiz = np.multiply(w, image)
        wiz *= z  # in place: the same products as w * image * z, two fewer image-size arrays
        num = exact_box_sums(_quantised(wiz), ix, iy, half) / _Q
        w *= z
        w *= z
        den = exact_box_sums(_quantised(w), ix, iy, half) / _Q
        nq = exact_box_sums(qualifies, ix, iy, half)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = num / den
    ok = (nq >= min_fraction * np.maximum(n_in_frame, 1)) & np.isfinite(s) & (s > min_scale) & (s <= max_scale)
    return np.where(ok, s, 1.0), ~ok


class ZodiScale(NamedTuple):
    """Per source: the factor applied to the ZODI plane before subtraction, and where a fitted scale fell
    back to 1."""

    scale: np.ndarray
    fell_back: np.ndarray


def source_zodi_scale(config: PhotometryConfig, region: ImageRegion, pix: Pixels, at: LocalPixels,
                      bits: dict[str, int]) -> ZodiScale:
    """The zodi scale of each source by `config.zodi`: fitted over the good, non-SOURCE pixels of its box
    ('fit'), 1 ('fixed') or 0 ('none')."""
    k = at.ix.size
    if config.zodi != "fit":
        return ZodiScale(np.full(k, 1.0 if config.zodi == "fixed" else 0.0), np.zeros(k, dtype=bool))
    qualifies = ~pix.bad & np.isfinite(pix.zodi)
    if "SOURCE" in bits:
        qualifies &= (pix.flags & (1 << bits["SOURCE"])) == 0
    hz = config.zodi_halfsize
    nyp, nxp = region.parent_shape
    pix_x, pix_y = at.ix + region.x0, at.iy + region.y0
    n_frame = (np.minimum(pix_x + hz, nxp - 1) - np.maximum(pix_x - hz, 0) + 1) * (
        np.minimum(pix_y + hz, nyp - 1) - np.maximum(pix_y - hz, 0) + 1
    )
    scale, fell = zodi_scale(pix.image, pix.zodi, pix.variance, qualifies, at.ix, at.iy, hz, n_frame,
                             config.zodi_min_fraction, config.zodi_min_scale, config.zodi_max_scale)
    return ZodiScale(scale, fell)
