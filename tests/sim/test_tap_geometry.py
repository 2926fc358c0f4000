"""The simulated TAP service's sky geometry against independent computations: astropy separations and offsets,
a winding-number point-in-polygon test in the tangent plane, Gauss-Bonnet polygon areas (and circle areas through
inscribed polygons), and densely sampled boundaries for the circle and polygon predicates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord

from spxbatch.sim.tap.errors import TapError
from spxbatch.sim.tap.geometry import Circle, Point, Polygon, angle, area_sq_deg, contains, intersects, lonlat, vec

#: Polygon centres: ordinary sky, both sides of RA = 0, next to either pole.
CENTRES = [(161.0, 58.0), (0.2, -1.0), (359.8, 12.0), (45.0, 89.5), (200.0, -89.7), (90.0, 0.0)]
#: Points per edge when a boundary is sampled.
SAMPLES = 400


def _xyz(ra, dec) -> np.ndarray:
    """Unit vectors (n, 3) through astropy (not through the code under test)."""
    c = SkyCoord(np.atleast_1d(ra), np.atleast_1d(dec), unit="deg").cartesian
    return np.stack([c.x.value, c.y.value, c.z.value], axis=-1)


def _random_polygon(rng, centre, size_deg, n=None, convex=True) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) of a polygon around `centre`: vertices at sorted position angles, convex (equal distances
    over at most 180 deg gaps) or star-shaped (distances from 0.3 to 1 of `size_deg`)."""
    n = n or int(rng.integers(3, 8))
    while True:
        pa = np.sort(rng.uniform(0, 360, n))
        if np.max(np.diff(np.r_[pa, pa[0] + 360])) < 170:
            break
    dist = np.full(n, size_deg) if convex else size_deg * rng.uniform(0.3, 1.0, n)
    c = SkyCoord(*centre, unit="deg")
    v = c.directional_offset_by(pa * u.deg, dist * u.deg)
    return v.ra.deg, v.dec.deg


def _polygon(ra, dec) -> Polygon:
    return Polygon(tuple(vec(a, d) for a, d in zip(ra, dec, strict=True)))


