"""The simulated TAP engine without a server: every query form spxbatch's plan sends, translated by
queryparser and run on SQLite, selects exactly the rows an independent selection does; MAXREC, TAP_UPLOAD,
result typing and the errors a client sees."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io.votable import parse_single_table
from astropy.table import MaskedColumn, Table

from spxbatch.level2.constants import BANDS
from spxbatch.level2.naming import IBE_ROOT
from spxbatch.plan.footprint import Footprints
from spxbatch.plan.index import index_directory
from spxbatch.plan.tap import OPTIONAL, normalise_tap, point_query, region_query
from spxbatch.sim.tap import engine
from spxbatch.sim.tap.engine import TapEngine, rows_to_table, translate
from spxbatch.sim.tap.errors import TapError
from spxbatch.sim.tap.geometry import Circle, intersects, vec
from spxbatch.sim.tap.notation import parse_geometry
from spxbatch.sim.tap.schema import build_tables
from spxbatch.sim.tap.votable import votable_bytes


def _near_corner(index: pd.DataFrame, outward_deg: float) -> tuple[float, float]:
    """A position on the diagonal through the first file's first corner, `outward_deg` beyond it (negative:
    inside), rounded as the plan writes positions (10 digits): it lies in some of the footprints, not all."""
    row = index.iloc[0]
    centre, corner = SkyCoord(row["ra"], row["dec"], unit="deg"), SkyCoord(row["ra1"], row["dec1"], unit="deg")
    p = corner.directional_offset_by(centre.position_angle(corner), outward_deg * u.deg)
    return round(float(p.ra.deg), 6), round(float(p.dec.deg), 6)


@pytest.fixture(scope="module")
def served(sim_archive):
    """(index, engine, the joined plane+artifact rows) of the small test archive."""
    index = index_directory(sim_archive.root)
    tables = build_tables(index)
    rows = tables["plane"].merge(tables["artifact"], on="planeid")
    return index, TapEngine(tables), rows


def _uris(result) -> set[str]:
    return set(result.table["uri"])


def _filtered(rows: pd.DataFrame, bands=None, time_range=None, releases=None) -> pd.DataFrame:
    """The rows the filters of `plan.tap._filters` keep, selected with pandas."""
    keep = np.ones(len(rows), bool)
    if bands:
        keep &= rows["energy_bandpassname"].isin([BANDS[b].name for b in bands]).to_numpy()
    if time_range:
        keep &= ((rows["time_bounds_lower"] <= time_range[1]) & (rows["time_bounds_upper"] >= time_range[0])).to_numpy()
    if releases:
        keep &= rows["uri"].map(lambda x: any(x.startswith(f"{IBE_ROOT}/{r}/") for r in releases)).to_numpy()
    return rows[keep]


def _times_between(rows: pd.DataFrame, q: float) -> float:
    """A time between two exposures' start times near quantile q (no file on the edge of a time filter)."""
    starts = np.unique(rows["time_bounds_lower"])
    k = min(int(q * len(starts)), len(starts) - 2)
    return float((starts[k] + starts[k + 1]) / 2)


def _circle_hits(rows: pd.DataFrame, ra: float, dec: float, r: float) -> set[str]:
    circle = Circle(vec(ra, dec), math.radians(r))
    return {uri for uri, poly in zip(rows["uri"], rows["poly"], strict=True)
            if intersects(parse_geometry(poly), circle)}


def _through_the_wire(result) -> pd.DataFrame:
    """What the plan makes of the result VOTable (as pyvo would hand it over)."""
    return normalise_tap(parse_single_table(io.BytesIO(votable_bytes(result))).to_table())


def test_region_query_forms(served):
    """INTERSECTS(p.poly, CIRCLE) with no filter, with every filter, with a release that is absent, and without
    the optional size column: the rows of an independent selection, readable by the plan."""
    index, eng, rows = served
    ra, dec = _near_corner(index, 0.02)
    t0, t1 = _times_between(rows, 0.2), _times_between(rows, 0.7)
    cases = [({}, 0.05), ({"bands": [2, 5], "time_range": (t0, t1), "releases": ["qr2"]}, 0.05),
             ({"releases": ["qr3"], "bands": [2]}, 1.0)]
    sizes = []
    for filters, r in cases:
        query = region_query(ra, dec, r, **filters)
        sql = translate(query)
        assert f"soverlaps(p.poly, scircle(spoint(RADIANS({ra!r}), RADIANS({dec!r})), RADIANS({r!r})))" in sql
        result = eng.run(query)
        want = _circle_hits(_filtered(rows, **filters), ra, dec, r)
        assert _uris(result) == want
        assert set(_through_the_wire(result)["relpath"]) == want
        sizes.append(len(want))
    assert len(rows) > sizes[0] > sizes[1] > 0 and sizes[2] == 0
    lean = region_query(ra, dec, 0.05).replace(f"{OPTIONAL[0]}, ", "")  # the retry without a.contentlength
    assert "contentlength" not in eng.run(lean).table.colnames and _uris(eng.run(lean)) == _circle_hits(rows, ra, dec,
                                                                                                         0.05)


