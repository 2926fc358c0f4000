"""The simulated archive's ADQL engine: IRSA-named tables in SQLite, queried through a real ADQL grammar.

ADQL is parsed and translated by `queryparser.adql.ADQLQueryTranslator` (bad syntax is rejected there); its
MySQL dialect maps geometry onto pgSphere-like calls (`srcontainsl(spoint(RADIANS(ra), RADIANS(dec)), p.poly)`,
`soverlaps`, `scircle`, `spoly('{(..d,..d),..}')`, `sbox`, `sdist`, `coord1`, `centroid`, `sarea`), which
are registered here as SQLite functions. Geometry values travel through SQL as pgSphere text in degrees
(`(10d,20d)`, `<(10d,20d),0.5d>`, `{(1d,2d),(3d,4d),(5d,6d)}`); STC-S strings (`POLYGON ICRS ...`) are
read too. Point-in-polygon is exact on the sphere (gnomonic projection about the polygon centre, where
great-circle edges are straight lines), so RA wrap, poles and either winding order are handled.

Tables live in an attached SQLite schema `spherex` (`plane`, `artifact`,
`observation`, `obscore`); an upload named `name` becomes `TAP_UPLOAD.name`.
There is no TAP_SCHEMA.
"""

from __future__ import annotations

import io
import math
import re
import sqlite3
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from astropy.io.votable import from_table, parse_single_table
from astropy.io.votable.tree import Info, Resource, VOTableFile
from astropy.table import MaskedColumn, Table
from queryparser.adql import ADQLQueryTranslator
from queryparser.exceptions import QueryError, QuerySyntaxError

from spxbatch.level2.constants import EXPOSURE_S, PIXEL_SCALE_ARCSEC
from spxbatch.level2.naming import IBE_ROOT, IRSA_BASE_URL, make_did

#: Seconds a single query may run before it is interrupted (an error, not a hang).
QUERY_TIME_LIMIT_S = 60.0


class TapError(Exception):
    """A query the service cannot run; the message goes into the TAP error document."""


# ----------------------------------------------------------------------------------------------------------
# Spherical geometry on unit vectors (pure Python: the polygons have 4 corners, numpy overhead would dominate)

Vec = tuple[float, float, float]


def _vec(lon_deg: float, lat_deg: float) -> Vec:
    lon, lat = math.radians(lon_deg), math.radians(lat_deg)
    c = math.cos(lat)
    return (c * math.cos(lon), c * math.sin(lon), math.sin(lat))


def _lonlat(v: Vec) -> tuple[float, float]:
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


def _angle(a: Vec, b: Vec) -> float:
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


@lru_cache(maxsize=65536)
def _poly_plane(poly: Polygon) -> tuple[Vec, Vec, Vec, list[tuple[float, float]]]:
    return poly._plane()


def _arc_distance(p: Vec, a: Vec, b: Vec) -> float:
    """Smallest angle (radians) from p to the great-circle arc a-b."""
    n = _cross(a, b)
    if _norm(n) < 1e-15:
        return _angle(p, a)
    n = _unit(n)
    foot = (p[0] - _dot(p, n) * n[0], p[1] - _dot(p, n) * n[1], p[2] - _dot(p, n) * n[2])
    if _norm(foot) > 1e-15:
        foot = _unit(foot)
        if _dot(_cross(a, foot), n) >= 0 and _dot(_cross(foot, b), n) >= 0:
            return _angle(p, foot)
    return min(_angle(p, a), _angle(p, b))


def _arcs_cross(a: Vec, b: Vec, c: Vec, d: Vec) -> bool:
    """Whether great-circle arcs a-b and c-d (each shorter than 180 deg) intersect."""
    x = _cross(_cross(a, b), _cross(c, d))
    if _norm(x) < 1e-15:
        return False
    x = _unit(x)
    for cand in (x, (-x[0], -x[1], -x[2])):
        on_ab = abs(_angle(a, cand) + _angle(cand, b) - _angle(a, b)) < 1e-12
        on_cd = abs(_angle(c, cand) + _angle(cand, d) - _angle(c, d)) < 1e-12
        if on_ab and on_cd:
            return True
    return False


