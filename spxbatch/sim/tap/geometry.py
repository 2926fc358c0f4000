"""Regions on the sphere and the ADQL predicates on them, on unit vectors.

Pure Python: the footprints have 4 corners, so numpy's per-call overhead would dominate. Point-in-polygon
is exact on the sphere (an even-odd test in the gnomonic projection about the polygon centre, where
great-circle edges are straight lines), so RA wrap, the poles and either winding order need no special case.
This is the simulator's own geometry on purpose: an independent check of `spxbatch.plan.footprint`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from spxbatch.sim.tap.errors import TapError

Vec = tuple[float, float, float]


def vec(lon_deg: float, lat_deg: float) -> Vec:
    """The unit vector of a position in degrees."""
    lon, lat = math.radians(lon_deg), math.radians(lat_deg)
    c = math.cos(lat)
    return (c * math.cos(lon), c * math.sin(lon), math.sin(lat))


def lonlat(v: Vec) -> tuple[float, float]:
    """(lon in [0, 360), lat) in degrees of a vector."""
    lon = math.degrees(math.atan2(v[1], v[0])) % 360.0
    lat = math.degrees(math.asin(max(-1.0, min(1.0, v[2] / _norm(v)))))
    return lon, lat


def _dot(a: Vec, b: Vec) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a: Vec, b: Vec) -> Vec:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _norm(a: Vec) -> float:
    return math.sqrt(_dot(a, a))


def _unit(a: Vec) -> Vec:
    n = _norm(a)
    return (a[0] / n, a[1] / n, a[2] / n)


def angle(a: Vec, b: Vec) -> float:
    """Angle between unit vectors (radians), stable at small and large separations."""
    return math.atan2(_norm(_cross(a, b)), _dot(a, b))


@dataclass(frozen=True)
class Point:
    v: Vec


@dataclass(frozen=True)
class Circle:
    v: Vec
    radius: float  # radians


@dataclass(frozen=True)
class Polygon:
    """A spherical polygon (great-circle edges) smaller than a hemisphere, either winding order."""

    verts: tuple[Vec, ...]

    @property
    def centre(self) -> Vec:
        return _unit(tuple(sum(v[i] for v in self.verts) for i in range(3)))

    def _plane(self) -> tuple[Vec, Vec, Vec, list[tuple[float, float]]]:
        c = self.centre
        ref = (0.0, 0.0, 1.0) if abs(c[2]) < 0.9 else (1.0, 0.0, 0.0)
        e1 = _unit(_cross(ref, c))
        e2 = _cross(c, e1)
        if any(_dot(v, c) <= 0 for v in self.verts):
            raise TapError("polygons larger than a hemisphere are not supported")
        xy = [(_dot(v, e1) / _dot(v, c), _dot(v, e2) / _dot(v, c)) for v in self.verts]
        return c, e1, e2, xy

    def contains_vec(self, p: Vec) -> bool:
        """Even-odd test in the gnomonic projection about the centre (great circles map to lines)."""
        c, e1, e2, xy = _poly_plane(self)
        pc = _dot(p, c)
        if pc <= 0:
            return False
        x, y = _dot(p, e1) / pc, _dot(p, e2) / pc
        inside = False
        n = len(xy)
        for i in range(n):
            x1, y1 = xy[i]
            x2, y2 = xy[(i + 1) % n]
            if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
        return inside

    def edges(self) -> list[tuple[Vec, Vec]]:
        n = len(self.verts)
        return [(self.verts[i], self.verts[(i + 1) % n]) for i in range(n)]


Region = Point | Circle | Polygon


@lru_cache(maxsize=65536)
def _poly_plane(poly: Polygon) -> tuple[Vec, Vec, Vec, list[tuple[float, float]]]:
    return poly._plane()


def _arc_distance(p: Vec, a: Vec, b: Vec) -> float:
    """Smallest angle (radians) from p to the great-circle arc a-b."""
    n = _cross(a, b)
    if _norm(n) < 1e-15:
        return angle(p, a)
    n = _unit(n)
    foot = (p[0] - _dot(p, n) * n[0], p[1] - _dot(p, n) * n[1], p[2] - _dot(p, n) * n[2])
    if _norm(foot) > 1e-15:
        foot = _unit(foot)
        if _dot(_cross(a, foot), n) >= 0 and _dot(_cross(foot, b), n) >= 0:
            return angle(p, foot)
    return min(angle(p, a), angle(p, b))


def _arcs_cross(a: Vec, b: Vec, c: Vec, d: Vec) -> bool:
    """Whether great-circle arcs a-b and c-d (each shorter than 180 deg) intersect."""
    x = _cross(_cross(a, b), _cross(c, d))
    if _norm(x) < 1e-15:
        return False
    x = _unit(x)
    for cand in (x, (-x[0], -x[1], -x[2])):
        on_ab = abs(angle(a, cand) + angle(cand, b) - angle(a, b)) < 1e-12
        on_cd = abs(angle(c, cand) + angle(cand, d) - angle(c, d)) < 1e-12
        if on_ab and on_cd:
            return True
    return False


def _edges_cross(a: Polygon, b: Polygon) -> bool:
    return any(_arcs_cross(p, q, r, s) for p, q in a.edges() for r, s in b.edges())


def contains(a: Region, b: Region) -> bool:
    """ADQL CONTAINS(a, b): a lies inside b."""
    if isinstance(b, Point):
        return isinstance(a, Point) and angle(a.v, b.v) < 1e-12
    if isinstance(b, Circle):
        if isinstance(a, Point):
            return angle(a.v, b.v) <= b.radius
        if isinstance(a, Circle):
            return angle(a.v, b.v) + a.radius <= b.radius
        return all(angle(v, b.v) <= b.radius for v in a.verts)
    if isinstance(a, Point):
        return b.contains_vec(a.v)
    if isinstance(a, Circle):
        return b.contains_vec(a.v) and all(_arc_distance(a.v, s, e) >= a.radius for s, e in b.edges())
    return all(b.contains_vec(v) for v in a.verts) and not _edges_cross(a, b)


def intersects(a: Region, b: Region) -> bool:
    """ADQL INTERSECTS(a, b): the regions share at least one point."""
    if isinstance(a, Point) or isinstance(b, Point):
        return contains(a, b) if isinstance(a, Point) else contains(b, a)
    if isinstance(a, Circle) and isinstance(b, Circle):
        return angle(a.v, b.v) <= a.radius + b.radius
    if isinstance(a, Circle):
        a, b = b, a
    if isinstance(b, Circle):
        return a.contains_vec(b.v) or any(_arc_distance(b.v, s, e) <= b.radius for s, e in a.edges())
    return any(b.contains_vec(v) for v in a.verts) or any(a.contains_vec(v) for v in b.verts) or _edges_cross(a, b)


def area_sq_deg(g: Region) -> float:
    """Solid angle of a region in square degrees (polygon: sum of triangle-fan excesses)."""
    if isinstance(g, Point):
        return 0.0
    if isinstance(g, Circle):
        return 2 * math.pi * (1 - math.cos(g.radius)) * (180 / math.pi) ** 2
    c = g.centre
    total = 0.0
    for a, b in g.edges():
        num = _dot(c, _cross(a, b))
        den = 1 + _dot(c, a) + _dot(a, b) + _dot(b, c)
        total += 2 * math.atan2(num, den)
    return abs(total) * (180 / math.pi) ** 2
