"""Where each source falls: its parent-frame pixel and whether it can be measured there, and, inside one
region, its local position, nearest pixel and whether its neighbourhood lies inside the region.

Positions come from the sky through the parent frame's WCS (`level2.wcs.sky_to_parent_pixel`: exact and
batch-independent), so a cutout, a row strip and the whole frame place a source on the same pixel.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from astropy.wcs import WCS

from spxbatch.level2.region import ImageRegion
from spxbatch.level2.wcs import sky_to_parent_pixel

#: Width of the `status` column: the longest status is 'outside_region' / 'no_background'.
STATUS_DTYPE = "<U14"


class FramePositions(NamedTuple):
    """Each source's 0-based parent pixel (x, y) and its status: 'ok' (to be measured), 'bad_position'
    (no finite pixel), 'off_frame', 'near_edge' (within min_edge_distance) or 'outside_region'."""

    x: np.ndarray
    y: np.ndarray
    status: np.ndarray


def frame_positions(region: ImageRegion, ra: np.ndarray, dec: np.ndarray, wcs: WCS,
                    min_edge_distance: float) -> FramePositions:
    """Parent pixels of sky positions (deg) on `region`'s frame, and which of them can be measured."""
    x, y = sky_to_parent_pixel(region.image_header, ra, dec, wcs=wcs)
    nyp, nxp = region.parent_shape
    ny, nx = region.shape
    xl, yl = x - region.x0, y - region.y0
    status = np.full(x.size, "ok", dtype=STATUS_DTYPE)
    finite = np.isfinite(x) & np.isfinite(y)
    with np.errstate(invalid="ignore"):
        in_frame = finite & (x >= -0.5) & (x < nxp - 0.5) & (y >= -0.5) & (y < nyp - 0.5)
        edge_dist = np.minimum.reduce([x + 0.5, nxp - 0.5 - x, y + 0.5, nyp - 0.5 - y])
        in_region = (xl >= -0.5) & (xl < nx - 0.5) & (yl >= -0.5) & (yl < ny - 0.5)
    status[~finite] = "bad_position"
    status[finite & ~in_frame] = "off_frame"
    status[in_frame & (edge_dist < min_edge_distance)] = "near_edge"
    status[in_frame & (edge_dist >= min_edge_distance) & ~in_region] = "outside_region"
    return FramePositions(x, y, status)


class LocalPixels(NamedTuple):
    """Sources inside one region: region-local position (xl, yl), nearest pixel (ix, iy), and `clipped`
    where the source's neighbourhood reaches beyond the region but not beyond the frame (the region is too
    small to measure it as the whole frame would)."""

    xl: np.ndarray
    yl: np.ndarray
    ix: np.ndarray
    iy: np.ndarray
    clipped: np.ndarray


def local_pixels(region: ImageRegion, x: np.ndarray, y: np.ndarray, halfsize: int, whole: bool) -> LocalPixels:
    """Local positions of sources at parent pixels (x, y) inside `region`, with `halfsize` the neighbourhood a
    measurement reads; `whole` (a region-wide background) never counts as clipped."""
    nyp, nxp = region.parent_shape
    ny, nx = region.shape
    xl, yl = x - region.x0, y - region.y0
    ix = np.floor(xl + 0.5).astype(np.int64)
    iy = np.floor(yl + 0.5).astype(np.int64)
    # the neighbourhood must lie inside the region wherever it lies inside the frame
    lo_x = np.maximum(ix - halfsize, -region.x0)
    hi_x = np.minimum(ix + halfsize, nxp - 1 - region.x0)
    lo_y = np.maximum(iy - halfsize, -region.y0)
    hi_y = np.minimum(iy + halfsize, nyp - 1 - region.y0)
    clipped = (lo_x < 0) | (hi_x > nx - 1) | (lo_y < 0) | (hi_y > ny - 1)
    if whole:
        clipped[:] = False
    return LocalPixels(xl, yl, ix, iy, clipped)