def contains(a, b) -> bool:
    """ADQL CONTAINS(a, b): a lies inside b."""
    if isinstance(b, Point):
        return isinstance(a, Point) and _angle(a.v, b.v) < 1e-12
    if isinstance(b, Circle):
        if isinstance(a, Point):
            return _angle(a.v, b.v) <= b.radius
        if isinstance(a, Circle):
            return _angle(a.v, b.v) + a.radius <= b.radius
        return all(_angle(v, b.v) <= b.radius for v in a.verts)
    if isinstance(a, Point):
        return b.contains_vec(a.v)
    if isinstance(a, Circle):
        return b.contains_vec(a.v) and all(_arc_distance(a.v, s, e) >= a.radius for s, e in b.edges())
    return all(b.contains_vec(v) for v in a.verts) and not _edges_cross(a, b)


def _edges_cross(a: Polygon, b: Polygon) -> bool:
    return any(_arcs_cross(p, q, r, s) for p, q in a.edges() for r, s in b.edges())


def intersects(a, b) -> bool:
    """ADQL INTERSECTS(a, b): the regions share at least one point."""
    if isinstance(a, Point) or isinstance(b, Point):
        return contains(a, b) if isinstance(a, Point) else contains(b, a)
    if isinstance(a, Circle) and isinstance(b, Circle):
        return _angle(a.v, b.v) <= a.radius + b.radius
    if isinstance(a, Circle):
        a, b = b, a
    if isinstance(b, Circle):
        return a.contains_vec(b.v) or any(_arc_distance(b.v, s, e) <= b.radius for s, e in a.edges())
    return any(b.contains_vec(v) for v in a.verts) or any(a.contains_vec(v) for v in b.verts) or _edges_cross(a, b)


def area_sq_deg(g) -> float:
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


# ----------------------------------------------------------------------------------------------------------
# Geometry text: pgSphere notation (d suffix = degrees, none = radians) and STC-S

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PT = rf"\(\s*({_NUM})\s*(d?)\s*,\s*({_NUM})\s*(d?)\s*\)"
_PT_RE = re.compile(rf"^\s*{_PT}\s*$")
_CIRCLE_RE = re.compile(rf"^\s*<\s*{_PT}\s*,\s*({_NUM})\s*(d?)\s*>\s*$")
_POLY_RE = re.compile(r"^\s*\{(.*)\}\s*$", re.S)
_PT_ANY = re.compile(_PT)
_POLY_BODY_RE = re.compile(rf"^\s*{_PT}(\s*,\s*{_PT})*\s*$")
#: POLYGON with column arguments: the translator pastes column names into the literal.
_SPOLY_COLUMNS_RE = re.compile(r"spoly\('[^']*`")


def _ang(value: str, deg: str) -> float:
    """An angle in degrees from pgSphere text (radians unless suffixed with d)."""
    return float(value) if deg else math.degrees(float(value))


@lru_cache(maxsize=65536)
def parse_geometry(text: str):
    """A Point, Circle or Polygon from pgSphere text or an STC-S string; TapError if it is neither."""
    if not isinstance(text, str):
        raise TapError(f"cannot read region {text!r}: not a geometry value")
    if m := _PT_RE.match(text):
        return Point(_vec(_ang(m[1], m[2]), _ang(m[3], m[4])))
    if m := _CIRCLE_RE.match(text):
        return Circle(_vec(_ang(m[1], m[2]), _ang(m[3], m[4])), math.radians(_ang(m[5], m[6])))
    if (m := _POLY_RE.match(text)) and _POLY_BODY_RE.match(m[1]):
        pts = [(_ang(p[0], p[1]), _ang(p[2], p[3])) for p in _PT_ANY.findall(m[1])]
        return _polygon(pts, text)
    words = text.split()
    if words and words[0].upper() in ("POLYGON", "CIRCLE", "POINT", "POSITION"):
        kind = words[0].upper()
        rest = words[2:] if len(words) > 1 and not _is_number(words[1]) else words[1:]
        try:
            nums = [float(w) for w in rest]
        except ValueError:
            raise TapError(f"cannot read region {text!r}") from None
        if kind == "CIRCLE" and len(nums) == 3:
            return Circle(_vec(nums[0], nums[1]), math.radians(nums[2]))
        if kind in ("POINT", "POSITION") and len(nums) == 2:
            return Point(_vec(nums[0], nums[1]))
        if kind == "POLYGON" and len(nums) % 2 == 0:
            return _polygon(list(zip(nums[::2], nums[1::2], strict=True)), text)
    raise TapError(f"cannot read region {text!r} (only POINT, CIRCLE, POLYGON, BOX with constant values)")


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
    return Polygon(tuple(_vec(lon, lat) for lon, lat in pts))


