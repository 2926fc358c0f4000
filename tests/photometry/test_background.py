"""The background phase on small arrays: annulus (against astropy over brute-force pixel sets), widening,
failure, neighbours' disks, avoided flags, window, global and none."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.stats import sigma_clip, sigma_clipped_stats

from spxbatch.photometry.background import source_background
from spxbatch.photometry.config import PhotometryConfig
from spxbatch.photometry.masks import Pixels
from spxbatch.photometry.neighbours import NeighbourMask
from spxbatch.photometry.positions import local_pixels
from spxbatch.photometry.psf import PSFModel, psf_tiles
from spxbatch.sim.regions import make_region, psf_cube

N = 48


def _pixels(image, bad=None, avoid=None, zodi=None):
    shape = image.shape
    zodi = np.zeros(shape) if zodi is None else zodi
    bad = np.zeros(shape, dtype=bool) if bad is None else bad
    return Pixels(image, zodi, np.zeros(shape, dtype=np.int32), np.ones(shape), bad, np.zeros(shape, dtype=bool),
                  avoid)


def _mask(shape, self_count, count=None):
    return NeighbourMask(np.zeros(shape, dtype=np.int32) if count is None else count, 3.9, np.asarray(self_count))


def _at(x, y):
    region, _, _ = make_region(N, np.array([N / 2]), np.array([N / 2]))
    return local_pixels(region, np.asarray(x, float), np.asarray(y, float), 20, whole=False)


def _annulus_pixels(x, y, r_in, r_out, usable):
    yy, xx = np.mgrid[0:N, 0:N]
    d = np.hypot(xx - x, yy - y)
    return (d >= r_in) & (d <= r_out) & usable


def test_annulus_level_equals_astropy_on_the_same_pixels():
    rng = np.random.default_rng(0)
    image = rng.normal(0.3, 0.01, (N, N))
    image[rng.random((N, N)) < 0.02] += 1.0  # outliers to clip
    image[[26, 25], [20, 35]] += 1.0  # at least one in each annulus
    bad = rng.random((N, N)) < 0.1
    bad[[26, 25], [20, 35]] = False
    cfg = PhotometryConfig()
    x, y = np.array([20.3, 30.6]), np.array([21.8, 25.1])
    radius = np.array([2.5, 2.0])
    bkg = source_background(cfg, _pixels(image, bad), _at(x, y), radius, np.zeros(2), None,
                            _mask((N, N), [0, 0]), 2.5)
    for i in range(2):
        r_in = radius[i] + cfg.annulus_gap
        r_out = np.sqrt(cfg.annulus_area / np.pi + r_in**2)
        sel = _annulus_pixels(x[i], y[i], r_in, r_out, ~bad)
        _, median, std = sigma_clipped_stats(image[sel], sigma=3.0, maxiters=3)
        assert bkg.npix[i] == (~sigma_clip(image[sel], sigma=3.0, maxiters=3).mask).sum() < sel.sum()
        assert bkg.level[i] == pytest.approx(median, abs=1e-12) and bkg.std[i] == pytest.approx(std, abs=1e-12)
    np.testing.assert_allclose(bkg.err, cfg.bkg_error_factor * bkg.std / np.sqrt(bkg.npix))
    assert not bkg.failed.any() and not bkg.conditions["BACKGROUND_WIDENED"].any()
    assert not bkg.own_light.any()  # no PSF tiles


def test_zodi_is_subtracted_at_each_sources_scale():
    rng = np.random.default_rng(1)
    zodi = 0.2 + 0.01 * rng.random((N, N))
    image = 1.5 * zodi + 0.05
    at = _at([15.2, 33.3], [15.7, 30.1])
    bkg = source_background(PhotometryConfig(), _pixels(image, zodi=zodi), at, np.full(2, 2.5),
                            np.array([1.5, 1.0]), None, _mask((N, N), [0, 0]), 2.5)
    assert bkg.level[0] == pytest.approx(0.05, abs=1e-12)
    assert bkg.level[1] > 0.05 + 0.09  # half a zodi left in


def test_widening_failure_and_neighbour_disks():
    image = np.full((N, N), 0.25)
    cfg = PhotometryConfig()
    x, y = np.array([24.0]), np.array([24.0])
    r_in = 2.5 + cfg.annulus_gap
    r_out = np.sqrt(cfg.annulus_area / np.pi + r_in**2)
    yy, xx = np.mgrid[0:N, 0:N]
    d = np.hypot(xx - 24.0, yy - 24.0)
    # the initial annulus is masked: widened by the first step with enough pixels
    bad = d <= r_out + 0.3
    bkg = source_background(cfg, _pixels(image, bad), _at(x, y), np.array([2.5]), np.zeros(1), None,
                            _mask((N, N), [0]), 2.5)
    assert bkg.conditions["BACKGROUND_WIDENED"][0] and not bkg.failed[0]
    assert bkg.level[0] == 0.25 and bkg.npix[0] >= cfg.background_min_pixels
    # everything within the widest annulus masked: failed, not measured
    bad = d <= r_out + cfg.annulus_step * cfg.annulus_steps + 1
    bkg = source_background(cfg, _pixels(image, bad), _at(x, y), np.array([2.5]), np.zeros(1), None,
                            _mask((N, N), [0]), 2.5)
    assert bkg.failed[0] and bkg.conditions["BACKGROUND_FAILED"][0] and np.isnan(bkg.level[0])
    # another catalog source's disk (count 1 where it is not our own) is left out
    count = (np.hypot(xx - 30.0, yy - 24.0) < 3.9).astype(np.int32)
    full = source_background(cfg, _pixels(image), _at(x, y), np.array([2.5]), np.zeros(1), None,
                             _mask((N, N), [0]), 2.5)
    masked = source_background(cfg, _pixels(image), _at(x, y), np.array([2.5]), np.zeros(1), None,
                               _mask((N, N), [0], count), 2.5)
    expect = _annulus_pixels(24.0, 24.0, r_in, r_out, np.ones((N, N), bool))
    assert full.npix[0] == expect.sum()
    assert masked.npix[0] == (expect & (count == 0)).sum()
    # with a self-match, a count of 1 inside our own disk radius is our own disk, usable
    own = (np.hypot(xx - 24.0, yy - 24.0) < 3.9).astype(np.int32)
    mine = source_background(cfg.with_(annulus_gap=0.5), _pixels(image), _at(x, y), np.array([2.5]), np.zeros(1),
                             None, _mask((N, N), [1], own), 2.5)
    other = source_background(cfg.with_(annulus_gap=0.5), _pixels(image), _at(x, y), np.array([2.5]), np.zeros(1),
                              None, _mask((N, N), [0], own), 2.5)
    assert mine.npix[0] > other.npix[0]


def test_avoided_flags_are_relaxed_only_when_needed():
    image = np.full((N, N), 0.25)
    yy, xx = np.mgrid[0:N, 0:N]
    avoid = np.hypot(xx - 24.0, yy - 24.0) < 12
    cfg = PhotometryConfig(background_avoid_flags=("SOURCE",))
    for background in ("annulus", "window"):
        c = cfg.with_(background=background, window_halfsize=8)
        bkg = source_background(c, _pixels(image, avoid=avoid), _at([24.0, 24.0], [24.0, 24.0]),
                                np.array([2.5, 2.5]), np.zeros(2), None, _mask((N, N), [0, 0]), 2.5)
        assert bkg.conditions["BACKGROUND_RELAXED"].all() and not bkg.failed.any(), background
        clear = source_background(c, _pixels(image, avoid=np.zeros((N, N), bool)), _at([24.0], [24.0]),
                                  np.array([2.5]), np.zeros(1), None, _mask((N, N), [0]), 2.5)
        assert not clear.conditions["BACKGROUND_RELAXED"].any()


def test_window_uses_the_box_beyond_the_exclusion_radius():
    rng = np.random.default_rng(2)
    image = rng.normal(0.3, 0.01, (N, N))
    cfg = PhotometryConfig(background="window", window_halfsize=6, clip_iters=0)
    bkg = source_background(cfg, _pixels(image), _at([24.3], [23.6]), np.array([2.5]), np.zeros(1), None,
                            _mask((N, N), [0]), 2.5)
    yy, xx = np.mgrid[18:31, 18:31]  # the box around the nearest pixel (24, 24)
    sel = np.hypot(xx - 24.3, yy - 23.6) > 2.5 + cfg.window_gap
    assert bkg.npix[0] == sel.sum()
    assert bkg.level[0] == pytest.approx(np.median(image[18:31, 18:31][sel]), abs=1e-12)


def test_global_and_none():
    image = np.full((64, 64), 0.4)
    region, _, _ = make_region(64, np.array([32.0]), np.array([32.0]))
    at = local_pixels(region, np.array([20.5, 40.0]), np.array([30.0, 10.0]), 20, whole=True)
    cfg = PhotometryConfig(background="global", zodi="none", global_mesh=16)
    bkg = source_background(cfg, _pixels(image), at, np.full(2, 2.5), np.zeros(2), None, None, 2.5)
    np.testing.assert_allclose(bkg.level, 0.4, rtol=1e-6)
    assert bkg.err is bkg.std and list(bkg.npix) == [1, 1] and not bkg.failed.any() and bkg.conditions == {}
    none = source_background(cfg.with_(background="none"), _pixels(image), at, np.full(2, 2.5), np.zeros(2), None,
                             None, 2.5)
    assert not none.level.any() and not none.err.any() and not none.failed.any() and none.conditions == {}


def test_own_light_is_the_mean_psf_tile_over_the_background_pixels():
    image = np.full((N, N), 0.25)
    model = PSFModel.from_cube(psf_cube())
    x, y = np.array([24.2]), np.array([23.9])
    at = _at(x, y)
    tiles = psf_tiles(model, np.zeros(1, dtype=int), at.xl, at.yl)
    cfg = PhotometryConfig()
    bkg = source_background(cfg, _pixels(image), at, np.array([2.5]), np.zeros(1), tiles, _mask((N, N), [0]), 2.5)
    r_in = 2.5 + cfg.annulus_gap
    sel = _annulus_pixels(24.2, 23.9, r_in, np.sqrt(cfg.annulus_area / np.pi + r_in**2), np.ones((N, N), bool))
    h = model.tile_half()
    light = np.zeros((N, N))
    light[24 - h:24 + h + 1, 24 - h:24 + h + 1] = tiles.tiles[0]
    assert bkg.own_light[0] == pytest.approx(light[sel].mean(), rel=1e-6)
    assert 0 < bkg.own_light[0] < 1e-3
