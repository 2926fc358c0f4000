"""The fast kernel against straightforward references written here: the zodi scale (dense summed-area
tables and sparse gathered boxes) against a per-source loop, the shared-term pixel overlaps against the
plain per-corner formula, bit for bit."""

from __future__ import annotations

import numpy as np
from overlap_reference import pixel_overlap

from spxbatch.level2.constants import FLAG_BITS
from spxbatch.photometry.config import PhotometryConfig
from spxbatch.photometry.masks import flag_bits, region_pixels
from spxbatch.photometry.overlap import grid_overlaps
from spxbatch.photometry.positions import local_pixels
from spxbatch.photometry.zodi import source_zodi_scale
from spxbatch.sim.regions import make_region


def _reference_scale(pix, qualifies, ix, iy, half):
    """s = sum(w I Z) / sum(w Z^2), w = 1/var, over the qualifying pixels of each box: one loop per source."""
    ny, nx = pix.image.shape
    out = []
    for i, j in zip(ix, iy, strict=True):
        box = (slice(max(j - half, 0), min(j + half + 1, ny)), slice(max(i - half, 0), min(i + half + 1, nx)))
        q = qualifies[box]
        w = 1.0 / pix.variance[box][q]
        z = pix.zodi[box][q].astype(float)
        out.append(np.sum(w * pix.image[box][q] * z) / np.sum(w * z * z))
    return np.array(out)


def test_zodi_scale_dense_and_sparse_equal_a_per_source_loop():
    rng = np.random.default_rng(3)
    npix = 40
    region, _, _ = make_region(npix, rng.uniform(5, 35, 6), rng.uniform(5, 35, 6), 30.0, sky=0.25, noise=True)
    region.image[:] += 0.3 * region.zodi  # a scale of ~1.3 to find
    region.flags[3:6, 30:38] |= 1 << FLAG_BITS["NONFUNC"]  # bad pixels in some boxes
    cfg = PhotometryConfig()
    bits = flag_bits(region)
    pix = region_pixels(region, cfg, bits)
    qualifies = ~pix.bad & np.isfinite(pix.zodi) & ((pix.flags & (1 << bits["SOURCE"])) == 0)
    x, y = rng.uniform(0, npix - 1, 12), rng.uniform(0, npix - 1, 12)  # some boxes cross the frame edge
    # 12 boxes of 21 x 21 cover more than the 40 x 40 region: the summed-area tables; 2 of them: gathered
    dense = source_zodi_scale(cfg, region, pix, local_pixels(region, x, y, 15, whole=False), bits)
    sparse = source_zodi_scale(cfg, region, pix, local_pixels(region, x[:2], y[:2], 15, whole=False), bits)
    at = local_pixels(region, x, y, 15, whole=False)
    ref = _reference_scale(pix, qualifies, at.ix, at.iy, cfg.zodi_halfsize)
    assert not dense.fell_back.any()
    np.testing.assert_allclose(dense.scale, ref, rtol=1e-9)  # quantised to 2^-24 per pixel product
    assert np.abs(dense.scale - 1.3).max() < 0.05
    np.testing.assert_array_equal(sparse.scale, dense.scale[:2])  # the same integers: the same bits


def test_grid_overlaps_equal_the_per_pixel_formula_bit_for_bit():
    rng = np.random.default_rng(4)
    n, h = 50, 6
    off = np.arange(-h, h + 1)
    cx, cy = rng.uniform(-0.5, 0.5, n), rng.uniform(-0.5, 0.5, n)
    r = rng.uniform(0.3, 5.5, n)
    rows, cols, lines = (a.ravel() for a in np.meshgrid(np.arange(n), off + h, off + h, indexing="ij"))
    got = grid_overlaps(cx[:, None] + off[None, :], cy[:, None] + off[None, :], r, rows, cols, lines)
    want = pixel_overlap(cx[rows] + off[cols], cy[rows] + off[lines], r[rows])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(np.bincount(rows, weights=got), np.pi * r * r, rtol=1e-12)