def point_text(ra: float, dec: float) -> str:
    return f"({ra!r}d,{dec!r}d)"


def polygon_text(ra, dec) -> str:
    """pgSphere text of a polygon from vertex coordinates in degrees (how `plane.poly` is stored)."""
    return "{" + ",".join(point_text(float(a), float(d)) for a, d in zip(ra, dec, strict=True)) + "}"


def stcs_polygon(ra, dec) -> str:
    """STC-S form 'POLYGON ICRS ra1 dec1 ...' (how `obscore.s_region` is stored)."""
    return "POLYGON ICRS " + " ".join(f"{float(a)!r} {float(d)!r}" for a, d in zip(ra, dec, strict=True))


def _geometry_text(g) -> str:
    if isinstance(g, Point):
        return point_text(*_lonlat(g.v))
    if isinstance(g, Circle):
        return f"<{point_text(*_lonlat(g.v))},{math.degrees(g.radius)!r}d>"
    return "{" + ",".join(point_text(*_lonlat(v)) for v in g.verts) + "}"


def _sql_function(fn, errors: list[str]):
    """Wrap a geometry function for SQLite: NULL in, NULL out; keep the message of any failure."""

    def wrapped(*args):
        if any(a is None for a in args):
            return None
        try:
            return fn(*args)
        except Exception as exc:
            errors.append(str(exc))
            raise

    return wrapped


def _sbox(p1: str, p2: str) -> str:
    (lo1, la1), (lo2, la2) = (_lonlat(parse_geometry(p).v) for p in (p1, p2))
    return "{" + ",".join(point_text(a, d) for a, d in ((lo1, la1), (lo2, la1), (lo2, la2), (lo1, la2))) + "}"


def _coord(g: str, i: int) -> float:
    geom = parse_geometry(g)
    if not isinstance(geom, Point):
        raise TapError("COORD1/COORD2 need a POINT")
    return _lonlat(geom.v)[i]


#: name -> (number of arguments, function) registered in every query connection.
SQL_FUNCTIONS = {
    "spoint": (2, lambda lon, lat: point_text(math.degrees(lon) % 360.0, math.degrees(lat))),
    "scircle": (2, lambda p, r: _geometry_text(Circle(parse_geometry(p).v, r))),
    "spoly": (1, lambda t: _geometry_text(parse_geometry(t))),
    "sbox": (2, _sbox),
    "srcontainsl": (2, lambda a, b: int(contains(parse_geometry(a), parse_geometry(b)))),
    "soverlaps": (2, lambda a, b: int(intersects(parse_geometry(a), parse_geometry(b)))),
    "sdist": (2, lambda a, b: _angle(parse_geometry(a).v, parse_geometry(b).v)),
    "coord1": (1, lambda g: _coord(g, 0)),
    "coord2": (1, lambda g: _coord(g, 1)),
    "centroid": (1, lambda g: point_text(*_lonlat(parse_geometry(g).centre))),
    "sarea": (1, lambda g: area_sq_deg(parse_geometry(g))),
}


# ----------------------------------------------------------------------------------------------------------
# Tables from the header index

#: Units of result columns by name (VOTable FIELD unit).
COLUMN_UNITS = {
    "time_bounds_lower": "d",
    "time_bounds_upper": "d",
    "t_min": "d",
    "t_max": "d",
    "energy_bounds_lower": "m",
    "energy_bounds_upper": "m",
    "em_min": "m",
    "em_max": "m",
    "s_ra": "deg",
    "s_dec": "deg",
    "poly": "deg",
    "pt": "deg",
    "s_pixel_scale": "arcsec",
    "t_exptime": "s",
    "size": "byte",
    "contentlength": "byte",
    "access_estsize": "kbyte",
}


