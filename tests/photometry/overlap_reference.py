"""The exact circle-pixel overlap written the plain way (four signed quadrant integrals per pixel): the
reference the kernel's shared-term `grid_overlaps` and the aperture weights are tested against."""

from __future__ import annotations

import numpy as np


def _g(a, r):
    return 0.5 * (a * np.sqrt(np.maximum(r * r - a * a, 0.0)) + r * r * np.arcsin(np.clip(a / r, -1.0, 1.0)))


def _quadrant(x, y, r):
    sx, sy = np.sign(x), np.sign(y)
    x = np.minimum(np.abs(x), r)
    y = np.minimum(np.abs(y), r)
    a = np.minimum(x, np.sqrt(np.maximum(r * r - y * y, 0.0)))
    return sx * sy * (y * a + _g(x, r) - _g(a, r))


def pixel_overlap(dx, dy, r):
    """Area of the unit pixel centred at (dx, dy) (relative to the circle's centre) inside radius r, corner by
    corner, every term computed per pixel (arrays of one shape, or broadcastable)."""
    x0, x1, y0, y1 = dx - 0.5, dx + 0.5, dy - 0.5, dy + 0.5
    area = _quadrant(x1, y1, r) - _quadrant(x0, y1, r) - _quadrant(x1, y0, r) + _quadrant(x0, y0, r)
    return np.clip(area, 0.0, 1.0)
