"""Vectorised gathering of the pixels around many sources (one fancy-index per array and pixel set).

A pixel set is a list of integer offsets from each source's nearest pixel: a square box, or a ring that
holds every pixel whose centre can fall in an annulus whatever the sub-pixel phase. Rows whose set lies
wholly inside the region (nearly all) skip the bounds checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

#: Largest distance between a source and the centre of its nearest pixel.
_MAX_PHASE = np.sqrt(0.5)
#: Elements per gathered (sources x pixels) array: bounds memory at ~32 MB per float64 array.
CHUNK_ELEMENTS = 4_000_000


@dataclass
class Boxes:
    """Pixels at offsets (ox, oy) from integer centres (ix, iy) of a region of shape (ny, nx).

    `flat` (N, M) indexes the raveled region (clipped, so it is safe where `inside` is False).
    """

    ix: np.ndarray
    iy: np.ndarray
    ox: np.ndarray
    oy: np.ndarray
    flat: np.ndarray
    inside: np.ndarray
    shape: tuple[int, int]

    @classmethod
    def from_offsets(cls, ix: np.ndarray, iy: np.ndarray, ox: np.ndarray, oy: np.ndarray,
                     shape: tuple[int, int]) -> Boxes:
        """Pixel sets at the given offsets around each (ix, iy)."""
        ny, nx = shape
        ix = np.asarray(ix, dtype=np.int64)
        iy = np.asarray(iy, dtype=np.int64)
        flat = (iy * nx + ix)[:, None] + (oy * nx + ox)[None, :]
        if ox.size == 0:
            return cls(ix, iy, ox, oy, flat, np.zeros(flat.shape, dtype=bool), shape)
        interior = (ix + ox.min() >= 0) & (ix + ox.max() < nx) & (iy + oy.min() >= 0) & (iy + oy.max() < ny)
        inside = np.ones(flat.shape, dtype=bool)
        edge = np.flatnonzero(~interior)
        if edge.size:
            px = ix[edge, None] + ox[None, :]
            py = iy[edge, None] + oy[None, :]
            inside[edge] = (px >= 0) & (px < nx) & (py >= 0) & (py < ny)
            flat[edge] = np.clip(py, 0, ny - 1) * nx + np.clip(px, 0, nx - 1)
        return cls(ix, iy, ox, oy, flat, inside, shape)

    @classmethod
    def around(cls, ix: np.ndarray, iy: np.ndarray, half: int, shape: tuple[int, int]) -> Boxes:
        """Square boxes of half-size `half`."""
        off = np.arange(-half, half + 1)
        oy, ox = (a.ravel() for a in np.meshgrid(off, off, indexing="ij"))
        return cls.from_offsets(ix, iy, ox, oy, shape)

    @classmethod
    def ring(cls, ix: np.ndarray, iy: np.ndarray, r_lo: float, r_hi: float, shape: tuple[int, int]) -> Boxes:
        """Every pixel whose centre may lie within [r_lo, r_hi] of a source anywhere in pixel (ix, iy)."""
        half = int(np.ceil(r_hi + _MAX_PHASE))
        off = np.arange(-half, half + 1)
        oy, ox = (a.ravel() for a in np.meshgrid(off, off, indexing="ij"))
        d = np.hypot(ox, oy)
        keep = (d >= r_lo - _MAX_PHASE) & (d <= r_hi + _MAX_PHASE)
        return cls.from_offsets(ix, iy, ox[keep], oy[keep], shape)

    def take(self, image: np.ndarray) -> np.ndarray:
        """Values of `image` at the pixels (garbage where not inside: combine with `inside`)."""
        return np.take(image.reshape(-1), self.flat)

    def centre_distance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Distance (float32: radii are compared, to ~1e-6 px) from each source's exact position to its
        pixels' centres."""
        dx = (self.ix - x).astype(np.float32)[:, None] + self.ox.astype(np.float32)[None, :]
        dy = (self.iy - y).astype(np.float32)[:, None] + self.oy.astype(np.float32)[None, :]
        return np.hypot(dx, dy)


def chunks(n: int, size: int) -> Iterator[slice]:
    """Slices covering range(n) in pieces of at most `size` (bounds the memory of N x M arrays)."""
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def chunks_of(n: int, pixels_per_source: int) -> Iterator[slice]:
    """Slices of range(n) sized so that a (sources x pixels_per_source) array holds at most CHUNK_ELEMENTS."""
    return chunks(n, max(1, CHUNK_ELEMENTS // pixels_per_source))


def ring_size(r_hi: float) -> int:
    """Upper bound of the pixels per source of a pixel set reaching r_hi from the source (for chunking)."""
    return int(4 * (r_hi + 1.5) ** 2)


def exact_box_sums(values: np.ndarray, ix: np.ndarray, iy: np.ndarray, half: int) -> np.ndarray:
    """Sum of the integer (or boolean) image `values` over the box of half-size `half` around each (ix, iy),
    clipped to the image, through an int64 summed-area table: exact (wrap-around cancels in the
    differences), so the result depends only on the box's pixels, never on the region around them."""
    ny, nx = values.shape
    sat = np.zeros((ny + 1, nx + 1), dtype=np.int64)
    with np.errstate(over="ignore"):
        # prefix sums along each (contiguous) row, then row after row down the columns: ~4x faster than
        # numpy's cumsum along axis 0
        np.cumsum(values.astype(np.int64, copy=False), axis=1, out=sat[1:, 1:])
        for row in range(1, ny + 1):
            np.add(sat[row], sat[row - 1], out=sat[row])
        x0 = np.clip(ix - half, 0, nx)
        x1 = np.clip(ix + half + 1, 0, nx)
        y0 = np.clip(iy - half, 0, ny)
        y1 = np.clip(iy + half + 1, 0, ny)
        return sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