def build_tables(index: pd.DataFrame, base_url: str = IRSA_BASE_URL) -> dict[str, pd.DataFrame]:
    """`plane`, `artifact`, `observation` and `obscore` tables (IRSA column names) from an index.

    `index` is `spxbatch.archive.index.index_directory(root)` with root = the IBE root
    (`.../ibe/data/spherex`); `base_url` makes obscore's `access_url` (the direct file URL: the simulator
    has no DataLink service).
    """
    df = index.sort_values(["time_bounds_lower", "obs_id", "detector", "relpath"]).reset_index(drop=True)
    n = len(df)
    planeid = np.arange(1, n + 1, dtype=np.int64)
    obs_keys = list(dict.fromkeys(df["obs_id"]))
    obsid_of = {o: i + 1 for i, o in enumerate(obs_keys)}
    ra_c = df[[f"ra{i}" for i in range(1, 5)]].to_numpy(float)
    dec_c = df[[f"dec{i}" for i in range(1, 5)]].to_numpy(float)
    did = [
        make_did(o, int(d), c) for o, d, c in zip(df["obs_id"], df["detector"], df["collection"], strict=True)
    ]
    uri = [f"{IBE_ROOT}/{p}" for p in df["relpath"]]
    plane = pd.DataFrame(
        {
            "planeid": planeid,
            "obsid": [obsid_of[o] for o in df["obs_id"]],
            "obs_publisher_did": did,
            "time_bounds_lower": df["time_bounds_lower"].to_numpy(float),
            "time_bounds_upper": df["time_bounds_upper"].to_numpy(float),
            "energy_bandpassname": df["band"],
            "energy_bounds_lower": df["energy_bounds_lower"].to_numpy(float),
            "energy_bounds_upper": df["energy_bounds_upper"].to_numpy(float),
            "poly": [polygon_text(r, d) for r, d in zip(ra_c, dec_c, strict=True)],
            "pt": [point_text(float(r), float(d)) for r, d in zip(df["ra"], df["dec"], strict=True)],
            "dataproducttype": "image",
            "calibrationlevel": 2,
            "provenance_version": df["pipeline_version"],
            "quality_flag": 0,
        }
    )
    artifact = pd.DataFrame(
        {
            "artifactid": planeid,
            "planeid": planeid,
            "uri": uri,
            "producttype": "science",
            "contenttype": "image/fits",
            "contentlength": df["size_bytes"].to_numpy(np.int64),
            "size": df["size_bytes"].to_numpy(np.int64),
        }
    )
    observation = pd.DataFrame(
        {
            "obsid": [obsid_of[o] for o in obs_keys],
            "observationid": obs_keys,
            "collection": [df.loc[df["obs_id"] == o, "collection"].iloc[0] for o in obs_keys],
        }
    )
    obscore = pd.DataFrame(
        {
            "obs_id": df["obs_id"],
            "obs_publisher_did": did,
            "obs_collection": df["collection"],
            "dataproduct_type": "image",
            "calib_level": 2,
            "s_region": [stcs_polygon(r, d) for r, d in zip(ra_c, dec_c, strict=True)],
            "s_ra": df["ra"].to_numpy(float),
            "s_dec": df["dec"].to_numpy(float),
            "s_xel1": df["nx"].to_numpy(np.int64),
            "s_xel2": df["ny"].to_numpy(np.int64),
            "s_pixel_scale": PIXEL_SCALE_ARCSEC,
            "t_min": df["time_bounds_lower"].to_numpy(float),
            "t_max": df["time_bounds_upper"].to_numpy(float),
            "t_exptime": EXPOSURE_S,
            "em_min": df["energy_bounds_lower"].to_numpy(float),
            "em_max": df["energy_bounds_upper"].to_numpy(float),
            "energy_bandpassname": df["band"],
            "access_url": [f"{base_url.rstrip('/')}/{u}" for u in uri],
            "access_format": "image/fits",
            "access_estsize": (df["size_bytes"].to_numpy(np.int64) + 1023) // 1024,
        }
    )
    return {"plane": plane, "artifact": artifact, "observation": observation, "obscore": obscore}


# ----------------------------------------------------------------------------------------------------------
# The engine


