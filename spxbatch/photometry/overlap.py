"""Exact area of overlap between a circle and axis-aligned pixels, vectorised (for per-pixel weights).

sep gives aperture sums but not the per-pixel weights w; the error of a sum needs sum(w^2 var), which
sep (and photutils) replace by sum(w var), overestimating the error by ~9% for a 2.5 px radius.
"""

from __future__ import annotations

import numpy as np


def _g(a: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Integral of sqrt(r^2 - t^2) dt from 0 to a, for 0 <= a <= r."""
    return 0.5 * (a * np.sqrt(np.maximum(r * r - a * a, 0.0)) + r * r * np.arcsin(np.clip(a / r, -1.0, 1.0)))


def _quadrant(x: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Signed area of the circle (radius r, centre 0) within [0, x] x [0, y] (odd in x and in y)."""
    sx, sy = np.sign(x), np.sign(y)
    x = np.minimum(np.abs(x), r)
    y = np.minimum(np.abs(y), r)
    t = np.sqrt(np.maximum(r * r - y * y, 0.0))  # beyond t the circle is below the line at height y
    a = np.minimum(x, t)
    return sx * sy * (y * a + _g(x, r) - _g(a, r))


def circle_pixel_overlap(dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Area of the unit pixel centred at (dx, dy) (relative to the circle's centre) inside radius r."""
    x0, x1 = dx - 0.5, dx + 0.5
    y0, y1 = dy - 0.5, dy + 0.5
    area = _quadrant(x1, y1, r) - _quadrant(x0, y1, r) - _quadrant(x1, y0, r) + _quadrant(x0, y0, r)
    return np.clip(area, 0.0, 1.0)  # rounding: -3e-17 for a pixel the circle just misses