def _winding(points: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Winding number of the polygon `verts` (k, 3) about each point (n, 3), summing the signed angles
    between successive vertex directions in the tangent plane at the point."""
    t = verts[None, :, :] - (points @ verts.T)[:, :, None] * points[:, None, :]
    t_next = np.roll(t, -1, axis=1)
    sin = np.einsum("nj,nkj->nk", points, np.cross(t, t_next))
    cos = np.einsum("nkj,nkj->nk", t, t_next)
    return np.rint(np.arctan2(sin, cos).sum(axis=1) / (2 * np.pi)).astype(int)


def _boundary(verts: np.ndarray) -> np.ndarray:
    """SAMPLES points per great-circle edge (slerp), (k * SAMPLES, 3)."""
    out = []
    for a, b in zip(verts, np.roll(verts, -1, axis=0), strict=True):
        omega = math.atan2(np.linalg.norm(np.cross(a, b)), a @ b)
        s = np.linspace(0, 1, SAMPLES, endpoint=False)[:, None]
        out.append((np.sin((1 - s) * omega) * a + np.sin(s * omega) * b) / np.sin(omega))
    return np.concatenate(out)


def _angles(points: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.arctan2(np.linalg.norm(np.cross(points, p), axis=-1), points @ p)


def test_vectors_and_angles_match_astropy():
    rng = np.random.default_rng(1)
    ra, dec = rng.uniform(0, 360, 50), np.degrees(np.arcsin(rng.uniform(-1, 1, 50)))
    np.testing.assert_allclose([vec(a, d) for a, d in zip(ra, dec, strict=True)], _xyz(ra, dec), atol=1e-15)
    back = np.array([lonlat(vec(a, d)) for a, d in zip(ra, dec, strict=True)])
    np.testing.assert_allclose(back, np.c_[ra, dec], atol=1e-9)
    a = SkyCoord(ra, dec, unit="deg")
    for sep in (1e-9, 1e-4, 1.0, 90.0, 179.999999):
        b = a.directional_offset_by(rng.uniform(0, 360, 50) * u.deg, sep * u.deg)
        got = [math.degrees(angle(vec(p.ra.deg, p.dec.deg), vec(q.ra.deg, q.dec.deg))) for p, q in zip(a, b,
                                                                                                          strict=True)]
        np.testing.assert_allclose(got, a.separation(b).deg, rtol=1e-6, atol=1e-13)


@pytest.mark.parametrize("convex", [True, False])
@pytest.mark.parametrize("centre", CENTRES)
def test_point_in_polygon_matches_winding_number(centre, convex):
    """CONTAINS(POINT, POLYGON) equals the winding-number test, for either winding order, across RA 0 and
    at the poles, for convex and star-shaped polygons from 0.05 to 20 deg."""
    rng = np.random.default_rng([round(centre[0] * 10), round(centre[1] * 10) + 1000, int(convex)])
    inside_seen = outside_seen = 0
    for size in (0.05, 1.0, 20.0):
        ra, dec = _random_polygon(rng, centre, size, convex=convex)
        verts = _xyz(ra, dec)
        c = SkyCoord(*centre, unit="deg")
        q = c.directional_offset_by(rng.uniform(0, 360, 200) * u.deg, rng.uniform(0, 1.3 * size, 200) * u.deg)
        want = _winding(_xyz(q.ra.deg, q.dec.deg), verts) != 0
        for poly in (_polygon(ra, dec), _polygon(ra[::-1], dec[::-1])):
            got = [contains(Point(vec(a, d)), poly) for a, d in zip(q.ra.deg, q.dec.deg, strict=True)]
            np.testing.assert_array_equal(got, want)
        inside_seen += want.sum()
        outside_seen += (~want).sum()
    assert inside_seen > 50 and outside_seen > 50


def _gauss_bonnet_area(verts: np.ndarray) -> float:
    """Area (sq deg) of a simple spherical polygon: 2 pi minus the total turning of its boundary."""
    prev, nxt = np.roll(verts, 1, axis=0), np.roll(verts, -1, axis=0)
    d_in = -(prev - np.sum(prev * verts, axis=1)[:, None] * verts)
    d_out = nxt - np.sum(nxt * verts, axis=1)[:, None] * verts
    turn = np.arctan2(np.einsum("kj,kj->k", verts, np.cross(d_in, d_out)), np.einsum("kj,kj->k", d_in, d_out))
    return (2 * np.pi - abs(turn.sum())) * (180 / np.pi) ** 2


@pytest.mark.parametrize("centre", CENTRES)
def test_polygon_area_matches_gauss_bonnet(centre):
    rng = np.random.default_rng(7)
    for size, convex in ((0.1, True), (2.0, False), (30.0, True), (30.0, False)):
        ra, dec = _random_polygon(rng, centre, size, convex=convex)
        want = _gauss_bonnet_area(_xyz(ra, dec))
        assert area_sq_deg(_polygon(ra, dec)) == pytest.approx(want, rel=1e-6)  # G-B cancels at small sizes
        assert area_sq_deg(_polygon(ra[::-1], dec[::-1])) == pytest.approx(want, rel=1e-6)


def test_circle_area_matches_an_inscribed_polygon():
    """The analytic cap area against the Gauss-Bonnet area of a 3600-gon on the circle (astropy offsets)."""
    for ra, dec, r in ((10.0, 20.0, 1.0), (0.0, 89.0, 5.0), (300.0, -45.0, 15.0), (180.0, 0.0, 60.0)):
        edge = SkyCoord(ra, dec, unit="deg").directional_offset_by(np.arange(0, 360, 0.1) * u.deg, r * u.deg)
        want = _gauss_bonnet_area(_xyz(edge.ra.deg, edge.dec.deg))
        assert area_sq_deg(Circle(vec(ra, dec), math.radians(r))) == pytest.approx(want, rel=1e-5)
    assert area_sq_deg(Point(vec(1.0, 2.0))) == 0.0


def _circle_cases(rng, n=40):
    """(polygon ra, dec, circle centre, radius deg) around every CENTRE, circles inside, across and outside."""
    for centre in CENTRES:
        for _ in range(n):
            size = float(rng.choice([0.1, 1.0, 10.0]))
            ra, dec = _random_polygon(rng, centre, size, convex=bool(rng.integers(2)))
            c = SkyCoord(*centre, unit="deg").directional_offset_by(rng.uniform(0, 360) * u.deg,
                                                                    rng.uniform(0, 2 * size) * u.deg)
            yield ra, dec, (c.ra.deg, c.dec.deg), size * rng.uniform(0.02, 1.5)


def test_circle_and_polygon_predicates_match_sampled_boundaries():
    """INTERSECTS/CONTAINS of a circle and a polygon against the distance from the circle's centre to a densely
    sampled boundary (cases within the sampling error of the radius are left out)."""
    rng = np.random.default_rng(3)
    outcomes = set()
    for ra, dec, (cra, cdec), r in _circle_cases(rng):
        verts = _xyz(ra, dec)
        p = _xyz(cra, cdec)[0]
        samples = _boundary(verts)
        dist = np.degrees(_angles(samples, p))
        longest_edge = max(angle(tuple(a), tuple(b)) for a, b in zip(verts, np.roll(verts, -1, axis=0), strict=True))
        tol = 1e-6 + math.degrees(longest_edge) / SAMPLES
        if abs(dist.min() - r) < tol or abs(dist.max() - r) < tol:
            continue
        centre_in = _winding(p[None], verts)[0] != 0
        poly, circle = _polygon(ra, dec), Circle(vec(cra, cdec), math.radians(r))
        want_meet = centre_in or dist.min() <= r
        assert intersects(poly, circle) == intersects(circle, poly) == want_meet
        assert contains(circle, poly) == (centre_in and dist.min() >= r)
        assert contains(poly, circle) == (dist.max() <= r)
        outcomes.add((want_meet, centre_in and dist.min() >= r, dist.max() <= r))
    assert outcomes >= {(False, False, False), (True, False, False), (True, True, False), (True, False, True)}


def _polygon_pairs(rng, n=40):
    for centre in CENTRES:
        for _ in range(n):
            size = float(rng.choice([0.1, 1.0, 10.0]))
            a = _random_polygon(rng, centre, size, convex=bool(rng.integers(2)))
            c = SkyCoord(*centre, unit="deg").directional_offset_by(rng.uniform(0, 360) * u.deg,
                                                                    rng.uniform(0, 2.5 * size) * u.deg)
            b = _random_polygon(rng, (c.ra.deg, c.dec.deg), size * rng.uniform(0.1, 1.5),
                                convex=bool(rng.integers(2)))
            yield a, b


def test_polygon_predicates_match_sampled_boundaries():
    """INTERSECTS(A, B) is 'a boundary sample of one lies inside the other'; CONTAINS(A, B) is 'every sample
    of A lies inside B'. Pairs whose samples split by fewer than 2 points are left out (touching)."""
    rng = np.random.default_rng(5)
    outcomes = set()
    for (ra_a, dec_a), (ra_b, dec_b) in _polygon_pairs(rng):
        va, vb = _xyz(ra_a, dec_a), _xyz(ra_b, dec_b)
        a_in_b = _winding(_boundary(va), vb) != 0
        b_in_a = _winding(_boundary(vb), va) != 0
        if 0 < a_in_b.sum() < 2 or 0 < b_in_a.sum() < 2 or 0 < (~a_in_b).sum() < 2:
            continue
        pa, pb = _polygon(ra_a, dec_a), _polygon(ra_b, dec_b)
        meet = bool(a_in_b.any() or b_in_a.any())
        assert intersects(pa, pb) == intersects(pb, pa) == meet
        assert contains(pa, pb) == bool(a_in_b.all())
        outcomes.add((meet, bool(a_in_b.all())))
    assert outcomes == {(False, False), (True, False), (True, True)}


def test_crossing_polygons_with_no_vertex_inside_the_other():
    """A plus sign of two thin rectangles: the edges cross, no vertex of either lies inside the other."""
    across = _polygon([359.0, 1.0, 1.0, 359.0], [-0.1, -0.1, 0.1, 0.1])
    upright = _polygon([359.9, 0.1, 0.1, 359.9], [-1.0, -1.0, 1.0, 1.0])
    assert not any(across.contains_vec(v) for v in upright.verts)
    assert not any(upright.contains_vec(v) for v in across.verts)
    assert intersects(across, upright) and intersects(upright, across)
    assert not contains(across, upright) and not contains(upright, across)


def test_polygon_with_its_vertices_inside_another_but_an_edge_outside():
    """A triangle whose three vertices lie in a notched square while one edge crosses the notch: it meets the
    square but is not contained in it (a test of vertices alone would say it is)."""
    notched = ([0.0, 4.0, 4.0, 2.2, 2.0, 1.8, 0.0], [0.0, 0.0, 4.0, 4.0, 1.0, 4.0, 4.0])
    triangle = ([1.0, 3.0, 2.0], [3.0, 3.0, 0.5])
    outer, inner = _polygon(*notched), _polygon(*triangle)
    assert all(outer.contains_vec(v) for v in inner.verts)
    assert not (_winding(_boundary(_xyz(*triangle)), _xyz(*notched)) != 0).all()
    assert not contains(inner, outer) and intersects(inner, outer)


def test_points_and_circles():
    p, q = vec(10.0, 20.0), vec(10.0, 20.5)
    assert contains(Point(p), Point(p)) and not contains(Point(p), Point(q))
    assert contains(Point(q), Circle(p, math.radians(0.5001)))
    assert not contains(Point(q), Circle(p, math.radians(0.4999)))
    assert intersects(Circle(p, math.radians(0.3)), Circle(q, math.radians(0.21)))
    assert not intersects(Circle(p, math.radians(0.3)), Circle(q, math.radians(0.19)))
    assert contains(Circle(q, math.radians(0.1)), Circle(p, math.radians(0.61)))
    assert not contains(Circle(q, math.radians(0.1)), Circle(p, math.radians(0.59)))
    assert intersects(Point(q), Circle(p, math.radians(0.6))) == intersects(Circle(p, math.radians(0.6)), Point(q))


def test_polygons_larger_than_a_hemisphere_are_refused():
    big = _polygon([0.0, 90.0, 180.0], [-1.0, 5.0, -1.0])  # its vertex mean is < 90 deg from no vertex
    with pytest.raises(TapError, match="hemisphere"):
        big.contains_vec(vec(0.0, 90.0))