@dataclass
class QueryResult:
    """Rows of one query as an astropy Table, and whether MAXREC cut it short."""

    table: Table
    overflow: bool


class _Translator(ADQLQueryTranslator):
    """queryparser's translator parsing once (the base class parses in set_query and again in to_mysql)."""

    def set_query(self, query: str) -> None:
        self._query = query.lstrip("\n").rstrip().rstrip(";") + ";"


@lru_cache(maxsize=1024)
def translate(adql: str) -> str:
    """ADQL -> the SQL this engine runs (queryparser's MySQL dialect); TapError on a syntax error.

    The grammar is slow in pure Python (~0.3 s per query), hence the cache.
    """
    try:
        sql = _Translator(adql).to_mysql()
    except QuerySyntaxError as exc:
        where = ", ".join(f"line {ln} column {col} near {tok!r}" for ln, col, tok in exc.syntax_errors)
        raise TapError(f"ADQL syntax error at {where}") from None
    except QueryError as exc:
        raise TapError(f"ADQL error: {exc}") from None
    except Exception as exc:  # the translator raises bare errors on some odd input
        raise TapError(f"ADQL not understood: {exc}") from None
    if _SPOLY_COLUMNS_RE.search(sql):
        raise TapError("POLYGON vertices must be numeric constants in this service")
    return sql.strip().rstrip(";")


class TapEngine:
    """Runs ADQL against a fixed set of tables; thread-safe (each query gets its own SQLite connection)."""

    def __init__(self, tables: dict[str, pd.DataFrame]) -> None:
        master = sqlite3.connect(":memory:")
        for name, frame in tables.items():
            frame.to_sql(name, master, index=False)
        self._image = master.serialize()
        master.close()
        self.table_names = tuple(tables)

    def _connect(self, errors: list[str]) -> sqlite3.Connection:
        conn = sqlite3.connect(":memory:")
        conn.execute("ATTACH ':memory:' AS spherex")
        conn.deserialize(self._image, name="spherex")
        conn.execute("ATTACH ':memory:' AS TAP_UPLOAD")
        for name, (nargs, fn) in SQL_FUNCTIONS.items():
            conn.create_function(name, nargs, _sql_function(fn, errors), deterministic=True)
        return conn

    def run(self, adql: str, maxrec: int | None = None, uploads: dict[str, Table] | None = None) -> QueryResult:
        """Execute one ADQL query; TapError (with a message fit for the client) if it cannot be run."""
        sql = translate(adql)
        errors: list[str] = []
        conn = self._connect(errors)
        deadline = time.monotonic() + QUERY_TIME_LIMIT_S
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10000)
        try:
            for name, table in (uploads or {}).items():
                _load_upload(conn, name, table)
            try:
                cur = conn.execute(sql)
                names = [d[0] for d in cur.description]
                rows = cur.fetchall() if maxrec is None else cur.fetchmany(maxrec + 1)
            except (sqlite3.Error, TapError, ValueError, ArithmeticError) as exc:
                if errors:
                    raise TapError(errors[-1]) from None
                msg = "query exceeded the time limit" if "interrupted" in str(exc) else str(exc)
                raise TapError(msg) from None
        finally:
            conn.close()
        overflow = maxrec is not None and len(rows) > maxrec
        if overflow:
            rows = rows[:maxrec]
        return QueryResult(_to_table([n.replace("`", "") for n in names], rows), overflow)


def _load_upload(conn: sqlite3.Connection, name: str, table: Table) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise TapError(f"bad upload table name {name!r}")
    cols = list(table.colnames)
    decl = ", ".join(f'"{c}"' for c in cols)
    conn.execute(f'CREATE TABLE TAP_UPLOAD."{name}" ({decl})')
    data = []
    for row in table:
        data.append(tuple(None if np.ma.is_masked(v) else (v.item() if hasattr(v, "item") else v) for v in row))
    marks = ", ".join("?" for _ in cols)
    conn.executemany(f'INSERT INTO TAP_UPLOAD."{name}" VALUES ({marks})', data)


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = n.lower()
        if k in seen:
            seen[k] += 1
            n = f"{n}_{seen[k]}"
        else:
            seen[k] = 0
        out.append(n)
    return out


