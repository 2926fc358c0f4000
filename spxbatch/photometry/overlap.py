"""Exact area of overlap between a circle and axis-aligned pixels, vectorised (for per-pixel weights).

sep gives aperture sums but not the per-pixel weights w; the error of a sum needs sum(w^2 var), which
sep (and photutils) replace by sum(w var), overestimating the error by ~9% for a 2.5 px radius.

The area is four signed quadrant integrals, one per pixel corner. Their terms that depend on a corner's x
only (or y only) are shared by a whole column (row) of a source's pixels, so `grid_overlaps` computes them
once per source and column (row) and only the rest per pixel: the same operations on the same numbers as
the per-pixel formula, so the same bits, in half the time.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def _g(a: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Integral of sqrt(r^2 - t^2) dt from 0 to a, for 0 <= a <= r."""
    return 0.5 * (a * np.sqrt(np.maximum(r * r - a * a, 0.0)) + r * r * np.arcsin(np.clip(a / r, -1.0, 1.0)))


class _Side(NamedTuple):
    """The terms of one corner coordinate v: its sign, m = min(|v|, r), and g = _g(m, r) (x) or
    t = sqrt(r^2 - m^2) (y: beyond t the circle is below the line at height y)."""

    sign: np.ndarray
    m: np.ndarray
    term: np.ndarray


def _x_side(x: np.ndarray, r: np.ndarray) -> _Side:
    m = np.minimum(np.abs(x), r)
    return _Side(np.sign(x), m, _g(m, r))


def _y_side(y: np.ndarray, r: np.ndarray) -> _Side:
    m = np.minimum(np.abs(y), r)
    return _Side(np.sign(y), m, np.sqrt(np.maximum(r * r - m * m, 0.0)))


def _quadrant(sx: _Side, sy: _Side, r: np.ndarray) -> np.ndarray:
    """Signed area of the circle (radius r, centre 0) within [0, x] x [0, y] (odd in x and in y)."""
    a = np.minimum(sx.m, sy.term)
    return sx.sign * sy.sign * (sy.m * a + sx.term - _g(a, r))


def grid_overlaps(dx: np.ndarray, dy: np.ndarray, r: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                  lines: np.ndarray) -> np.ndarray:
    """Areas inside radius r[rows] of the unit pixels centred at (dx[rows, cols], dy[rows, lines]) relative to
    the circles' centres: dx (N, C) are the pixel columns and dy (N, L) the pixel lines of N circles."""
    rr = r[:, None]
    x0, x1 = _x_side(dx - 0.5, rr), _x_side(dx + 0.5, rr)
    y0, y1 = _y_side(dy - 0.5, rr), _y_side(dy + 0.5, rr)
    rp = r[rows]

    def corner(sx: _Side, sy: _Side) -> np.ndarray:
        return _quadrant(_Side(*(v[rows, cols] for v in sx)), _Side(*(v[rows, lines] for v in sy)), rp)

    area = corner(x1, y1) - corner(x0, y1) - corner(x1, y0) + corner(x0, y0)
    return np.clip(area, 0.0, 1.0)  # rounding: -3e-17 for a pixel the circle just misses
