"""Which pixels the sources of one image need, as plain geometry (arrays in, boxes out; no I/O).

A source needs the `halfsize` neighbourhood of its pixel (plus one safety pixel); neighbourhoods become
full-width row strips (one byte range per plane), or boxes (one range per row and plane, for servers that
take multi-range requests), or IRSA cutouts: one per tight group of sources on the sky, sized so that every
member's neighbourhood fits.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from spxbatch.level2.constants import PIXEL_SCALE_ARCSEC
from spxbatch.level2.layout import PLANES
from spxbatch.sky import mean_direction, separation_deg, tangent_offsets

#: One extra row/column around each neighbourhood: positions rounded differently never fall outside.
SAFETY_PX = 1
#: A cutout's span (px) is rounded up after this much is taken off: the round-off of a group centre (~1e-11 px
#: for one source) never grows a cutout by a pixel.
SPAN_TOLERANCE_PX = 1e-6
#: Native pixels per radian.
_PX_PER_RAD = np.rad2deg(1.0) * 3600.0 / PIXEL_SCALE_ARCSEC


class Box(NamedTuple):
    """A rectangle of the parent frame, [x0, x1) x [y0, y1), and the sources (indices) it serves."""

    x0: int
    x1: int
    y0: int
    y1: int
    members: np.ndarray


class Neighbourhoods(NamedTuple):
    """Each source's pixel box (inclusive bounds, clipped to the frame) and whether it touches the frame."""

    xlo: np.ndarray
    xhi: np.ndarray
    ylo: np.ndarray
    yhi: np.ndarray
    on_image: np.ndarray


def neighbourhoods(x: np.ndarray, y: np.ndarray, halfsize: int, shape: tuple[int, int]) -> Neighbourhoods:
    """The neighbourhoods of sources at 0-based parent pixels (x, y) on a frame of `shape` (ny, nx)."""
    ny, nx = shape
    h = halfsize + SAFETY_PX
    with np.errstate(invalid="ignore"):
        xlo, xhi = np.floor(x) - h, np.ceil(x) + h
        ylo, yhi = np.floor(y) - h, np.ceil(y) + h
        ok = np.isfinite(x) & np.isfinite(y) & (xhi >= 0) & (xlo <= nx - 1) & (yhi >= 0) & (ylo <= ny - 1)
    clip = [np.clip(np.nan_to_num(a), 0, m - 1).astype(np.int64)
            for a, m in ((xlo, nx), (xhi, nx), (ylo, ny), (yhi, ny))]
    return Neighbourhoods(clip[0], clip[1], clip[2], clip[3], ok)


def inside(nb: Neighbourhoods, x0: int, y0: int, shape: tuple[int, int]) -> np.ndarray:
    """Mask of the sources whose whole neighbourhood lies inside the region of `shape` (ny, nx) at (x0, y0)."""
    ny, nx = shape
    return nb.on_image & (nb.xlo >= x0) & (nb.xhi < x0 + nx) & (nb.ylo >= y0) & (nb.yhi < y0 + ny)


def plan_strips(ylo: np.ndarray, yhi: np.ndarray, ok: np.ndarray, merge_gap_rows: int, nx: int) -> list[Box]:
    """Full-width row strips covering every on-image source's rows; strips closer than the gap are merged."""
    idx = np.flatnonzero(ok)
    idx = idx[np.argsort(ylo[idx], kind="stable")]
    strips: list[tuple[int, int, list[int]]] = []
    for i in idx:
        lo, hi = int(ylo[i]), int(yhi[i]) + 1
        if strips and lo - strips[-1][1] <= merge_gap_rows:
            y0, y1, members = strips[-1]
            strips[-1] = (y0, max(y1, hi), [*members, i])
        else:
            strips.append((lo, hi, [i]))
    return [Box(0, nx, y0, y1, np.sort(np.asarray(m, dtype=np.int64))) for y0, y1, m in strips]


