"""The calls queryparser's MySQL dialect makes of ADQL geometry, as SQLite functions.

`POINT('ICRS', ra, dec)` arrives as `spoint(RADIANS(ra), RADIANS(dec))`, `CIRCLE` as `scircle`,
`POLYGON` as `spoly('{(..d,..d),..}')`, `BOX` as `sbox`, `CONTAINS(a, b) = 1` as `srcontainsl(a, b)`,
`INTERSECTS` as `soverlaps`, `DISTANCE` as `sdist`, `COORD1/2`, `CENTROID` and `AREA` as `coord1/2`,
`centroid` and `sarea`. Their arguments and geometry results are pgSphere text (see `notation`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from spxbatch.sim.tap.errors import TapError
from spxbatch.sim.tap.geometry import Circle, Point, angle, area_sq_deg, contains, intersects, lonlat
from spxbatch.sim.tap.notation import geometry_text, parse_geometry, point_text


def _sbox(p1: str, p2: str) -> str:
    """The polygon with corners at the (lon, lat) of two points (queryparser's BOX)."""
    (lo1, la1), (lo2, la2) = (lonlat(parse_geometry(p).v) for p in (p1, p2))
    return "{" + ",".join(point_text(a, d) for a, d in ((lo1, la1), (lo2, la1), (lo2, la2), (lo1, la2))) + "}"


def _coord(g: str, i: int) -> float:
    geom = parse_geometry(g)
    if not isinstance(geom, Point):
        raise TapError("COORD1/COORD2 need a POINT")
    return lonlat(geom.v)[i]


#: name -> (number of arguments, function) registered in every query connection.
SQL_FUNCTIONS: dict[str, tuple[int, Callable]] = {
    "spoint": (2, lambda lon, lat: point_text(math.degrees(lon) % 360.0, math.degrees(lat))),
    "scircle": (2, lambda p, r: geometry_text(Circle(parse_geometry(p).v, r))),
    "spoly": (1, lambda t: geometry_text(parse_geometry(t))),
    "sbox": (2, _sbox),
    "srcontainsl": (2, lambda a, b: int(contains(parse_geometry(a), parse_geometry(b)))),
    "soverlaps": (2, lambda a, b: int(intersects(parse_geometry(a), parse_geometry(b)))),
    "sdist": (2, lambda a, b: angle(parse_geometry(a).v, parse_geometry(b).v)),
    "coord1": (1, lambda g: _coord(g, 0)),
    "coord2": (1, lambda g: _coord(g, 1)),
    "centroid": (1, lambda g: point_text(*lonlat(parse_geometry(g).centre))),
    "sarea": (1, lambda g: area_sq_deg(parse_geometry(g))),
}


def sql_function(fn: Callable, errors: list[str]) -> Callable:
    """Wrap a geometry function for SQLite: NULL in, NULL out; keep the message of any failure in `errors`
    (SQLite replaces it by 'user-defined function raised exception')."""

    def wrapped(*args):
        if any(a is None for a in args):
            return None
        try:
            return fn(*args)
        except Exception as exc:
            errors.append(str(exc))
            raise

    return wrapped
