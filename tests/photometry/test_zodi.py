"""The zodi phase: fixed and none scales, the fit over qualifying pixels, and its fallbacks."""

from __future__ import annotations

import numpy as np

from spxbatch.level2.constants import FLAG_BITS
from spxbatch.photometry.config import PhotometryConfig
from spxbatch.photometry.masks import flag_bits, region_pixels
from spxbatch.photometry.positions import local_pixels
from spxbatch.photometry.zodi import source_zodi_scale
from spxbatch.sim.regions import make_region, subregion


def _scale(region, x, y, cfg):
    pix = region_pixels(region, cfg, flag_bits(region))
    at = local_pixels(region, np.asarray(x, float), np.asarray(y, float), 15, whole=False)
    return source_zodi_scale(cfg, region, pix, at, flag_bits(region))


def test_fixed_and_none():
    region, _, _ = make_region(32, np.array([16.0]), np.array([16.0]))
    fixed = _scale(region, [16.0, 8.0], [16.0, 8.0], PhotometryConfig(zodi="fixed"))
    none = _scale(region, [16.0], [16.0], PhotometryConfig(zodi="none"))
    assert list(fixed.scale) == [1.0, 1.0] and list(none.scale) == [0.0] and not fixed.fell_back.any()


def test_fit_finds_the_scale_without_the_star_and_falls_back_when_it_cannot():
    region, _, _ = make_region(48, np.array([24.3]), np.array([23.8]), np.array([50.0]), sky=0.25, zodi=0.25)
    region.image[:] = 1.4 * region.zodi + np.where(region.flags != 0, region.image - region.zodi, 0.0)
    fit = _scale(region, [24.3, 10.0], [23.8, 40.0], PhotometryConfig())
    np.testing.assert_allclose(fit.scale, 1.4, rtol=1e-6)  # the star's SOURCE pixels stay out of the fit
    assert not fit.fell_back.any()
    # out of (min, max]: 1, flagged
    capped = _scale(region, [24.3], [23.8], PhotometryConfig(zodi_max_scale=1.2))
    assert capped.scale[0] == 1.0 and capped.fell_back[0]
    # too few qualifying pixels in the box (bad, NaN ZODI): 1, flagged
    region.flags[14:35, 14:35] |= 1 << FLAG_BITS["NONFUNC"]
    few = _scale(region, [24.3], [23.8], PhotometryConfig())
    assert few.scale[0] == 1.0 and few.fell_back[0]


def test_the_frame_edge_is_not_missing_data_a_region_edge_is():
    region, _, _ = make_region(48, np.array([24.0]), np.array([24.0]), np.array([0.0]), sky=0.25, zodi=0.25)
    region.image[:] = 1.3 * region.zodi
    cfg = PhotometryConfig(zodi_min_fraction=0.6)
    strip = subregion(region, 0, 20, 48, 28)  # the box of a source at y = 21 reaches 9 rows below the strip
    cut = _scale(strip, [24.0], [21.0], cfg)
    assert cut.fell_back[0] and cut.scale[0] == 1.0  # 12 of its 21 rows in the region: too few pixels
    edge = _scale(region, [24.0], [1.0], cfg)  # 12 of 21 rows in the FRAME: counted against those only
    assert not edge.fell_back[0] and abs(edge.scale[0] - 1.3) < 1e-6
