"""Apertures: radii, the neighbourhood bound, exact pixel footprints (against a brute-force oracle), the frame
edge and the aperture sums."""

from __future__ import annotations

import numpy as np
import pytest
import sep
from overlap_reference import pixel_overlap

from spxbatch.level2.constants import FLAG_BITS
from spxbatch.photometry.aperture import (
    annulus_radii,
    aperture_footprint,
    aperture_radius,
    aperture_sums,
    background_extent,
    frame_edge,
    max_radius,
    neighbourhood_halfsize,
    source_radii,
)
from spxbatch.photometry.config import PhotometryConfig
from spxbatch.photometry.masks import flag_bits, region_pixels
from spxbatch.photometry.positions import local_pixels
from spxbatch.photometry.psf import PSFModel, psf_model_for
from spxbatch.sim.regions import make_region, psf_cube


def test_radii():
    cfg = PhotometryConfig()
    np.testing.assert_array_equal(aperture_radius(cfg, np.array([2.0, np.nan, 3.0, 5.0])), [2.5, 2.5, 3.75, 4.0])
    assert aperture_radius(cfg, None) == 2.5  # the fallback FWHM
    assert aperture_radius(cfg.with_(fwhm_multiplier=10.0), np.array([2.0]))[0] == cfg.max_aperture_radius
    assert aperture_radius(cfg.with_(aperture="fixed", fixed_radius=1.7), np.array([9.0])) == 1.7
    r = source_radii(cfg.with_(aperture="fixed"), None, 3)
    assert r.shape == (3,) and r.dtype == float and r.flags.writeable
    r_in, r_out = annulus_radii(cfg, np.array([2.0]))
    assert r_in[0] == 2.0 + cfg.annulus_gap
    np.testing.assert_allclose(np.pi * (r_out**2 - r_in**2), cfg.annulus_area)  # the annulus area
    assert annulus_radii(cfg.with_(annulus_max_outer=4.0), np.array([2.0]))[1][0] == 4.0
    assert background_extent(cfg, 2.0) == pytest.approx(r_out[0] + cfg.annulus_step * cfg.annulus_steps)
    assert background_extent(cfg.with_(background="window"), 2.0) == cfg.window_halfsize
    assert background_extent(cfg.with_(background="none"), 2.0) == 0.0


def test_neighbourhood_bound_from_a_model_or_a_cube():
    cfg = PhotometryConfig()
    cube = psf_cube()
    model = PSFModel.from_cube(cube)
    assert max_radius(cfg, model) == pytest.approx(1.25 * model.max_fwhm())
    assert max_radius(cfg, None) == cfg.max_aperture_radius
    assert neighbourhood_halfsize(cfg, cube) == neighbourhood_halfsize(cfg, model) <= neighbourhood_halfsize(cfg)
    assert neighbourhood_halfsize(cfg.with_(background="window")) >= cfg.window_halfsize
    assert psf_model_for(cube) is psf_model_for(cube)


def _footprint_oracle(pix, x, y, r, power):
    """Over the whole image in float64: area and sum(w^p var) of the unmasked pixels, OR of FLAGS of the
    touched pixels, whether a masked pixel is touched, and whether that answer is ambiguous (a flagged or
    masked pixel within 1e-5 px of touching: the engine classifies touching in float32)."""
    ny, nx = pix.image.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    w = pixel_overlap(xx - x, yy - y, np.full((ny, nx), r))
    wu = np.where(pix.bad, 0.0, w)
    near = np.hypot(np.maximum(np.abs(xx - x) - 0.5, 0), np.maximum(np.abs(yy - y) - 0.5, 0))
    touched = near < r
    flags = np.bitwise_or.reduce(np.where(touched, pix.flags, 0).ravel())
    ambiguous = np.any((np.abs(near - r) < 1e-5) & (pix.bad | (pix.flags != 0)))
    return (wu.sum(), (wu**power * np.where(pix.bad, 0.0, pix.variance)).sum(), flags,
            bool((pix.bad & touched).any()), ambiguous)


