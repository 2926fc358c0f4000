"""The aperture-correction phase: no PSF, the enclosed fraction, masked pixels made up for, the options."""

from __future__ import annotations

import numpy as np
import pytest

from spxbatch.photometry.config import PhotometryConfig
from spxbatch.photometry.correction import aperture_correction
from spxbatch.photometry.positions import local_pixels
from spxbatch.photometry.psf import PSFModel, aperture_fractions, psf_tiles
from spxbatch.sim.regions import make_region, psf_cube

MODEL = PSFModel.from_cube(psf_cube())


def _setup(x, y):
    region, _, _ = make_region(40, np.array([20.0]), np.array([20.0]))
    at = local_pixels(region, np.asarray(x, float), np.asarray(y, float), 12, whole=False)
    return at, psf_tiles(MODEL, np.zeros(at.xl.size, dtype=int), at.xl, at.yl)


def test_without_a_psf_nothing_is_corrected():
    at, _ = _setup([20.0], [20.0])
    corr = aperture_correction(PhotometryConfig(), None, np.zeros((40, 40), bool), at, np.array([2.5]),
                               np.array([19.6]), np.zeros(1), np.zeros(1, bool))
    assert corr.fraction[0] == 1.0 and not corr.mask_corrected[0]


def test_fraction_is_the_enclosed_psf_light_less_the_light_in_the_background():
    at, tiles = _setup([20.3, 15.8], [19.6, 22.1])
    radius = np.array([2.5, 1.5])
    area = np.pi * radius**2
    own = np.array([1e-4, 2e-4])
    bad = np.zeros((40, 40), bool)
    full, _ = aperture_fractions(tiles.tiles.astype(float), tiles.phase_x, tiles.phase_y, radius)
    corr = aperture_correction(PhotometryConfig(), tiles, bad, at, radius, area, own, np.zeros(2, bool))
    np.testing.assert_allclose(corr.fraction, full - area * own, rtol=1e-12)
    assert not corr.mask_corrected.any() and 0.7 < full[1] < full[0] < 1  # 1.5 px encloses less than 2.5 px
    off = aperture_correction(PhotometryConfig(aperture_correction=False), tiles, bad, at, radius, area, own,
                              np.zeros(2, bool))
    np.testing.assert_array_equal(off.fraction, [1.0, 1.0])  # kept / enclosed: nothing missing


def test_masked_pixels_are_made_up_for_by_the_psf():
    at, tiles = _setup([20.3], [19.6])
    radius = np.array([2.5])
    bad = np.zeros((40, 40), bool)
    bad[20, 20] = True  # the peak pixel
    h = MODEL.tile_half()
    peak = tiles.tiles[0, h, h]
    full, _ = aperture_fractions(tiles.tiles.astype(float), tiles.phase_x, tiles.phase_y, radius)
    on = aperture_correction(PhotometryConfig(aperture_correction=False), tiles, bad, at, radius,
                             np.array([18.6]), np.zeros(1), np.ones(1, bool))
    assert on.mask_corrected[0] and on.fraction[0] == pytest.approx((full[0] - peak) / full[0], rel=1e-6)
    # only apertures marked partial are looked at; masked_aperture='flag' looks at none
    unmarked = aperture_correction(PhotometryConfig(aperture_correction=False), tiles, bad, at, radius,
                                   np.array([18.6]), np.zeros(1), np.zeros(1, bool))
    flag = aperture_correction(PhotometryConfig(aperture_correction=False, masked_aperture="flag"), tiles, bad,
                               at, radius, np.array([18.6]), np.zeros(1), np.ones(1, bool))
    assert unmarked.fraction[0] == flag.fraction[0] == 1.0 and not flag.mask_corrected[0]
    # every aperture pixel masked: the fraction is 0 (the flux becomes non-finite: not measured)
    allbad = aperture_correction(PhotometryConfig(), tiles, np.ones((40, 40), bool), at, radius,
                                 np.zeros(1), np.zeros(1), np.ones(1, bool))
    assert allbad.fraction[0] == 0.0 and allbad.mask_corrected[0]
