"""Catalog neighbours: a measurement is BLENDED when another source's aperture overlaps its own, and every
catalog source's disk is kept out of the others' background pixels."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.spatial import cKDTree

from spxbatch.level2.region import ImageRegion
from spxbatch.photometry.config import PhotometryConfig
from spxbatch.photometry.gather import Boxes, chunks_of

#: Two catalog positions closer than this (px) are the same source (self-matching of the neighbours).
SELF_TOL = 1e-3


class Neighbours(NamedTuple):
    """Parent pixels (x, y) of every catalog source near the region (finite ones), and per measured source
    how many of them are itself (`self_count`: its own disk is not another's) and whether it is `blended`."""

    x: np.ndarray
    y: np.ndarray
    self_count: np.ndarray
    blended: np.ndarray


class NeighbourIndex(NamedTuple):
    """Catalog neighbours placed on one frame: their finite parent pixels (x, y) and a KD-tree of them (None
    when there are none), built once per image (`frame.Frame`), not per region."""

    x: np.ndarray
    y: np.ndarray
    tree: cKDTree | None


def neighbour_index(x: np.ndarray, y: np.ndarray) -> NeighbourIndex:
    """The index of neighbours at parent pixels (x, y), non-finite ones dropped."""
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = np.asarray(x)[finite], np.asarray(y)[finite]
    return NeighbourIndex(x, y, cKDTree(np.column_stack([x, y])) if x.size else None)


def catalog_neighbours(index: NeighbourIndex, x: np.ndarray, y: np.ndarray, radius: np.ndarray) -> Neighbours:
    """The catalog neighbours of `index` of sources at parent pixels (x, y) with aperture radii `radius`;
    blended = another within 2 r."""
    self_count = np.zeros(x.size, dtype=np.int64)
    blended = np.zeros(x.size, dtype=bool)
    if index.tree is not None:
        pts = np.column_stack([x, y])
        self_count = index.tree.query_ball_point(pts, SELF_TOL, return_length=True)
        close = index.tree.query_ball_point(pts, 2.0 * radius, return_length=True) - self_count
        blended = close > 0
    return Neighbours(index.x, index.y, self_count, blended)


def mask_radius(config: PhotometryConfig, r_max: float) -> float:
    """Radius (px) of each catalog source's disk kept out of background pixels (default r_max + gap)."""
    if config.neighbour_mask_radius is not None:
        return config.neighbour_mask_radius
    return r_max + config.annulus_gap


class NeighbourMask(NamedTuple):
    """For one region: per pixel, how many catalog sources lie within `radius` of its centre (`count`),
    and per source its `self_count` (a count of 1 within its own disk may be itself)."""

    count: np.ndarray
    radius: float
    self_count: np.ndarray


def neighbour_mask(region: ImageRegion, nb_x: np.ndarray, nb_y: np.ndarray, radius: float,
                   self_count: np.ndarray) -> NeighbourMask:
    """The neighbour mask of `region` for catalog sources at parent pixels (nb_x, nb_y)."""
    return NeighbourMask(neighbour_count(region.shape, region.x0, region.y0, nb_x, nb_y, radius), radius,
                         self_count)


def neighbour_count(shape: tuple[int, int], x0: int, y0: int, nb_x: np.ndarray, nb_y: np.ndarray,
                    radius: float) -> np.ndarray:
    """Count image of a region of `shape` at parent origin (x0, y0): how many catalog sources (parent
    positions nb_x, nb_y) lie within `radius` of each pixel centre."""
    ny, nx = shape
    h = math.ceil(radius) + 1
    xl = nb_x - x0
    yl = nb_y - y0
    near = np.isfinite(xl) & (xl > -h - 1) & (xl < nx + h) & (yl > -h - 1) & (yl < ny + h)
    xl, yl = xl[near], yl[near]
    count = np.zeros(ny * nx, dtype=np.int32)
    for sl in chunks_of(xl.size, (2 * h + 1) ** 2):
        b = Boxes.ring(np.floor(xl[sl] + 0.5).astype(np.int64), np.floor(yl[sl] + 0.5).astype(np.int64),
                       0.0, radius, shape)
        sel = b.inside & (b.centre_distance(xl[sl], yl[sl]) < radius)
        count += np.bincount(b.flat[sel], minlength=ny * nx).astype(np.int32)
    return count.reshape(shape)
