"""PSF zone lookup (both methods, the header erratum), FWHM, and PSF-based aperture fractions."""

from __future__ import annotations

import numpy as np
import pytest
import sep

from spxbatch.photometry.psf import PSFModel, phases, plane_fwhm, psf_labels_swapped, zone_index
from spxbatch.sim.regions import psf_cube, stars


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
        frac, _ = model.aperture_fractions(tiles, phases(x), phases(y), r)
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
    full, kept = model.aperture_fractions(tiles, np.array([0.2]), np.array([-0.1]), 2.5, missing)
    np.testing.assert_allclose(full - kept, tiles[0, h, h], rtol=1e-6)