def test_point_query_forms(served):
    """CONTAINS(POINT, p.poly) (SPXQuery's per-source form) against the package's own footprint test."""
    index, eng, rows = served
    feet = Footprints.from_corners(index[[f"ra{i}" for i in range(1, 5)]].to_numpy(),
                                   index[[f"dec{i}" for i in range(1, 5)]].to_numpy())
    ra, dec = _near_corner(index, -0.03)
    t0, t1 = _times_between(rows, 0.0), _times_between(rows, 0.5)
    sizes = []
    for filters in ({}, {"bands": [2, 5], "time_range": (t0, t1)}):
        query = point_query(ra, dec, **filters)
        assert f"srcontainsl(spoint(RADIANS({ra!r}), RADIANS({dec!r})), p.poly)" in translate(query)
        hit, _ = feet.match([ra], [dec])
        inside = {f"{IBE_ROOT}/{p}" for p in index["relpath"].iloc[hit]}
        want = set(_filtered(rows[rows["uri"].isin(inside)], **filters)["uri"])
        assert _uris(eng.run(query)) == want
        sizes.append(len(want))
    assert len(rows) > sizes[0] > sizes[1] > 0


def test_upload_join_equals_one_point_query_per_row(served):
    """TAP_UPLOAD: a join on CONTAINS gives the same pairs as the footprint test per uploaded position; a
    masked position matches nothing (NULL in, NULL out)."""
    index, eng, _ = served
    rng = np.random.default_rng(2)
    c = SkyCoord(index["ra"].iloc[0], index["dec"].iloc[0], unit="deg")
    pts = c.directional_offset_by(rng.uniform(0, 360, 40) * u.deg, rng.uniform(0, 0.3, 40) * u.deg)
    ra = MaskedColumn(pts.ra.deg, mask=np.arange(40) == 7)
    src = Table({"name": [f"s{i}" for i in range(40)], "ra": ra, "dec": pts.dec.deg})
    q = ("SELECT t.name, a.uri FROM TAP_UPLOAD.src AS t JOIN plane AS p "
         "ON CONTAINS(POINT('ICRS', t.ra, t.dec), p.poly) = 1 JOIN artifact AS a ON a.planeid = p.planeid")
    got = {(n, x) for n, x in eng.run(q, uploads={"src": src}).table.iterrows()}
    feet = Footprints.from_corners(index[[f"ra{i}" for i in range(1, 5)]].to_numpy(),
                                   index[[f"dec{i}" for i in range(1, 5)]].to_numpy())
    fi, pi = feet.match(pts.ra.deg, pts.dec.deg)
    want = {(f"s{p}", f"{IBE_ROOT}/{index['relpath'].iloc[f]}") for p, f in zip(pi, fi, strict=True) if p != 7}
    assert got == want and len({n for n, _ in got}) > 10
    assert not any(n == "s7" for n, _ in got)
    with pytest.raises(TapError, match="bad upload table name"):
        eng.run("SELECT * FROM plane", uploads={"no-good": src})


def test_maxrec_cuts_and_flags_overflow(served):
    _, eng, rows = served
    q = "SELECT planeid FROM plane ORDER BY planeid"
    whole = list(eng.run(q).table["planeid"])
    cut = eng.run(q, maxrec=3)
    assert list(cut.table["planeid"]) == whole[:3] and cut.overflow
    exact = eng.run(q, maxrec=len(rows))
    assert list(exact.table["planeid"]) == whole and not exact.overflow
    assert not eng.run(q).overflow and len(eng.run(q, maxrec=0).table) == 0


