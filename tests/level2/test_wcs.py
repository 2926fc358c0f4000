"""Sky -> parent pixel: exact inverse of the SIP forward transform, batch-independent, cutout-invariant."""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from spxbatch.level2.wcs import celestial_wcs, sky_to_parent_pixel


def sip_header(x0: int = 0, y0: int = 0) -> fits.Header:
    """A SPHEREx-like TAN-SIP IMAGE header (6.15"/px, 3rd-order distortion of a few px at the corners),
    for a region whose parent origin is (x0, y0): CRPIX, CRPIXnA and CRPIXnW shifted as a cutout's."""
    h = fits.Header()
    h["NAXIS"] = 2
    h["NAXIS1"] = 2040
    h["NAXIS2"] = 2040
    h["CTYPE1"] = "RA---TAN-SIP"
    h["CTYPE2"] = "DEC--TAN-SIP"
    h["CRPIX1"] = 1020.5 - x0
    h["CRPIX2"] = 1020.5 - y0
    h["CRVAL1"] = 150.0
    h["CRVAL2"] = 2.0
    s = 6.15 / 3600
    h["CD1_1"] = -s * np.cos(0.3)
    h["CD1_2"] = s * np.sin(0.3)
    h["CD2_1"] = s * np.sin(0.3)
    h["CD2_2"] = s * np.cos(0.3)
    h["A_ORDER"] = 3
    h["B_ORDER"] = 3
    h["A_2_0"] = 2e-6
    h["A_0_2"] = -1.5e-6
    h["A_1_1"] = 1e-6
    h["A_3_0"] = 1.2e-9
    h["B_0_2"] = 2.5e-6
    h["B_1_1"] = -1e-6
    h["B_2_1"] = 8e-10
    h["B_0_3"] = -1e-9
    h["CRPIX1A"] = 1.0 - x0
    h["CRPIX2A"] = 1.0 - y0
    h["CRPIX1W"] = 0.0 - x0
    h["CRPIX2W"] = 0.0 - y0
    return h


def test_round_trip_and_batch_independence():
    rng = np.random.default_rng(1)
    w = WCS(sip_header())
    px = rng.uniform(-0.5, 2039.5, 3000)
    py = rng.uniform(-0.5, 2039.5, 3000)
    ra, dec = w.all_pix2world(px, py, 0)
    x, y = sky_to_parent_pixel(sip_header(), ra, dec)
    assert np.max(np.hypot(x - px, y - py)) < 1e-8
    # one source alone gives the same answer as in the batch, to the bit or nearly
    for i in (0, 17, 2999):
        xi, yi = sky_to_parent_pixel(sip_header(), ra[i : i + 1], dec[i : i + 1])
        assert abs(xi[0] - x[i]) < 1e-9 and abs(yi[0] - y[i]) < 1e-9
    # the distortion is not negligible: the linear inverse alone is off by > 0.5 px somewhere
    lin = w.wcs_world2pix(ra, dec, 0)
    assert np.max(np.hypot(lin[0] - px, lin[1] - py)) > 0.5


def test_cutout_header_gives_parent_pixels():
    rng = np.random.default_rng(2)
    w = WCS(sip_header())
    px = rng.uniform(300, 400, 50)
    py = rng.uniform(1200, 1300, 50)
    ra, dec = w.all_pix2world(px, py, 0)
    x, y = sky_to_parent_pixel(sip_header(x0=290, y0=1190), ra, dec)
    np.testing.assert_allclose(x, px, atol=1e-8)
    np.testing.assert_allclose(y, py, atol=1e-8)


def test_nan_input_stays_nan_and_empty_is_empty():
    x, _ = sky_to_parent_pixel(sip_header(), np.array([150.0, np.nan]), np.array([2.0, 2.0]))
    assert np.isfinite(x[0]) and np.isnan(x[1])
    x, _ = sky_to_parent_pixel(sip_header(), np.array([]), np.array([]))
    assert x.size == 0


def test_celestial_wcs_is_built_once_per_header_and_never_shared():
    """Box regions of one image carry one header: the WCS is parsed once and each caller gets its own copy,
    equal to a fresh parse; another header (a cutout's shifted CRPIX) gets its own WCS."""
    h = sip_header()
    first, again = celestial_wcs(h), celestial_wcs(h.copy())
    assert first is not again and first.wcs is not again.wcs
    x, y = np.array([3.0, 1000.0, 2030.0]), np.array([5.0, 1500.0, 2000.0])
    fresh = WCS(h, naxis=2, relax=True)
    assert np.array_equal(again.all_pix2world(x, y, 0), fresh.all_pix2world(x, y, 0))
    again.wcs.crpix = [1.0, 1.0]  # a caller changing its copy changes nobody else's
    assert np.array_equal(celestial_wcs(h).wcs.crpix, first.wcs.crpix)
    cut = celestial_wcs(sip_header(100, 200))  # a cutout: the same parent WCS, from another header
    assert np.array_equal(cut.all_pix2world(x, y, 0), first.all_pix2world(x, y, 0))
