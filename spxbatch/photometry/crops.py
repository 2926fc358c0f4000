"""Sparse sources are measured on crops of their region: the cost follows the sources, not the region's size.

A measurement reads only its neighbourhood, so a crop that holds every neighbourhood of its sources gives
the same numbers as the whole region.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from spxbatch.level2.region import ImageRegion

#: Cost model of a crop: fixed seconds per crop and seconds per pixel of the region-wide passes.
CROP_COST_S = 3e-3
PIXEL_COST_S = 3e-8


def region_crops(region: ImageRegion, xl: np.ndarray, yl: np.ndarray, halfsize: int,
                 whole: bool) -> Iterator[tuple[np.ndarray, ImageRegion]]:
    """(rows, crop) pairs: the sources grouped by square tiles of the region, each with the tile grown by
    `halfsize` (clipped to the region). The tile side minimises an estimate of the cost; the whole region
    is one crop when that is cheapest (dense sources) or when `whole` (a global background)."""
    ny, nx = region.shape
    ix = np.floor(xl + 0.5).astype(np.int64)
    iy = np.floor(yl + 0.5).astype(np.int64)
    side = 0 if whole else _cheapest_tile_side(ix, iy, nx, ny, halfsize)
    if side == 0:
        yield np.arange(xl.size), region
        return
    key = (iy // side) * (nx // side + 1) + ix // side
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    for rows in np.split(order, bounds):
        tx, ty = ix[rows[0]] // side, iy[rows[0]] // side
        x0 = max(tx * side - halfsize, 0)
        y0 = max(ty * side - halfsize, 0)
        x1 = min((tx + 1) * side + halfsize, nx)
        y1 = min((ty + 1) * side + halfsize, ny)
        yield rows, crop(region, x0, y0, x1, y1)


def _cheapest_tile_side(ix: np.ndarray, iy: np.ndarray, nx: int, ny: int, halfsize: int) -> int:
    """The tile side (px) of least estimated cost for sources at pixels (ix, iy); 0: the whole region."""
    best_side, best_cost = 0, CROP_COST_S + PIXEL_COST_S * nx * ny
    for side in (32, 64, 128, 256, 512, 1024):
        if side >= max(nx, ny):
            break
        keys = np.unique((iy // side) * (nx // side + 1) + ix // side)
        cost = keys.size * (CROP_COST_S + PIXEL_COST_S * (side + 2 * halfsize) ** 2)
        if cost < best_cost:
            best_side, best_cost = side, cost
    return best_side


def crop(region: ImageRegion, x0: int, y0: int, x1: int, y1: int) -> ImageRegion:
    """The rectangle [x0, x1) x [y0, y1) of a region (region-local), as a region of the same parent."""

    def cut(a):
        return None if a is None else np.ascontiguousarray(a[y0:y1, x0:x1])

    return replace(
        region, image=cut(region.image), flags=cut(region.flags), variance=cut(region.variance),
        zodi=cut(region.zodi), x0=region.x0 + x0, y0=region.y0 + y0, solid_angle=cut(region.solid_angle),
        cwave=cut(region.cwave), cband=cut(region.cband), flux_factor=cut(region.flux_factor),
    )
