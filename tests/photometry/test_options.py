"""Every PhotometryConfig option changes the result on a field built to exercise it (so an ignored option
fails here); the behaviour of each is tested in detail in test_measure.py and the phase tests."""

from __future__ import annotations

import numpy as np
import pytest

from spxbatch.level2.constants import FLAG_BITS
from spxbatch.photometry import PhotometryConfig
from spxbatch.photometry.measure import measure_region
from spxbatch.sim.regions import make_region


@pytest.fixture(scope="module")
def field():
    """Noisy 160 px frame: stars (some in close pairs 7 px apart), unflagged hot pixels in annuli, NaN
    variance on unflagged aperture pixels, a zodi gradient and a sky that is not the zodi."""
    rng = np.random.default_rng(21)
    gx, gy = np.meshgrid(np.arange(20, 150, 26.0), np.arange(20, 150, 26.0))
    x = gx.ravel() + rng.uniform(-0.5, 0.5, gx.size)
    y = gy.ravel() + rng.uniform(-0.5, 0.5, gx.size)
    x = np.concatenate([x, x[:6] + 7.0, [1.2]])  # close pairs, and a star whose aperture the edge clips
    y = np.concatenate([y, y[:6] + 0.3, [80.4]])
    flux = rng.uniform(2, 40, x.size)
    region, ra, dec = make_region(160, x, y, flux, noise=True, seed=5, sky=0.35, zodi=0.25)
    for xs, ys in zip(x[6:12], y[6:12], strict=True):
        region.image[int(ys) + 4, int(xs)] += 3.0  # unflagged outlier in the annulus
        region.variance[round(ys), round(xs) + 1] = np.nan  # unflagged NaN variance
    region.flags[round(y[13]) + 1, round(x[13])] |= 1 << FLAG_BITS["HOT"]  # bad pixels in apertures
    region.flags[round(y[14]) - 1, round(x[14])] |= 1 << FLAG_BITS["NONFUNC"]
    return region, ra, dec


OPTIONS = [
    ({}, {"aperture": "fixed"}),
    ({"aperture": "fixed"}, {"fixed_radius": 2.0}),
    ({}, {"fwhm_multiplier": 3.0}),
    ({}, {"max_aperture_radius": 2.0}),
    ({}, {"background": "window"}),
    ({}, {"background": "global"}),
    ({}, {"background": "none"}),
    ({}, {"annulus_gap": 2.5}),
    ({}, {"annulus_area": 120.0}),
    ({}, {"annulus_max_outer": 5.0}),
    ({"background_min_pixels": 70}, {"annulus_step": 1.0}),
    ({"background_min_pixels": 70}, {"annulus_steps": 0}),
    ({}, {"background_min_pixels": 500}),
    ({}, {"background_avoid_flags": ("SOURCE",)}),
    ({"background": "window"}, {"window_halfsize": 10}),
    ({"background": "window"}, {"window_gap": 3.0}),
    ({}, {"clip_sigma": 100.0}),
    ({}, {"clip_iters": 0}),
    ({}, {"background_statistic": "mean"}),
    ({}, {"background_error_factor": 2.0}),
    ({"background": "global"}, {"global_mesh": 16}),
    ({}, {"neighbour_mask_radius": 0.1}),
    ({}, {"zodi": "fixed"}),
    ({}, {"zodi": "none"}),
    ({}, {"zodi_halfsize": 4}),
    ({}, {"zodi_min_scale": 1.6}),
    ({}, {"zodi_max_scale": 1.1}),
    ({}, {"zodi_min_fraction": 0.99}),
    ({}, {"bad_flags": ("HOT",)}),
    ({}, {"masked_aperture": "flag"}),
    ({}, {"variance_repair_halfsize": 6}),
    ({}, {"error_weights": "linear"}),
    ({}, {"aperture_correction": False}),
    ({}, {"min_edge_distance": 25.0}),
    ({}, {"snr_threshold": 50.0}),
    ({}, {"disqualifying_conditions": ()}),
    ({}, {"extra_disqualifying_flags": ("SOURCE",)}),
    ({}, {"photometry": "aperture"}),
    ({"flux_source": "psf"}, {"photometry": "psf"}),
    ({}, {"flux_source": "psf"}),
    ({}, {"psf_fit_halfsize": 2}),
    ({}, {"psf_max_group": 1}),
    ({"flux_source": "psf"}, {"psf_max_chi2": 0.5}),
    ({"flux_source": "psf"}, {"psf_min_unmasked_fraction": 0.995}),
]


@pytest.mark.parametrize(("base", "change"), OPTIONS, ids=[next(iter(c)) + "=" + str(next(iter(c.values())))
                                                            for _, c in OPTIONS])
def test_option_changes_the_result(field, base, change):
    region, ra, dec = field
    a = measure_region(region, ra, dec, PhotometryConfig(**base))
    b = measure_region(region, ra, dec, PhotometryConfig(**{**base, **change}))
    differs = [k for k in a
               if not np.array_equal(np.asarray(a[k]), np.asarray(b[k]), equal_nan=a[k].dtype.kind == "f")]
    assert differs, f"{change} changed nothing"


def test_fallback_fwhm_without_psf(field):
    from dataclasses import replace

    region, ra, dec = field
    bare = replace(region, psf=None)
    a = measure_region(bare, ra, dec, PhotometryConfig())
    b = measure_region(bare, ra, dec, PhotometryConfig(fallback_fwhm=2.4))
    assert np.all(b["aperture_radius"][b["measured"]] == 3.0) and np.all(a["aperture_radius"][a["measured"]] == 2.5)


def test_every_option_is_exercised():
    from dataclasses import fields

    # zone lookup: test_psf.py; fallback_fwhm: above
    tested = {k for _, c in OPTIONS for k in c} | {"psf_zone_lookup", "fallback_fwhm"}
    assert {f.name for f in fields(PhotometryConfig)} <= tested
