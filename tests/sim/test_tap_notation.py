"""Geometry text of the simulated TAP service: pgSphere (degrees with `d`, radians without), STC-S, DALI
arrays, and what is not geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spxbatch.sim.tap.errors import TapError
from spxbatch.sim.tap.geometry import Circle, Point, Polygon, lonlat, vec
from spxbatch.sim.tap.notation import (
    dali_array,
    geometry_text,
    is_geometry_text,
    parse_geometry,
    point_text,
    polygon_text,
    stcs_polygon,
)

CORNERS = ([359.9, 0.1, 0.1, 359.9], [-0.2, -0.2, 0.3, 0.3])


def _lonlats(g) -> np.ndarray:
    return np.array([lonlat(v) for v in g.verts])


def test_pgsphere_points_circles_polygons():
    assert parse_geometry("(10d,20d)") == Point(vec(10.0, 20.0))
    p = parse_geometry(f" ( {math.radians(10.0)} , {math.radians(-20.0)} ) ")  # radians: no suffix
    assert np.allclose(lonlat(p.v), (10.0, -20.0), atol=1e-12)
    c = parse_geometry("<(10d,20d),0.5d>")
    assert isinstance(c, Circle) and c.v == vec(10.0, 20.0) and c.radius == pytest.approx(math.radians(0.5))
    assert parse_geometry(f"<(10d,20d),{math.radians(0.5)}>").radius == pytest.approx(math.radians(0.5))
    poly = parse_geometry("{(1d,2d), (3d,4d),(5d,6d)}")
    assert isinstance(poly, Polygon) and np.allclose(_lonlats(poly), [[1, 2], [3, 4], [5, 6]])
    assert parse_geometry("(1.5e1d,-2E-1d)") == Point(vec(15.0, -0.2))


def test_stcs_regions():
    poly = parse_geometry("POLYGON ICRS 1 2 3 4 5 6 1 2")  # the closing vertex is dropped
    assert len(poly.verts) == 3 and np.allclose(_lonlats(poly), [[1, 2], [3, 4], [5, 6]])
    assert parse_geometry("polygon 1 2 3 4 5 6") == poly  # frame optional, any case
    assert parse_geometry("CIRCLE ICRS 10 20 0.5") == Circle(vec(10.0, 20.0), math.radians(0.5))
    assert parse_geometry("POINT ICRS 10 20") == parse_geometry("POSITION 10 20") == Point(vec(10.0, 20.0))


@pytest.mark.parametrize("text", ["", "hello", "(1d,2d", "{(1d,2d),(3d,4d)}", "POLYGON ICRS 1 2 3 4",
                                  "POLYGON ICRS 1 2 x 4 5 6", "CIRCLE ICRS 1 2", "BOX ICRS 1 2 3 4", "<(1d,2d)>"])
def test_what_is_not_a_region_is_a_tap_error(text):
    with pytest.raises(TapError, match=r"region|polygon needs"):
        parse_geometry(text)


def test_non_text_is_a_tap_error():
    with pytest.raises(TapError, match="not a geometry value"):
        parse_geometry(60800.5)


def test_stored_forms_read_back():
    """`plane.poly`, `plane.pt` and `obscore.s_region` as stored parse to the same corners, across RA 0."""
    ra, dec = CORNERS
    want = np.c_[np.array(ra) % 360, dec]
    assert np.allclose(_lonlats(parse_geometry(polygon_text(ra, dec))), want, atol=1e-12)
    assert np.allclose(_lonlats(parse_geometry(stcs_polygon(ra, dec))), want, atol=1e-12)
    assert polygon_text([1.0], [2.0]) == "{(1.0d,2.0d)}" and point_text(1.0, 2.0) == "(1.0d,2.0d)"
    assert stcs_polygon([1, 3, 5], [2, 4, 6]) == "POLYGON ICRS 1.0 2.0 3.0 4.0 5.0 6.0"


@pytest.mark.parametrize("g", [Point(vec(359.99, -89.0)), Circle(vec(0.01, 45.0), math.radians(0.25)),
                               Polygon(tuple(vec(a, d) for a, d in zip(*CORNERS, strict=True)))])
def test_geometry_text_round_trips(g):
    back = parse_geometry(geometry_text(g))
    assert type(back) is type(g)
    assert np.allclose(dali_array(back), dali_array(g), rtol=0, atol=1e-12)


def test_dali_arrays_are_degrees():
    assert np.allclose(dali_array(Point(vec(10.0, 20.0))), [10, 20])
    assert np.allclose(dali_array(Circle(vec(10.0, 20.0), math.radians(0.5))), [10, 20, 0.5])
    assert np.allclose(dali_array(parse_geometry(polygon_text(*CORNERS))),
                       np.ravel(np.c_[np.array(CORNERS[0]) % 360, CORNERS[1]]))


def test_only_pgsphere_text_counts_as_geometry():
    """Result columns holding pgSphere text become DALI arrays; STC-S strings and other text stay strings."""
    assert is_geometry_text("(1d,2d)") and is_geometry_text(" {(1d,2d),(3d,4d),(5d,6d)}")
    assert is_geometry_text("<(1d,2d),3d>")
    assert not is_geometry_text("POLYGON ICRS 1 2 3 4 5 6")
    assert not is_geometry_text("(hello)") and not is_geometry_text("spherex_qr2")
