"""Which catalog points fall inside which image footprints: a vectorised spherical point-in-polygon test.

Footprints are convex spherical polygons (a detector's four corners). Each edge is a great circle; a point
is inside when it is on the inner side of every edge plane, i.e. dot(p, n_i) >= 0 with n_i the inward unit
normal. Vertices are first sorted by position angle around the polygon centre and each normal is oriented
towards the centre, so the result does not depend on the winding or vertex order, and nothing depends on
RA, so it is exact across RA = 0/360 and at the poles. A margin widens every edge by an angle:
dot(p, n_i) >= -sin(margin).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spxbatch.spherex import PIXEL_SCALE_ARCSEC

#: Pairs tested per vectorised chunk (bounds temporary memory to ~100 bytes x this).
_CHUNK = 1 << 18


def radec_to_xyz(ra_deg, dec_deg) -> np.ndarray:
    """Unit vectors (..., 3) of positions in degrees."""
    ra = np.radians(np.asarray(ra_deg, dtype=np.float64))
    dec = np.radians(np.asarray(dec_deg, dtype=np.float64))
    cos_dec = np.cos(dec)
    return np.stack([cos_dec * np.cos(ra), cos_dec * np.sin(ra), np.sin(dec)], axis=-1)


def xyz_to_radec(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ra in [0, 360), dec) in degrees of (not necessarily unit) vectors (..., 3)."""
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    ra = np.degrees(np.arctan2(y, x)) % 360.0
    return ra, np.degrees(np.arctan2(z, np.hypot(x, y)))


def margin_deg(margin_px: float) -> float:
    """A margin in SPHEREx pixels (6.15 arcsec) as degrees."""
    return float(margin_px) * PIXEL_SCALE_ARCSEC / 3600.0


@dataclass
class Footprints:
    """Convex spherical polygons ready for vectorised tests.

    `centre` (n, 3) unit vectors, `normals` (n, k, 3) inward unit edge normals (polygons with fewer than k
    edges repeat their first normal), `radius` (n,) the angle (rad) from the centre to the farthest vertex.
    """

    centre: np.ndarray
    normals: np.ndarray
    radius: np.ndarray

    def __len__(self) -> int:
        return len(self.centre)

    @classmethod
    def from_corners(cls, poly_ra: Sequence, poly_dec: Sequence) -> Footprints:
        """Footprints from per-polygon corner lists in degrees (a closing repeat of the first corner is ok)."""
        verts = [_clean(radec_to_xyz(r, d)) for r, d in zip(poly_ra, poly_dec, strict=True)]
        n = len(verts)
        k = max((len(v) for v in verts), default=3)
        centre = np.empty((n, 3))
        normals = np.empty((n, k, 3))
        radius = np.empty(n)
        for nv in sorted({len(v) for v in verts}):
            idx = np.array([i for i, v in enumerate(verts) if len(v) == nv])
            c, nrm, rad = _prepare(np.stack([verts[i] for i in idx]))
            centre[idx], radius[idx] = c, rad
            normals[idx, :nv] = nrm
            normals[idx, nv:] = nrm[:, :1]
        return cls(centre, normals, radius)

    def contains(self, poly_index: np.ndarray, xyz: np.ndarray, margin_deg: float = 0.0) -> np.ndarray:
        """Pairwise test: is point xyz[j] inside polygon poly_index[j] (widened by `margin_deg`)?"""
        poly_index = np.asarray(poly_index, dtype=np.intp)
        out = np.empty(len(poly_index), dtype=bool)
        slack = -np.sin(np.radians(margin_deg))
        for start in range(0, len(poly_index), _CHUNK):
            sl = slice(start, start + _CHUNK)
            p, pts = poly_index[sl], xyz[sl]
            dots = np.einsum("pkc,pc->pk", self.normals[p], pts)
            out[sl] = (dots.min(axis=1) >= slack) & (np.einsum("pc,pc->p", self.centre[p], pts) > 0)
        return out

    def match(self, ra_deg, dec_deg, margin_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """All (polygon, point) index pairs with the point inside the polygon (widened by `margin_deg`).

        Candidates come from a k-d tree on unit vectors (points within each polygon's circumscribed circle
        plus the margin); only those are tested exactly, a bounded number of candidates at a time.
        Pairs are sorted by (polygon, point).
        """
        from scipy.spatial import cKDTree

        empty = np.empty(0, dtype=np.int64)
        if len(self) == 0 or len(ra_deg) == 0:
            return empty, empty
        xyz = radec_to_xyz(ra_deg, dec_deg)
        angle = np.minimum(self.radius + np.radians(margin_deg), np.pi)
        chord = 2.0 * np.sin(angle / 2.0) * (1 + 1e-9) + 1e-12
        tree = cKDTree(xyz)
        counts = np.asarray(tree.query_ball_point(self.centre, chord, return_length=True), dtype=np.int64)
        cum = np.cumsum(counts)
        polys, points = [], []
        start = 0
        while start < len(self):
            done = cum[start - 1] if start else 0
            stop = max(start + 1, int(np.searchsorted(cum, done + 8 * _CHUNK, side="right")))
            hits = tree.query_ball_point(self.centre[start:stop], chord[start:stop], return_sorted=True)
            n = counts[start:stop]
            if n.sum():
                poly = np.repeat(np.arange(start, stop, dtype=np.int64), n)
                point = np.concatenate([np.asarray(h, dtype=np.int64) for h in hits])
                keep = self.contains(poly, xyz[point], margin_deg)
                polys.append(poly[keep])
                points.append(point[keep])
            start = stop
        if not polys:
            return empty, empty
        return np.concatenate(polys), np.concatenate(points)


def _clean(v: np.ndarray) -> np.ndarray:
    """Drop consecutive duplicate vertices and a closing repeat of the first one."""
    keep = np.ones(len(v), dtype=bool)
    keep[1:] = np.any(np.abs(np.diff(v, axis=0)) > 1e-14, axis=1)
    v = v[keep]
    if len(v) > 1 and np.all(np.abs(v[-1] - v[0]) <= 1e-14):
        v = v[:-1]
    if len(v) < 3:
        raise ValueError("a footprint needs at least 3 distinct corners")
    return v


def _prepare(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres, inward edge normals and radii of same-size polygons v (n, k, 3), vertices sorted by angle."""
    c = v.sum(axis=1)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    # tangent basis at the centre; near the poles use the x axis as the reference direction
    ref = np.where(np.abs(c[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])
    east = np.cross(ref, c)
    east /= np.linalg.norm(east, axis=1, keepdims=True)
    north = np.cross(c, east)
    angle = np.arctan2(np.einsum("nkc,nc->nk", v, north), np.einsum("nkc,nc->nk", v, east))
    v = np.take_along_axis(v, np.argsort(angle, axis=1)[:, :, None], axis=1)
    normals = np.cross(v, np.roll(v, -1, axis=1))
    normals /= np.linalg.norm(normals, axis=2, keepdims=True)
    normals *= np.sign(np.einsum("nkc,nc->nk", normals, c))[:, :, None]
    radius = np.arccos(np.clip(np.einsum("nkc,nc->nk", v, c), -1.0, 1.0)).max(axis=1)
    return c, normals, radius
