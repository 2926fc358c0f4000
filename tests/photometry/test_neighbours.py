"""Catalog neighbours: self-matching, BLENDED, the mask radius and the count image (against brute force)."""

from __future__ import annotations

import numpy as np

from spxbatch.level2.wcs import celestial_wcs
from spxbatch.photometry.config import PhotometryConfig
from spxbatch.photometry.frame import image_frame
from spxbatch.photometry.neighbours import (
    catalog_neighbours,
    mask_radius,
    neighbour_count,
    neighbour_index,
    neighbour_mask,
)
from spxbatch.sim.regions import make_region, subregion


def test_self_count_and_blended():
    region, _, _ = make_region(64, np.array([30.0]), np.array([30.0]))
    wcs = celestial_wcs(region.image_header)
    x = np.array([20.0, 24.0, 40.0])
    y = np.array([20.0, 20.0, 40.0])
    radius = np.array([2.5, 2.5, 2.5])
    # the sources themselves as their neighbours (a NaN position is dropped)
    nb = catalog_neighbours(neighbour_index(np.append(x, np.nan), np.append(y, 1.0)), x, y, radius)
    np.testing.assert_array_equal(nb.self_count, [1, 1, 1])
    np.testing.assert_array_equal(nb.blended, [True, True, False])  # 4 px < 2 r = 5 px
    assert nb.x.size == 3
    # catalog neighbours from the sky, placed by the image's frame: a source not in the catalog has no
    # self-match
    ra, dec = wcs.all_pix2world(np.array([20.0, 44.0]), np.array([20.0, 40.0]), 0)
    nb = catalog_neighbours(image_frame(region, (ra, dec)).neighbours, x, y, radius)
    np.testing.assert_array_equal(nb.self_count, [1, 0, 0])
    np.testing.assert_array_equal(nb.blended, [False, True, True])
    np.testing.assert_allclose(nb.x, [20.0, 44.0], atol=1e-8)
    empty = catalog_neighbours(neighbour_index(np.array([]), np.array([])), x, y, radius)
    assert not empty.blended.any() and not empty.self_count.any() and empty.x.size == 0


def test_mask_radius():
    assert mask_radius(PhotometryConfig(), 2.5) == 2.5 + PhotometryConfig().annulus_gap
    assert mask_radius(PhotometryConfig(neighbour_mask_radius=1.0), 2.5) == 1.0


def test_neighbour_count_equals_brute_force_in_a_region():
    rng = np.random.default_rng(0)
    region, _, _ = make_region(64, np.array([30.0]), np.array([30.0]))
    cut = subregion(region, 12, 20, 30, 25)
    nbx = np.concatenate([rng.uniform(0, 64, 60), [np.nan]])
    nby = np.concatenate([rng.uniform(0, 64, 60), [10.0]])
    r = 3.9
    count = neighbour_count(cut.shape, cut.x0, cut.y0, nbx, nby, r)
    yy, xx = np.mgrid[0:cut.shape[0], 0:cut.shape[1]]
    d = np.hypot(xx[None] + cut.x0 - nbx[:60, None, None], yy[None] + cut.y0 - nby[:60, None, None])
    close = np.abs(d - r) < 1e-5  # the engine compares distances in float32
    expect = (d < r).sum(axis=0)
    assert np.all((count == expect) | close.any(axis=0))
    assert count.sum() > 50
    mask = neighbour_mask(cut, nbx, nby, r, np.array([1, 0]))
    np.testing.assert_array_equal(mask.count, count)
    assert mask.radius == r and list(mask.self_count) == [1, 0]
