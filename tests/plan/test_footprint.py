"""Spherical point-in-polygon: RA wrap, poles, both windings, margins, against an independent slow reference."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS
from matplotlib.path import Path

from spxbatch.plan.footprint import Footprints, margin_deg
from spxbatch.sky import radec_of, unit_vectors


def square(ra0: float, dec0: float, half: float, rot: float = 0.0, clockwise: bool = False):
    """Corners (deg) of a square of half-side `half` deg, rotated by `rot` deg, centred at (ra0, dec0)."""
    w = _tan(ra0, dec0)
    ang = np.radians(rot + np.array([45.0, 135.0, 225.0, 315.0]))
    if clockwise:
        ang = ang[::-1]
    r = half * np.sqrt(2)
    ra, dec = w.wcs_pix2world(r * np.cos(ang), r * np.sin(ang), 0)
    return ra % 360.0, dec


def _tan(ra0: float, dec0: float) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra0, dec0]
    w.wcs.crpix = [1.0, 1.0]
    w.wcs.cdelt = [1.0, 1.0]
    return w


def reference_inside(pra, pdec, ra, dec) -> np.ndarray:
    """Slow and independent: gnomonic projection at the polygon's first corner, then a planar
    (matplotlib) point-in-polygon test; great circles are straight lines in that projection."""
    w = _tan(pra[0], pdec[0])
    x, y = w.wcs_world2pix(np.asarray(pra), np.asarray(pdec), 0)
    path = Path(np.column_stack([x, y]))
    out = np.zeros(len(ra), dtype=bool)
    for i in range(len(ra)):
        # points more than 60 deg away are behind/far from the tangent plane: not inside a small polygon
        d = np.degrees(np.arccos(np.clip(unit_vectors(ra[i], dec[i]) @ unit_vectors(pra[0], pdec[0]), -1, 1)))
        if d < 60:
            px, py = w.wcs_world2pix([ra[i]], [dec[i]], 0)
            out[i] = path.contains_point((px[0], py[0]))
    return out


def random_near(ra0, dec0, radius_deg, n, rng):
    """Uniform random points on the sphere within `radius_deg` of (ra0, dec0)."""
    c = unit_vectors(ra0, dec0)
    e = np.cross([0.0, 0.0, 1.0] if abs(c[2]) < 0.9 else [1.0, 0.0, 0.0], c)
    e /= np.linalg.norm(e)
    nn = np.cross(c, e)
    cos_t = rng.uniform(np.cos(np.radians(radius_deg)), 1.0, n)
    sin_t = np.sqrt(1 - cos_t**2)
    phi = rng.uniform(0, 2 * np.pi, n)
    pts = cos_t[:, None] * c + sin_t[:, None] * (np.cos(phi)[:, None] * e + np.sin(phi)[:, None] * nn)
    return radec_of(pts)


FIELDS = [(150.0, 2.0, 0.0), (0.3, -10.0, 20.0), (359.8, 45.0, 37.0), (12.0, 89.0, 10.0), (200.0, -88.5, 60.0),
          (45.0, 90.0, 0.0), (181.0, 60.0, 80.0)]


@pytest.mark.parametrize("ra0,dec0,rot", FIELDS)
@pytest.mark.parametrize("clockwise", [False, True])
def test_matches_reference(ra0, dec0, rot, clockwise):
    rng = np.random.default_rng(int(ra0 * 10 + dec0 + 1000))
    pra, pdec = square(ra0, dec0, 1.745, rot, clockwise)
    ra, dec = random_near(ra0, dec0, 4.0, 3000, rng)
    fp = Footprints.from_corners([pra], [pdec])
    got = fp.contains(np.zeros(len(ra), int), unit_vectors(ra, dec))
    ref = reference_inside(pra, pdec, ra, dec)
    assert 300 < ref.sum() < 2700  # both outcomes well represented
    assert np.array_equal(got, ref)


def test_pole_inside_and_ra_wrap():
    pra, pdec = square(33.0, 89.0, 1.745, 15.0)  # contains the north pole
    fp = Footprints.from_corners([pra], [pdec])
    assert fp.contains([0], unit_vectors([0.0], [90.0]))[0]
    pra, pdec = square(0.0, 0.0, 1.0)  # straddles RA=0: corners at ~359 and ~1 deg
    assert set(np.round(pra).astype(int)) == {1, 359}
    fp = Footprints.from_corners([pra], [pdec])
    ok = fp.contains(np.zeros(4, int), unit_vectors([359.5, 0.5, 0.0, 180.0], [0.5, -0.5, 0.0, 0.0]))
    assert ok.tolist() == [True, True, True, False]


def test_vertex_order_and_closing_corner_do_not_matter():
    pra, pdec = square(100.0, -30.0, 1.5, 10.0)
    rng = np.random.default_rng(3)
    ra, dec = random_near(100.0, -30.0, 3.0, 2000, rng)
    xyz = unit_vectors(ra, dec)
    zero = np.zeros(len(ra), int)
    base = Footprints.from_corners([pra], [pdec]).contains(zero, xyz)
    for order in ([0, 2, 1, 3], [3, 2, 1, 0], [0, 1, 2, 3, 0]):  # bowtie, reversed, closed
        fp = Footprints.from_corners([pra[order]], [pdec[order]])
        assert np.array_equal(fp.contains(zero, xyz), base)


def test_margin_widens_each_edge_by_the_angle():
    pra, pdec = square(210.0, 0.0, 1.0)  # edges along RA/Dec lines near the equator (rotated 0)
    fp = Footprints.from_corners([pra], [pdec])
    m = margin_deg(10)  # 61.5 arcsec
    # points just outside the east edge (RA 211 deg at dec 0)
    ra = 211.0 + np.array([0.5, 0.9, 1.1, 1.5]) * m
    got = fp.contains(np.zeros(4, int), unit_vectors(ra, np.zeros(4)), margin_deg=m)
    assert got.tolist() == [True, True, False, False]
    assert not fp.contains([0], unit_vectors([ra[0]], [0.0]))[0]


def test_match_many_polygons_against_reference():
    rng = np.random.default_rng(7)
    centres = [(359.0, 1.0), (1.5, -1.0), (0.0, 88.5), (120.0, 88.0), (300.0, -89.0), (60.0, 30.0)]
    polys = [square(r, d, 1.745, rng.uniform(0, 90), clockwise=bool(i % 2)) for i, (r, d) in enumerate(centres)]
    pts = [random_near(r, d, 3.0, 400, rng) for r, d in centres]
    ra = np.concatenate([p[0] for p in pts])
    dec = np.concatenate([p[1] for p in pts])
    fp = Footprints.from_corners([p[0] for p in polys], [p[1] for p in polys])
    poly, point = fp.match(ra, dec)
    got = set(zip(poly.tolist(), point.tolist(), strict=True))
    ref = {(i, j) for i, (pr, pd) in enumerate(polys) for j in np.flatnonzero(reference_inside(pr, pd, ra, dec))}
    assert got == ref and len(ref) > 1000
    assert np.all(np.diff(poly * len(ra) + point) > 0)  # sorted by (polygon, point)


def test_mixed_vertex_counts_and_empty_inputs():
    tri_ra, tri_dec = [10.0, 12.0, 11.0], [0.0, 0.0, 2.0]
    sq_ra, sq_dec = square(50.0, 0.0, 1.0)
    fp = Footprints.from_corners([tri_ra, sq_ra], [tri_dec, sq_dec])
    poly, point = fp.match([11.0, 11.2, 50.0, 52.0], [0.5, 1.9, 0.0, 0.0])
    assert list(zip(poly.tolist(), point.tolist(), strict=True)) == [(0, 0), (1, 2)]
    assert [len(a) for a in fp.match([], [])] == [0, 0]