@pytest.mark.parametrize("error_weights", ["squared", "linear"])
def test_footprint_equals_brute_force_including_masked_and_edge_pixels(error_weights):
    rng = np.random.default_rng(3)
    region, _, _ = make_region(40, np.array([20.0]), np.array([20.0]), noise=True, source_radius=0)
    region.flags[20, 21] |= 1 << FLAG_BITS["HOT"]
    region.flags[9, 9] |= 1 << FLAG_BITS["SOURCE"]
    region.image[31, 30] = np.nan
    pix = region_pixels(region, PhotometryConfig(), flag_bits(region))
    x = np.concatenate([rng.uniform(3, 36, 30), [20.3, 9.4, 30.2, 0.1, 39.3]])
    y = np.concatenate([rng.uniform(3, 36, 30), [19.8, 9.0, 30.9, 12.0, 39.4]])
    radius = np.concatenate([rng.uniform(0.6, 3.9, 30), [2.5, 1.0, 2.0, 3.0, 3.5]])
    at = local_pixels(region, x, y, 10, whole=False)
    fp = aperture_footprint(pix, at, radius, 4.0, error_weights)
    for i in range(x.size):
        area, var_sum, flags, masked, ambiguous = _footprint_oracle(pix, x[i], y[i], radius[i],
                                                                    2 if error_weights == "squared" else 1)
        assert fp.area[i] == pytest.approx(area, rel=1e-12, abs=1e-12)
        assert fp.var_sum[i] == pytest.approx(var_sum, rel=1e-12, abs=1e-15)
        if not ambiguous:
            assert fp.flags_or[i] == flags and fp.has_masked[i] == masked, i
    assert fp.has_masked[-5] and fp.flags_or[-4] & (1 << FLAG_BITS["SOURCE"]) and fp.has_masked[-3]
    d = 0.1 + 0.5  # the frame's edge cuts the aperture 0.6 px from its centre: the segment beyond is missing
    assert fp.area[-2] == pytest.approx(np.pi * 9.0 - (9.0 * np.arccos(d / 3.0) - d * np.sqrt(9.0 - d * d)))
    assert not fp.variance_repaired.any()


def test_every_aperture_pixel_masked_gives_zero_area_and_sums():
    region, _, _ = make_region(24, np.array([12.0]), np.array([12.0]), source_radius=0)
    region.flags[:] = 1 << FLAG_BITS["NONFUNC"]
    pix = region_pixels(region, PhotometryConfig(), flag_bits(region))
    at = local_pixels(region, np.array([12.2]), np.array([11.7]), 8, whole=False)
    fp = aperture_footprint(pix, at, np.array([2.5]), 2.5, "squared")
    assert fp.area[0] == 0 and fp.var_sum[0] == 0 and fp.has_masked[0]
    sums = aperture_sums(pix, at, np.array([2.5]), with_zodi=True)
    assert sums.image[0] == 0 and sums.zodi[0] == 0


def test_aperture_sums_are_sep_sums_of_the_unmasked_pixels():
    region, _, _ = make_region(32, np.array([16.0]), np.array([16.0]), noise=True)
    region.image[16, 17] = 1e6
    region.flags[16, 17] |= 1 << FLAG_BITS["HOT"]
    pix = region_pixels(region, PhotometryConfig(), flag_bits(region))
    at = local_pixels(region, np.array([16.2, 8.6]), np.array([15.9, 20.3]), 8, whole=False)
    r = np.array([2.5, 1.5])
    sums = aperture_sums(pix, at, r, with_zodi=True)
    clean = np.where(pix.bad, 0.0, region.image.astype(float))
    np.testing.assert_allclose(sums.image, sep.sum_circle(clean, at.xl, at.yl, r, subpix=0)[0], rtol=1e-6)
    np.testing.assert_allclose(sums.zodi, sep.sum_circle(np.where(pix.bad, 0.0, region.zodi.astype(float)), at.xl,
                                                         at.yl, r, subpix=0)[0], rtol=1e-12)
    assert sums.image[0] < 1e3  # the hot pixel stayed out
    assert not aperture_sums(pix, at, r, with_zodi=False).zodi.any()


def test_frame_edge():
    edge = frame_edge(np.array([2.0, 1.99, 50.0, 97.01]), np.array([50.0, 50.0, 97.6, 50.0]), np.full(4, 2.5),
                      (100, 100))
    np.testing.assert_array_equal(edge, [False, True, True, True])
