"""The shared sky geometry against astropy (the oracle): unit vectors and back, separations at every angle,
the mean direction across RA = 0, gnomonic offsets."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS

from spxbatch.sky import angle_between, mean_direction, radec_of, separation_deg, tangent_offsets, unit_vectors


def test_unit_vectors_round_trip_at_the_wrap_and_the_poles():
    ra = np.array([0.0, 359.999999, 180.0, 12.345, 270.0, 33.0])
    dec = np.array([0.0, -1e-9, 45.0, -89.9999, 89.5, -30.0])
    xyz = unit_vectors(ra, dec)
    assert xyz.shape == (6, 3) and np.allclose(np.linalg.norm(xyz, axis=1), 1.0, rtol=0, atol=1e-15)
    expect = SkyCoord(ra * u.deg, dec * u.deg).cartesian.xyz.value.T
    assert np.allclose(xyz, expect, rtol=0, atol=1e-15)
    back_ra, back_dec = radec_of(3.0 * xyz)  # any length
    assert np.allclose(back_dec, dec, rtol=0, atol=1e-10)
    dra = (back_ra - ra + 180.0) % 360.0 - 180.0
    assert np.all(np.abs(dra * np.cos(np.radians(dec))) < 1e-10)
    assert np.all((back_ra >= 0) & (back_ra < 360))


@pytest.mark.parametrize("sep_deg", [1e-9, 1e-6, 2.5e-4, 1.0, 90.0, 179.9999, 180.0 - 1e-7])
def test_separation_is_precise_at_every_angle(sep_deg):
    """Right to the resolution of float64 degrees (~1e-14 deg at RA 123) from nanodegrees to antipodes; an
    arccos of the dot product is off by up to ~1e-6 deg near 0, i.e. 100% at these small angles."""
    ra1, dec1 = 123.4, -56.7
    start = SkyCoord(ra1 * u.deg, dec1 * u.deg)
    end = start.directional_offset_by(37.0 * u.deg, sep_deg * u.deg)
    got = separation_deg(ra1, dec1, end.ra.deg, end.dec.deg)
    assert got == pytest.approx(start.separation(end).deg, rel=1e-9, abs=1e-13)
    assert got == pytest.approx(sep_deg, rel=1e-9, abs=1e-13)


def test_angle_between_rows_and_broadcasting():
    a = unit_vectors([0.0, 10.0], [0.0, 20.0])
    b = unit_vectors([90.0, 10.0], [0.0, 20.0])
    assert np.allclose(angle_between(a, b), [np.pi / 2, 0.0], rtol=0, atol=1e-15)
    assert separation_deg(np.array([0.0, 1.0]), 0.0, 0.0, 0.0) == pytest.approx([0.0, 1.0])


def test_mean_direction_across_ra_zero():
    """359.9 and 0.1 average to RA 0 (a plain mean says 180); the result agrees with astropy's mean of the
    Cartesian vectors, and the same field shifted away from RA 0 gives the same offsets."""
    ra = np.array([359.9, 0.1, 359.95, 0.2])
    dec = np.array([10.0, 10.2, 9.9, 10.1])
    c_ra, c_dec = mean_direction(ra, dec)
    xyz = SkyCoord(ra * u.deg, dec * u.deg).cartesian.xyz.value.sum(axis=1)
    expect = SkyCoord(*xyz, representation_type="cartesian").spherical
    assert (c_ra + 180.0) % 360.0 - 180.0 == pytest.approx(((expect.lon.deg + 180.0) % 360.0) - 180.0, abs=1e-12)
    assert c_dec == pytest.approx(expect.lat.deg, abs=1e-12)
    s_ra, s_dec = mean_direction((ra + 50.0) % 360.0, dec)
    assert s_ra == pytest.approx((c_ra + 50.0) % 360.0, abs=1e-9) and s_dec == pytest.approx(c_dec, abs=1e-12)


def test_tangent_offsets_equal_a_tan_projection():
    """Standard coordinates (xi east, eta north) equal astropy's TAN projection about the same point."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [359.5, 62.0]
    w.wcs.crpix = [0.0, 0.0]
    w.wcs.cdelt = [1.0, 1.0]
    rng = np.random.default_rng(4)
    ra = (359.5 + rng.uniform(-3, 3, 50)) % 360.0
    dec = 62.0 + rng.uniform(-2, 2, 50)
    xi, eta = tangent_offsets(ra, dec, 359.5, 62.0)
    px, py = w.wcs_world2pix(ra, dec, 1)  # degrees from the tangent point
    assert np.allclose(np.degrees(xi), px, rtol=0, atol=1e-9)
    assert np.allclose(np.degrees(eta), py, rtol=0, atol=1e-9)


def test_propagation_agrees_with_astropys_space_motion():
    import warnings

    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from astropy.time import Time
    from erfa import ErfaWarning

    from spxbatch.sky import epoch_mjd, propagate

    ra, dec = np.array([10.0, 161.0, 300.0, 45.0]), np.array([20.0, 58.0, -80.0, 89.9])
    pmra, pmdec = np.array([4000.0, -3000.0, 500.0, 10000.0]), np.array([-2000.0, 1000.0, 7000.0, -500.0])
    start, end = epoch_mjd(2016.0), 61000.0
    got = SkyCoord(*propagate(ra, dec, pmra, pmdec, start, end), unit="deg")
    c = SkyCoord(ra * u.deg, dec * u.deg, pm_ra_cosdec=pmra * u.mas / u.yr, pm_dec=pmdec * u.mas / u.yr,
                 distance=1e6 * u.pc, radial_velocity=0 * u.km / u.s, obstime=Time(2016.0, format="jyear"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ErfaWarning)
        want = c.apply_space_motion(new_obstime=Time(end, format="mjd"))
    assert np.all(got.separation(SkyCoord(want.ra, want.dec)).to(u.mas).value < 0.1)  # of ~45" of motion
    same = propagate(ra, dec, np.full(4, np.nan), np.zeros(4), start, end)
    assert np.allclose(same[0], ra) and np.allclose(same[1], dec)
    assert np.allclose(epoch_mjd([2016.0, 2457389.0, 57388.5]), 57388.5)