def _to_table(names: list[str], rows: list[tuple]) -> Table:
    """Rows -> astropy Table, typing each column from its values; geometry text -> DALI arrays."""
    table = Table()
    for j, name in enumerate(_unique(names)):
        values = [r[j] for r in rows]
        present = [v for v in values if v is not None]
        mask = [v is None for v in values]
        meta = {}
        if present and all(isinstance(v, str) for v in present) and _is_geometry(present[0]):
            geoms = [None if v is None else parse_geometry(v) for v in values]
            kind = type(next(g for g in geoms if g is not None))
            meta["xtype"] = {Point: "point", Circle: "circle", Polygon: "polygon"}[kind]
            col = np.empty(len(values), dtype=object)
            col[:] = [np.zeros(0) if g is None else _dali(g) for g in geoms]
            table[name] = col
        elif present and all(isinstance(v, int) for v in present):
            table[name] = MaskedColumn([0 if v is None else v for v in values], dtype=np.int64, mask=mask)
        elif present and all(isinstance(v, int | float) for v in present):
            table[name] = np.array([np.nan if v is None else float(v) for v in values])
        else:
            table[name] = MaskedColumn(["" if v is None else str(v) for v in values], dtype=str, mask=mask)
        if name.lower() in COLUMN_UNITS:
            table[name].unit = COLUMN_UNITS[name.lower()]
        table[name].meta.update(meta)
    return table


def _is_geometry(text: str) -> bool:
    """Whether a string value is pgSphere geometry text (STC-S strings stay strings)."""
    if text.lstrip()[:1] not in ("(", "{", "<"):
        return False
    try:
        parse_geometry(text)
    except TapError:
        return False
    return True


def _dali(g) -> np.ndarray:
    """DALI array form in degrees: point [ra, dec], circle [ra, dec, r], polygon [ra1, dec1, ...]."""
    if isinstance(g, Point):
        return np.array(_lonlat(g.v))
    if isinstance(g, Circle):
        return np.array([*_lonlat(g.v), math.degrees(g.radius)])
    return np.array([c for v in g.verts for c in _lonlat(v)])


# ----------------------------------------------------------------------------------------------------------
# Wire formats


def votable_bytes(result: QueryResult) -> bytes:
    """A TAP result VOTable: QUERY_STATUS OK, plus OVERFLOW when MAXREC cut the rows."""
    vot = from_table(result.table)
    resource = vot.resources[0]
    resource.type = "results"
    resource.infos.append(Info(name="QUERY_STATUS", value="OK"))
    if result.overflow:
        resource.infos.append(Info(name="QUERY_STATUS", value="OVERFLOW"))
    for field, name in zip(resource.tables[0].fields, result.table.colnames, strict=True):
        meta = result.table[name].meta
        if "xtype" in meta:
            field.xtype = meta["xtype"]
        elif field.datatype == "unicodeChar":
            field.datatype, field.arraysize = "char", "*"
    buf = io.BytesIO()
    vot.to_xml(buf)
    return buf.getvalue()


def error_votable(message: str) -> bytes:
    """A TAP error document: RESOURCE type=results with INFO QUERY_STATUS=ERROR holding the message."""
    vot = VOTableFile()
    resource = Resource(type="results")
    info = Info(name="QUERY_STATUS", value="ERROR")
    info.content = message
    resource.infos.append(info)
    vot.resources.append(resource)
    buf = io.BytesIO()
    vot.to_xml(buf)
    return buf.getvalue()


def csv_bytes(result: QueryResult) -> bytes:
    """FORMAT=csv: a header line then the rows; geometry arrays as space-separated numbers."""
    table = result.table.copy(copy_data=False)
    for name in table.colnames:
        if table[name].dtype == object:
            table[name] = [" ".join(repr(float(x)) for x in v) for v in table[name]]
    buf = io.StringIO()
    table.write(buf, format="ascii.csv")
    return buf.getvalue().encode()


def read_upload(data: bytes) -> Table:
    """An uploaded table (VOTable, as pyvo sends it) as an astropy Table."""
    try:
        return parse_single_table(io.BytesIO(data)).to_table()
    except Exception as exc:
        raise TapError(f"cannot read the uploaded table: {exc}") from None
