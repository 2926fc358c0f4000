"""Which catalog points fall inside which image footprints: a vectorised spherical point-in-polygon test.

Footprints are convex spherical polygons (a detector's four corners). Each edge is a great circle; a point
is inside when it is on the inner side of every edge plane, i.e. dot(p, n_i) >= 0 with n_i the inward unit
normal. Vertices are first sorted by position angle around the polygon centre and each normal is oriented
towards the centre, so the result does not depend on the winding or vertex order, and nothing depends on
RA, so it is exact across RA = 0/360 and at the poles. A margin widens every edge by an angle:
dot(p, n_i) >= -sin(margin) (and the corners are cut at the circumscribed circle plus the margin).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spxbatch.level2.constants import PIXEL_SCALE_ARCSEC
from spxbatch.sky import radec_of, unit_vectors

#: Pairs tested per vectorised chunk (bounds temporary memory to ~100 bytes x this).
_CHUNK = 1 << 18


def margin_deg(margin_px: float) -> float:
    """A margin in SPHEREx pixels (6.15 arcsec) as degrees."""
    return float(margin_px) * PIXEL_SCALE_ARCSEC / 3600.0


@dataclass
class Footprints:
    """Convex spherical polygons ready for vectorised tests.

    `centre` (n, 3) unit vectors, `normals` (n, k, 3) inward unit edge normals (polygons with fewer than k
    edges repeat their first normal), `radius` (n,) the angle (rad) from the centre to the farthest vertex,
    `inner` (n,) the angle from the centre to the nearest edge.
    """

    centre: np.ndarray
    normals: np.ndarray
    radius: np.ndarray
    inner: np.ndarray

    def __len__(self) -> int:
        return len(self.centre)

    @classmethod
    def from_corners(cls, poly_ra: Sequence, poly_dec: Sequence) -> Footprints:
        """Footprints from per-polygon corner lists in degrees (a closing repeat of the first corner is ok)."""
        verts = [_clean(unit_vectors(r, d)) for r, d in zip(poly_ra, poly_dec, strict=True)]
        n = len(verts)
        k = max((len(v) for v in verts), default=3)
        centre = np.empty((n, 3))
        normals = np.empty((n, k, 3))
        radius = np.empty(n)
        inner = np.empty(n)
        for nv in sorted({len(v) for v in verts}):
            idx = np.array([i for i, v in enumerate(verts) if len(v) == nv])
            c, nrm, rad, inn = _prepare(np.stack([verts[i] for i in idx]))
            centre[idx], radius[idx], inner[idx] = c, rad, inn
            normals[idx, :nv] = nrm
            normals[idx, nv:] = nrm[:, :1]
        return cls(centre, normals, radius, inner)

    def contains(self, poly_index: np.ndarray, xyz: np.ndarray, margin_deg: float = 0.0) -> np.ndarray:
        """Pairwise test: is point xyz[j] inside polygon poly_index[j] (widened by `margin_deg`)?

        The widened polygon is also cut at its circumscribed circle plus the margin. Points nearer the
        centre than the nearest edge (plus the margin) are accepted without the edge test.
        """
        poly_index = np.asarray(poly_index, dtype=np.intp)
        margin = np.radians(margin_deg)
        cos_out = np.cos(np.minimum(self.radius + margin, np.pi))
        cos_in = np.cos(np.minimum(self.inner + margin, np.pi))
        slack = -np.sin(margin)
        out = np.empty(len(poly_index), dtype=bool)
        for start in range(0, len(poly_index), _CHUNK):
            sl = slice(start, start + _CHUNK)
            p, pts = poly_index[sl], xyz[sl]
            dc = np.einsum("pc,pc->p", self.centre[p], pts)
            inside = dc >= cos_out[p]
            test = np.flatnonzero(inside & (dc < cos_in[p]))
            dots = np.einsum("pkc,pc->pk", self.normals[p[test]], pts[test])
            inside[test] = dots.min(axis=1) >= slack
            out[sl] = inside
        return out

    def match(self, ra_deg, dec_deg, margin_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """All (polygon, point) index pairs with the point inside the polygon (widened by `margin_deg`).

        Candidates are the points in an RA/Dec box around each polygon's circumscribed circle, found in a
        zone index (points sorted by Dec zone, then RA) with array operations only; they are tested
        exactly a bounded number at a time. Pairs are sorted by (polygon, point).
        """
        empty = np.empty(0, dtype=np.int64)
        if len(self) == 0 or len(ra_deg) == 0:
            return empty, empty
        ra = np.asarray(ra_deg, dtype=np.float64) % 360.0
        ra[ra >= 360.0] = 0.0  # a tiny negative RA wraps to exactly 360.0
        dec = np.asarray(dec_deg, dtype=np.float64)
        index = _ZoneIndex(ra, dec, zone_deg=max(float(np.degrees(np.median(self.radius))) / 8.0, 1e-3))
        cra, cdec = radec_of(self.centre)
        rows_poly, starts, counts = index.ranges(cra, cdec, np.degrees(self.radius) + margin_deg + 1e-9)
        per_poly = np.bincount(rows_poly, weights=counts, minlength=len(self)).astype(np.int64)
        cum = np.cumsum(per_poly)
        row_cut = np.searchsorted(rows_poly, np.arange(len(self) + 1))  # rows of polygon i: row_cut[i]:row_cut[i+1]
        polys, points = [], []
        start = 0
        while start < len(self):
            done = cum[start - 1] if start else 0
            stop = max(start + 1, int(np.searchsorted(cum, done + 8 * _CHUNK, side="right")))
            sl = slice(row_cut[start], row_cut[stop])
            n = counts[sl]
            if n.sum():
                poly = np.repeat(rows_poly[sl], n)
                pos = np.repeat(starts[sl] - (np.cumsum(n) - n), n) + np.arange(n.sum())  # sorted positions
                keep = self.contains(poly, index.xyz[pos], margin_deg)
                key = np.sort(poly[keep] * len(ra) + index.order[pos[keep]])  # by (polygon, point)
                polys.append(key // len(ra))
                points.append(key % len(ra))
            start = stop
        if not polys:
            return empty, empty
        return np.concatenate(polys), np.concatenate(points)


class _ZoneIndex:
    """Points sorted by (Dec zone, RA): the points in an RA interval of one zone are one contiguous run.

    The sort key is zone * 1000 + RA, so the key ranges of two zones never touch (RA < 360).
    """

    def __init__(self, ra: np.ndarray, dec: np.ndarray, zone_deg: float):
        self.zone_deg = zone_deg
        self.n_zones = int(np.ceil(180.0 / zone_deg)) + 1
        zone = np.clip(((dec + 90.0) / zone_deg).astype(np.int64), 0, self.n_zones - 1)
        key = zone * 1000.0 + ra
        self.order = np.argsort(key, kind="stable")
        self.key = key[self.order]
        #: Unit vectors in sorted order, so the candidates of a run are read contiguously.
        self.xyz = unit_vectors(ra[self.order], dec[self.order])

    def ranges(self, ra: np.ndarray, dec: np.ndarray, radius_deg: np.ndarray):
        """(circle index, first sorted position, count) of the runs covering each circle's RA/Dec box.

        The box spans Dec +- r and RA +- asin(sin r / cos dec) (the whole circle of RA when the cap holds
        a pole), split in two where it crosses RA = 0; rows are ordered by circle.
        """
        r = np.radians(radius_deg)
        cos_dec = np.cos(np.radians(dec))
        polar = (np.abs(dec) + radius_deg >= 90.0) | (np.sin(r) >= cos_dec)
        half = np.where(polar, 180.0, np.degrees(np.arcsin(np.clip(np.sin(r) / np.where(polar, 1.0, cos_dec),
                                                                    0.0, 1.0))))
        z0 = np.clip(((dec - radius_deg + 90.0) / self.zone_deg).astype(np.int64), 0, self.n_zones - 1)
        z1 = np.clip(((dec + radius_deg + 90.0) / self.zone_deg).astype(np.int64), 0, self.n_zones - 1)
        nz = z1 - z0 + 1
        circle = np.repeat(np.arange(len(ra)), nz)
        zone = np.repeat(z0, nz) + (np.arange(nz.sum()) - np.repeat(np.cumsum(nz) - nz, nz))
        lo = ra[circle] - half[circle]
        hi = ra[circle] + half[circle]
        full = half[circle] >= 180.0
        # up to two RA intervals per (circle, zone): [lo, hi] wrapped into [0, 360)
        a_lo = np.where(full, 0.0, np.where(lo < 0, lo + 360.0, lo))
        a_hi = np.where(full | (lo < 0) | (hi >= 360.0), 360.0, hi)
        b_lo = np.zeros_like(lo)
        b_hi = np.where(full, -1.0, np.where(lo < 0, hi, np.where(hi >= 360.0, hi - 360.0, -1.0)))
        circle2 = np.concatenate([circle, circle])
        zone2 = np.concatenate([zone, zone]) * 1000.0
        first = np.searchsorted(self.key, zone2 + np.concatenate([a_lo, b_lo]), side="left")
        last = np.searchsorted(self.key, zone2 + np.concatenate([a_hi, b_hi]), side="right")
        count = np.maximum(last - first, 0)
        keep = count > 0
        order = np.argsort(circle2[keep], kind="stable")
        return circle2[keep][order], first[keep][order], count[keep][order]


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


def _prepare(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centres, inward edge normals, outer and inner radii of same-size polygons v (n, k, 3), vertices
    sorted by angle."""
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
    inner = np.arcsin(np.clip(np.einsum("nkc,nc->nk", normals, c), -1.0, 1.0)).min(axis=1)
    return c, normals, radius, inner