def plan_boxes(xlo: np.ndarray, xhi: np.ndarray, ylo: np.ndarray, yhi: np.ndarray, ok: np.ndarray) -> list[Box]:
    """One box per on-image source's neighbourhood; overlapping or touching boxes become their bounding box."""
    idx = np.flatnonzero(ok)
    b = np.column_stack([xlo[idx], xhi[idx] + 1, ylo[idx], yhi[idx] + 1]).astype(np.int64)
    members = [[int(i)] for i in idx]
    changed = True
    while changed and len(b) > 1:
        changed = False
        keep = np.ones(len(b), dtype=bool)
        for i in range(len(b)):
            if not keep[i]:
                continue
            hit = keep & (b[:, 0] <= b[i, 1]) & (b[i, 0] <= b[:, 1]) & (b[:, 2] <= b[i, 3]) & (b[i, 2] <= b[:, 3])
            hit[i] = False
            if hit.any():
                group = np.flatnonzero(hit)
                b[i] = [min(b[i, 0], b[group, 0].min()), max(b[i, 1], b[group, 1].max()),
                        min(b[i, 2], b[group, 2].min()), max(b[i, 3], b[group, 3].max())]
                for j in group:
                    members[i] += members[j]
                keep[group] = False
                changed = True
        b = b[keep]
        members = [m for m, k in zip(members, keep, strict=True) if k]
    order = np.lexsort((b[:, 0], b[:, 2])) if len(b) else []
    return [Box(int(b[k, 0]), int(b[k, 1]), int(b[k, 2]), int(b[k, 3]),
                np.sort(np.asarray(members[k], dtype=np.int64))) for k in order]


def box_parts(boxes: list[Box], nx: int) -> int:
    """How many byte ranges reading the boxes takes: per plane, one for a full-width box, else one per row."""
    return sum(len(PLANES) * (1 if x1 - x0 == nx else y1 - y0) for x0, x1, y0, y1, _ in boxes)


def group_on_sky(ra: np.ndarray, dec: np.ndarray, max_span_px: float) -> list[np.ndarray]:
    """Groups of sources whose tangent-plane box is at most `max_span_px` native pixels wide: the occupied
    cells of a grid of that pitch (vectorised; a greedy merge was quadratic in the number of sources). The
    tangent point is the mean position (its RA taken across 0 when the RAs wrap)."""
    if ra.size == 0:
        return []
    xi, eta = tangent_offsets(ra, dec, _mean_ra(ra), np.mean(dec))
    u, v = xi * _PX_PER_RAD, eta * _PX_PER_RAD
    pitch = max(float(max_span_px), 1e-9)
    cells = np.stack([np.floor((u - u.min()) / pitch), np.floor((v - v.min()) / pitch)], axis=1)
    _, cell_of = np.unique(cells, axis=0, return_inverse=True)
    order = np.argsort(cell_of.ravel(), kind="stable")
    bounds = np.flatnonzero(np.diff(cell_of.ravel()[order])) + 1
    return [np.sort(g).astype(np.int64) for g in np.split(order, bounds)]


def _mean_ra(ra: np.ndarray) -> float:
    """The plain mean RA, or, when the values span more than half the circle (they wrap at 0), the RA of
    their mean direction on the equator."""
    if np.ptp(ra) <= 180.0:
        return float(np.mean(ra))
    return mean_direction(ra, np.zeros_like(ra))[0]


def span_px(ra: np.ndarray, dec: np.ndarray) -> float:
    """Twice the largest separation (native pixels) of the positions from their mean direction: the side of
    the square the group needs."""
    c_ra, c_dec = mean_direction(ra, dec)
    return 2.0 * float(separation_deg(ra, dec, c_ra, c_dec).max()) * 3600.0 / PIXEL_SCALE_ARCSEC


def cutout_side_px(ra: np.ndarray, dec: np.ndarray, halfsize: int, margin_px: int) -> int:
    """The side (px) of a square cutout centred on the group's mean direction that holds every member's
    neighbourhood, plus `margin_px` on each side."""
    return int(np.ceil(span_px(ra, dec) - SPAN_TOLERANCE_PX)) + 2 * (halfsize + SAFETY_PX + margin_px) + 1


def cutout_url(url: str, ra: float, dec: float, size_px: int, gzip: bool) -> str:
    """IRSA's cutout query string on a file URL (sky centre in degrees, square size in pixels)."""
    return f"{url}?center={ra:.8f},{dec:.8f}&size={size_px}px" + ("" if gzip else "&gzip=false")
