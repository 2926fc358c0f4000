"""PSF zone lookup (both methods, the header erratum), FWHM, and PSF-based aperture fractions."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import sep

from spxbatch.level2.psf_zones import psf_labels_swapped, zone_index
from spxbatch.level2.region import PSFCube
from spxbatch.photometry.config import PhotometryConfig
from spxbatch.photometry.fwhm import plane_fwhm
from spxbatch.photometry.measure import measure_region
from spxbatch.photometry.psf import (
    PSFModel,
    aperture_fractions,
    phases,
    psf_model_for,
    psf_tiles,
    source_psf,
)
from spxbatch.sim.regions import make_region, psf_cube, stars


@pytest.mark.parametrize(
    ("version", "swapped"),
    [("6.5.4", True), ("6.5.5", True), ("6.5.4+psffix1", False), ("6.5.6", False), ("7.0.0", False),
     ("", False), (None, False), ("v6.5.2", True)],
)
def test_erratum_versions(version, swapped):
    assert psf_labels_swapped(version) is swapped


def _rect_header(swapped: bool):
    """Zone cards of a 2040 frame, with distinct x and y zone centres so a swap is visible."""
    h = psf_cube(npix=2040).header
    xc = (np.arange(11) + 0.5) * 2040 / 11 - 0.5
    yc = xc * 0.9 + 50  # not the x lattice
    for iy in range(11):
        for ix in range(11):
            k = iy * 11 + ix + 1
            h[f"XCTR_{k}"], h[f"YCTR_{k}"] = (yc[iy], xc[ix]) if swapped else (xc[ix], yc[iy])
    return h, xc, yc


@pytest.mark.parametrize("method", ["grid", "header"])
def test_zone_lookup_with_and_without_erratum(method):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 2039, 500)
    y = rng.uniform(0, 2039, 500)
    good, xc, yc = _rect_header(swapped=False)
    expect = np.argmin(np.abs(y[:, None] - yc[None]), 1) * 11 + np.argmin(np.abs(x[:, None] - xc[None]), 1)
    np.testing.assert_array_equal(zone_index(good, x, y, "6.5.6", method), expect)
    np.testing.assert_array_equal(zone_index(good, x, y, "6.5.4+psffix1", method), expect)
    bad, _, _ = _rect_header(swapped=True)
    np.testing.assert_array_equal(zone_index(bad, x, y, "6.5.4", method), expect)
    # reading the erratum header as if it were correct gives other zones
    assert np.mean(zone_index(bad, x, y, "6.5.6", method) != expect) > 0.3


def test_grid_lookup_ignores_swapped_labels_on_a_square_lattice():
    x = np.array([10.0, 1000.0, 2030.0, 500.0])
    y = np.array([2000.0, 10.0, 1500.0, 900.0])
    ok = psf_cube(npix=2040, swapped=False).header
    sw = psf_cube(npix=2040, swapped=True).header
    # the square lattice: the grid method gives the right zones even with the wrong VERSION
    np.testing.assert_array_equal(zone_index(sw, x, y, "6.5.6", "grid"), zone_index(ok, x, y, "6.5.6", "grid"))
    assert zone_index(ok, x[:1], y[:1], None, "grid")[0] == 10 * 11 + 0


def test_fwhm_of_gaussian_plane():
    for sigma in (0.7, 0.85, 1.1):
        plane = psf_cube(sigma=sigma, offset=(0.0, 0.0)).cube[0]
        assert abs(plane_fwhm(plane, 10) / (2.3548 * sigma) - 1) < 0.02


def test_aperture_fraction_equals_rendered_star_at_any_phase():
    model = PSFModel.from_cube(psf_cube())
    rng = np.random.default_rng(3)
    x = rng.uniform(20, 40, 60)
    y = rng.uniform(20, 40, 60)
    tiles = model.tiles(np.zeros(60, dtype=int), phases(x), phases(y), model.tile_half())
    for r in (1.5, 2.5, 3.7):
        frac, _ = aperture_fractions(tiles, phases(x), phases(y), r)
        direct = np.array([
            sep.sum_circle(stars((64, 64), x[i : i + 1], y[i : i + 1], np.ones(1)), x[i : i + 1], y[i : i + 1], r,
                           subpix=0)[0][0]
            for i in range(60)
        ])
        np.testing.assert_allclose(frac, direct, rtol=2e-5)
    # and the tiles are the rendered pixels themselves
    img = stars((64, 64), x[:1], y[:1], np.ones(1))
    ix, iy = int(np.floor(x[0] + 0.5)), int(np.floor(y[0] + 0.5))
    h = model.tile_half()
    np.testing.assert_allclose(tiles[0], img[iy - h : iy + h + 1, ix - h : ix + h + 1], atol=5e-6)


def test_masked_pixels_reduce_the_kept_fraction():
    model = PSFModel.from_cube(psf_cube())
    h = model.tile_half()
    tiles = model.tiles(np.zeros(1, dtype=int), np.array([0.2]), np.array([-0.1]), h)
    missing = np.zeros_like(tiles, dtype=bool)
    missing[0, h, h] = True  # the peak pixel
    full, kept = aperture_fractions(tiles, np.array([0.2]), np.array([-0.1]), 2.5, missing)
    np.testing.assert_allclose(full - kept, tiles[0, h, h], rtol=1e-6)


def test_one_model_per_content_whatever_the_array_object():
    a = psf_cube()
    same = PSFCube(cube=a.cube.copy(), header=a.header.copy())  # another array, equal content
    other = psf_cube(sigma=0.9)
    assert same.digest == a.digest != other.digest
    assert psf_model_for(same) is psf_model_for(a)
    assert psf_model_for(other) is not psf_model_for(a)
    # the digest is of the content, set once: the fetch layer's digest of the file's bytes is the same value
    big = a.cube.astype(">f4")
    assert PSFCube(cube=big, header=a.header).digest == a.digest
    assert PSFCube(cube=a.cube, header=a.header, digest="given").digest == "given"
    # OVERSAMP is part of the model: the same cube read with another oversampling is another model
    h = a.header.copy()
    h["OVERSAMP"] = 5
    assert psf_model_for(PSFCube(cube=a.cube, header=h)).oversamp == 5


def test_zones_come_from_each_regions_own_cards_when_cubes_are_equal():
    """One detector's cube shipped under two versions with other zone cards (the erratum swap, renumbered
    centres): the model is shared, the zones are not (a cache keyed by content must not keep the first cards)."""
    x = np.array([25.0, 475.0, 37.0])
    y = np.array([475.0, 25.0, 250.0])
    right = psf_cube(npix=512, swapped=False)
    swapped = PSFCube(cube=right.cube, header=psf_cube(npix=512, swapped=True).header)
    shifted = PSFCube(cube=right.cube, header=psf_cube(npix=256).header)  # other zone centres
    model = psf_model_for(right)
    assert psf_model_for(swapped) is model and psf_model_for(shifted) is model
    expect = source_psf(model, right, x, y, "6.5.6", "header").zones
    # read as labelled, the swapped cards give other zones; with the erratum version they give the right ones
    assert np.any(source_psf(model, swapped, x, y, "6.5.6", "header").zones != expect)
    np.testing.assert_array_equal(source_psf(model, swapped, x, y, "6.5.4", "header").zones, expect)
    assert np.any(source_psf(model, shifted, x, y, "6.5.6", "grid").zones != expect)
    # and through measure_region: each region's own cards
    for psf in (right, swapped):
        region, ra, dec = make_region(512, x, y, np.ones(3), version="6.5.4" if psf is swapped else "6.5.6")
        region = replace(region, psf=psf)
        out = measure_region(region, ra, dec, PhotometryConfig(psf_zone_lookup="header"))
        np.testing.assert_array_equal(out["psf_zone"], expect)


def test_source_psf_and_tiles():
    model = psf_model_for(psf_cube())
    none = source_psf(None, None, np.array([1.0, 2.0]), np.array([1.0, 2.0]), None, "grid")
    assert list(none.zones) == [0, 0] and none.fwhm is None
    zf = source_psf(model, model.psf, np.array([10.0]), np.array([2000.0]), None, "grid")
    assert zf.zones[0] == 110 and zf.fwhm[0] == pytest.approx(2.3548 * 0.85, rel=0.03)
    xl, yl = np.array([20.3, 7.51]), np.array([19.6, 8.0])
    t = psf_tiles(model, np.zeros(2, dtype=int), xl, yl)
    assert t.tiles.dtype == np.float32 and t.tiles.shape == (2, 2 * model.tile_half() + 1, 2 * model.tile_half() + 1)
    np.testing.assert_allclose(t.tiles.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(t.phase_x, phases(xl))
    np.testing.assert_array_equal(t.tiles, model.tiles(np.zeros(2, dtype=int), t.phase_x, t.phase_y,
                                                       model.tile_half()).astype(np.float32))