def test_result_columns_are_typed():
    """Integers (NULL masked), floats (NULL as NaN), text (NULL masked), geometry as DALI arrays with their
    xtype; repeated names made unique; IRSA units by column name."""
    t = rows_to_table(["n", "x", "s", "poly", "pt", "N", "t_min"],
                      [(1, 1.5, "a", "{(1d,2d),(3d,4d),(5d,6d)}", "(1d,2d)", 3, 60000.5),
                       (None, None, None, None, "(3d,4d)", 4, 1),
                       (2, 2, "c", "{(1d,2d),(3d,4d),(5d,7d)}", "(5d,6d)", 5, 2.0)])
    assert t.colnames == ["n", "x", "s", "poly", "pt", "N_1", "t_min"]
    assert t["n"].dtype == np.int64 and list(t["n"].mask) == [False, True, False]
    assert t["x"].dtype == np.float64 and np.isnan(t["x"][1]) and t["x"][2] == 2.0
    assert list(t["s"].mask) == [False, True, False] and t["s"][2] == "c"
    assert t["poly"].meta["xtype"] == "polygon" and np.allclose(t["poly"][0], [1, 2, 3, 4, 5, 6])
    assert len(t["poly"][1]) == 0
    assert t["pt"].meta["xtype"] == "point" and np.allclose(t["pt"][2], [5, 6])
    assert str(t["t_min"].unit) == "d" and t["t_min"].dtype == np.float64


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELEC * FROM plane", r"ADQL syntax error at line 1 column \d+"),
        ("SELECT * FROM nothere", "no such table: nothere"),
        ("SELECT COORD1(poly) AS c FROM plane", "COORD1/COORD2 need a POINT"),
        ("SELECT * FROM plane WHERE CONTAINS(POINT('ICRS', 1, 2), POLYGON('ICRS', s_ra, 1, 2, 3, 4, 5)) = 1",
         "numeric constants"),
    ],
)
def test_errors_carry_the_reason(served, query, message):
    _, eng, _ = served
    with pytest.raises(TapError, match=message):
        eng.run(query)


def test_a_query_over_the_time_limit_is_an_error(served, monkeypatch):
    _, eng, _ = served
    monkeypatch.setattr(engine, "QUERY_TIME_LIMIT_S", 0.0)
    with pytest.raises(TapError, match="exceeded the time limit"):
        eng.run("SELECT COUNT(*) AS n FROM plane AS a JOIN plane AS b JOIN plane AS c JOIN plane AS d "
                "WHERE a.poly || b.pt <> c.poly || d.pt")


def test_engine_geometry_edge_cases():
    """Winding order, RA wrap and pole on hand-made polygons, without a server."""
    import pandas as pd

    def frame(corners):
        rows = []
        for i, c in enumerate(corners):
            d = {"relpath": f"f{i}.fits", "size_bytes": 1, "obs_id": f"2025W18_2B_000{i}_1", "detector": 1,
                 "band": "SPHEREx-D1", "collection": "spherex_qr2", "time_bounds_lower": 60800.0 + i,
                 "time_bounds_upper": 60800.1 + i, "energy_bounds_lower": 7e-7, "energy_bounds_upper": 1e-6,
                 "ra": c[0][0], "dec": c[0][1], "nx": 10, "ny": 10, "pipeline_version": "x"}
            for k, (a, b) in enumerate(c):
                d[f"ra{k + 1}"], d[f"dec{k + 1}"] = a, b
            rows.append(d)
        return pd.DataFrame(rows)

    square = [(359.0, -1.0), (1.0, -1.0), (1.0, 1.0), (359.0, 1.0)]
    polar = [(0.0, 88.0), (90.0, 88.0), (180.0, 88.0), (270.0, 88.0)]
    eng = TapEngine(build_tables(frame([square, square[::-1], polar, polar[::-1]])))

    def ids(ra, dec):
        q = f"SELECT planeid FROM plane WHERE CONTAINS(POINT('ICRS', {ra}, {dec}), poly) = 1"
        return sorted(eng.run(q).table["planeid"])

    assert ids(0.0, 0.0) == [1, 2] and ids(359.5, 0.5) == [1, 2] and ids(2.0, 0.0) == []
    assert ids(45.0, 89.9) == [3, 4] and ids(200.0, 88.5) == [3, 4] and ids(45.0, 87.0) == []
    def overlapping(poly):
        q = f"SELECT planeid FROM plane WHERE INTERSECTS(poly, POLYGON('ICRS', {poly})) = 1"
        return sorted(eng.run(q).table["planeid"])

    assert overlapping("0.9, 0.9, 3, 0.9, 3, 3") == [1, 2]  # corner overlap across RA 0 square
    assert overlapping("357, -3, 3, -3, 3, 3, 357, 3") == [1, 2]  # encloses the square entirely
    assert overlapping("359.8, -3, 0.2, -3, 0.2, 3, 359.8, 3") == [1, 2]  # a cross: edges meet, no vertex inside
    assert overlapping("2, 2, 3, 2, 3, 3") == [] and overlapping("10, 89, 100, 89, 190, 89") == [3, 4]
    # AREA of the 2x2 deg square ~ 4 sq deg, DISTANCE across RA 0
    area = eng.run("SELECT AREA(poly) AS a FROM plane WHERE planeid = 1").table["a"][0]
    assert area == pytest.approx(4.0, rel=1e-3)
    dist = eng.run("SELECT DISTANCE(POINT('ICRS', 359.5, 0), POINT('ICRS', 0.5, 0)) AS d FROM plane "
                   "WHERE planeid = 1").table["d"][0]
    assert dist == pytest.approx(1.0, abs=1e-9)


def test_translator_keeps_concatenation():
    assert "||" in translate("SELECT 'a' || a.uri FROM artifact a")
