"""Geometry as text and arrays: pgSphere notation inside SQL, STC-S in obscore, DALI arrays in results.

Geometry values travel through SQL as pgSphere text in degrees (`(10d,20d)`, `<(10d,20d),0.5d>`,
`{(1d,2d),(3d,4d),(5d,6d)}`; a number without the `d` suffix is in radians); STC-S strings
(`POLYGON ICRS ...`, `CIRCLE`, `POINT`/`POSITION`) are read too.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

import numpy as np

from spxbatch.sim.tap.errors import TapError
from spxbatch.sim.tap.geometry import Circle, Point, Polygon, Region, lonlat, vec

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PT = rf"\(\s*({_NUM})\s*(d?)\s*,\s*({_NUM})\s*(d?)\s*\)"
_PT_RE = re.compile(rf"^\s*{_PT}\s*$")
_CIRCLE_RE = re.compile(rf"^\s*<\s*{_PT}\s*,\s*({_NUM})\s*(d?)\s*>\s*$")
_POLY_RE = re.compile(r"^\s*\{(.*)\}\s*$", re.S)
_PT_ANY = re.compile(_PT)
_POLY_BODY_RE = re.compile(rf"^\s*{_PT}(\s*,\s*{_PT})*\s*$")

#: The DALI xtype of each region kind (VOTable FIELD xtype).
XTYPES = {Point: "point", Circle: "circle", Polygon: "polygon"}


def _ang(value: str, deg: str) -> float:
    """An angle in degrees from pgSphere text (radians unless suffixed with d)."""
    return float(value) if deg else math.degrees(float(value))


@lru_cache(maxsize=65536)
def parse_geometry(text: str) -> Region:
    """A Point, Circle or Polygon from pgSphere text or an STC-S string; TapError if it is neither."""
    if not isinstance(text, str):
        raise TapError(f"cannot read region {text!r}: not a geometry value")
    if m := _PT_RE.match(text):
        return Point(vec(_ang(m[1], m[2]), _ang(m[3], m[4])))
    if m := _CIRCLE_RE.match(text):
        return Circle(vec(_ang(m[1], m[2]), _ang(m[3], m[4])), math.radians(_ang(m[5], m[6])))
    if (m := _POLY_RE.match(text)) and _POLY_BODY_RE.match(m[1]):
        pts = [(_ang(p[0], p[1]), _ang(p[2], p[3])) for p in _PT_ANY.findall(m[1])]
        return _polygon(pts, text)
    if (region := _parse_stcs(text)) is not None:
        return region
    raise TapError(f"cannot read region {text!r} (only POINT, CIRCLE, POLYGON, BOX with constant values)")


def _parse_stcs(text: str) -> Region | None:
    """An STC-S POLYGON, CIRCLE or POINT/POSITION (frame word optional); None if the text is not one."""
    words = text.split()
    if not words or words[0].upper() not in ("POLYGON", "CIRCLE", "POINT", "POSITION"):
        return None
    kind = words[0].upper()
    rest = words[2:] if len(words) > 1 and not _is_number(words[1]) else words[1:]
    try:
        nums = [float(w) for w in rest]
    except ValueError:
        raise TapError(f"cannot read region {text!r}") from None
    if kind == "CIRCLE" and len(nums) == 3:
        return Circle(vec(nums[0], nums[1]), math.radians(nums[2]))
    if kind in ("POINT", "POSITION") and len(nums) == 2:
        return Point(vec(nums[0], nums[1]))
    if kind == "POLYGON" and len(nums) % 2 == 0:
        return _polygon(list(zip(nums[::2], nums[1::2], strict=True)), text)
    return None


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _polygon(pts: list[tuple[float, float]], text: str) -> Polygon:
    if len(pts) > 3 and pts[0] == pts[-1]:
        pts = pts[:-1]
    if len(pts) < 3:
        raise TapError(f"a polygon needs at least 3 vertices: {text!r}")
    return Polygon(tuple(vec(lon, lat) for lon, lat in pts))


def is_geometry_text(text: str) -> bool:
    """Whether a string value is pgSphere geometry text (STC-S strings stay strings)."""
    if text.lstrip()[:1] not in ("(", "{", "<"):
        return False
    try:
        parse_geometry(text)
    except TapError:
        return False
    return True


def point_text(ra: float, dec: float) -> str:
    """pgSphere text of a point in degrees (how `plane.pt` is stored)."""
    return f"({ra!r}d,{dec!r}d)"


def polygon_text(ra, dec) -> str:
    """pgSphere text of a polygon from vertex coordinates in degrees (how `plane.poly` is stored)."""
    return "{" + ",".join(point_text(float(a), float(d)) for a, d in zip(ra, dec, strict=True)) + "}"


def stcs_polygon(ra, dec) -> str:
    """STC-S form 'POLYGON ICRS ra1 dec1 ...' (how `obscore.s_region` is stored)."""
    return "POLYGON ICRS " + " ".join(f"{float(a)!r} {float(d)!r}" for a, d in zip(ra, dec, strict=True))


def geometry_text(g: Region) -> str:
    """pgSphere text of any region, in degrees."""
    if isinstance(g, Point):
        return point_text(*lonlat(g.v))
    if isinstance(g, Circle):
        return f"<{point_text(*lonlat(g.v))},{math.degrees(g.radius)!r}d>"
    return "{" + ",".join(point_text(*lonlat(v)) for v in g.verts) + "}"


def dali_array(g: Region) -> np.ndarray:
    """DALI array form in degrees: point [ra, dec], circle [ra, dec, r], polygon [ra1, dec1, ...]."""
    if isinstance(g, Point):
        return np.array(lonlat(g.v))
    if isinstance(g, Circle):
        return np.array([*lonlat(g.v), math.degrees(g.radius)])
    return np.array([c for v in g.verts for c in lonlat(v)])
