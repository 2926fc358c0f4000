"""Crops of a region: every source in one crop, each crop holding its sources' neighbourhoods."""

from __future__ import annotations

import numpy as np

from spxbatch.photometry import crops
from spxbatch.photometry.crops import crop, region_crops
from spxbatch.sim.regions import make_region


def test_sparse_sources_get_crops_that_hold_their_neighbourhoods(monkeypatch):
    monkeypatch.setattr(crops, "CROP_COST_S", 1e-4)  # a cheap crop: 14 sources on 1024 px are cropped
    region, _, _ = make_region(1024, np.array([10.0]), np.array([10.0]))
    rng = np.random.default_rng(1)
    xl = np.concatenate([rng.uniform(0, 1023, 12), [0.0, 1023.0]])
    yl = np.concatenate([rng.uniform(0, 1023, 12), [1023.0, 0.0]])
    half = 20
    pairs = list(region_crops(region, xl, yl, half, whole=False))
    assert len(pairs) > 1
    rows = np.concatenate([r for r, _ in pairs])
    np.testing.assert_array_equal(np.sort(rows), np.arange(xl.size))  # each source once
    for r, c in pairs:
        assert c.shape[0] * c.shape[1] < region.shape[0] * region.shape[1]
        ix = np.floor(xl[r] + 0.5).astype(int)
        iy = np.floor(yl[r] + 0.5).astype(int)
        # the neighbourhood, clipped to the region, lies inside the crop
        assert np.all(np.maximum(ix - half, 0) >= c.x0) and np.all(np.minimum(ix + half, 1023) < c.x0 + c.shape[1])
        assert np.all(np.maximum(iy - half, 0) >= c.y0) and np.all(np.minimum(iy + half, 1023) < c.y0 + c.shape[0])
        np.testing.assert_array_equal(c.image, region.image[c.y0:c.y0 + c.shape[0], c.x0:c.x0 + c.shape[1]])


def test_dense_sources_or_a_global_background_use_the_whole_region(monkeypatch):
    region, _, _ = make_region(1024, np.array([10.0]), np.array([10.0]))
    rng = np.random.default_rng(2)
    xl, yl = rng.uniform(0, 1023, 3000), rng.uniform(0, 1023, 3000)
    [(rows, whole)] = list(region_crops(region, xl, yl, 12, whole=False))
    assert whole is region and rows.size == 3000
    assert len(list(region_crops(region, xl[:3], yl[:3], 12, whole=False))) == 3  # sparse: cropped
    [(_, whole)] = list(region_crops(region, xl[:3], yl[:3], 12, whole=True))
    assert whole is region
    monkeypatch.setattr(crops, "CROP_COST_S", 0.0)  # crops free: dense sources are cropped too
    assert len(list(region_crops(region, xl[:50], yl[:50], 12, whole=False))) > 1


def test_crop_is_a_region_of_the_same_parent():
    region, _, _ = make_region(64, np.array([10.0]), np.array([10.0]))
    region.solid_angle = np.arange(64.0 * 64).reshape(64, 64)
    c = crop(region, 5, 7, 20, 30)
    assert (c.x0, c.y0, c.shape, c.parent_shape) == (5, 7, (23, 15), region.parent_shape)
    np.testing.assert_array_equal(c.solid_angle, region.solid_angle[7:30, 5:20])
    assert c.cwave is None and c.image.flags["C_CONTIGUOUS"]
    assert c.image_header is region.image_header  # headers stay the parent's: positions do not move
