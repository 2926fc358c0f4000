"""ADQL's geometry functions through queryparser's translation and the SQLite functions behind them: POINT,
CIRCLE, POLYGON, BOX, DISTANCE, COORD1/2, CENTROID, AREA; NULL in, NULL out; a failure keeps its message."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import MaskedColumn, Table

from spxbatch.sim.tap.engine import TapEngine
from spxbatch.sim.tap.functions import SQL_FUNCTIONS, sql_function


@pytest.fixture(scope="module")
def eng() -> TapEngine:
    one = pd.DataFrame({"id": [1], "poly": ["{(359.5d,-1d),(0.5d,-1d),(0.5d,1d),(359.5d,1d)}"], "pt": ["(0.25d,0.5d)"]})
    return TapEngine({"plane": one})


def _one(eng, select: str):
    """The single row of `SELECT <select> FROM plane` as a dict."""
    t = eng.run(f"SELECT {select} FROM plane").table
    assert len(t) == 1
    return {name: t[name][0] for name in t.colnames}, t


def test_constructors(eng):
    row, t = _one(eng, "POINT('ICRS', 10, 20) AS p, CIRCLE('ICRS', 10, 20, 0.5) AS c, "
                       "POLYGON('ICRS', 1, 2, 3, 4, 5, 6) AS y, BOX('ICRS', 10, 20, 1, 2) AS b")
    assert np.allclose(row["p"], [10, 20]) and np.allclose(row["c"], [10, 20, 0.5])
    assert np.allclose(row["y"], [1, 2, 3, 4, 5, 6])
    assert np.allclose(row["b"], [9.5, 19, 10.5, 19, 10.5, 21, 9.5, 21])  # queryparser's BOX: centre +- half sizes
    assert [t[n].meta["xtype"] for n in ("p", "c", "y", "b")] == ["point", "circle", "polygon", "polygon"]


def test_distance_matches_astropy(eng):
    pairs = [((359.5, 0.0), (0.5, 0.0)), ((10.0, 89.9), (190.0, 89.9)), ((30.0, -45.0), (30.000001, -45.0)),
             ((0.0, 0.0), (179.0, 0.0))]
    for (a, b), (c, d) in pairs:
        row, _ = _one(eng, f"DISTANCE(POINT('ICRS', {a}, {b}), POINT('ICRS', {c}, {d})) AS d")
        want = SkyCoord(a, b, unit="deg").separation(SkyCoord(c, d, unit="deg")).deg
        assert row["d"] == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_coordinates_centroid_and_area(eng):
    row, _ = _one(eng, "COORD1(pt) AS ra, COORD2(pt) AS dec, CENTROID(poly) AS c, AREA(poly) AS a, "
                       "AREA(CIRCLE('ICRS', 0, 90, 1)) AS cap")
    assert (row["ra"], row["dec"]) == pytest.approx((0.25, 0.5), abs=1e-12)
    assert np.allclose(row["c"], [0.0, 0.0], atol=1e-12) or np.allclose(row["c"], [360.0, 0.0], atol=1e-12)
    assert row["a"] == pytest.approx(2.0, rel=1e-3)  # 1 x 2 deg on the equator
    assert row["cap"] == pytest.approx(2 * math.pi * (1 - math.cos(math.radians(1))) * (180 / math.pi) ** 2)


def test_null_in_null_out(eng):
    """An uploaded row with a NULL coordinate gives NULL geometry and matches nothing, other rows still do."""
    src = Table({"k": [1, 2], "ra": MaskedColumn([0.1, 0.0], mask=[False, True]), "dec": [0.2, 0.0]})
    t = eng.run("SELECT t.k, POINT('ICRS', t.ra, t.dec) AS p, CONTAINS(POINT('ICRS', t.ra, t.dec), p.poly) AS inside "
                "FROM TAP_UPLOAD.src AS t JOIN plane AS p ORDER BY t.k", uploads={"src": src}).table
    assert np.allclose(t["p"][0], [0.1, 0.2]) and len(t["p"][1]) == 0
    assert t["inside"][0] == 1 and t["inside"].mask[1]


def test_a_failure_keeps_its_message():
    errors: list[str] = []
    coord1 = sql_function(SQL_FUNCTIONS["coord1"][1], errors)
    assert coord1(None) is None and errors == []
    assert coord1("(1d,2d)") == pytest.approx(1.0)
    with pytest.raises(Exception, match="need a POINT"):
        coord1("<(1d,2d),1d>")
    assert errors == ["COORD1/COORD2 need a POINT"]


def test_spoint_takes_radians_and_wraps():
    spoint = SQL_FUNCTIONS["spoint"][1]
    assert spoint(math.radians(-10.0), math.radians(20.0)) == f"({350.0!r}d,{20.0!r}d)"
