"""Masks and variance repair: which pixels are bad, how VARIANCE is repaired, which flags are avoided."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from spxbatch.level2.constants import FLAG_BITS
from spxbatch.photometry.config import PhotometryConfig
from spxbatch.photometry.masks import flag_bits, known_mask, region_pixels, repair_variance
from spxbatch.sim.regions import make_region


def _region():
    region, _, _ = make_region(16, np.array([8.0]), np.array([8.0]), source_radius=0)
    return region


def test_bad_pixels_from_flags_by_name_and_from_non_finite_values():
    region = _region()
    region.flags[2, 3] |= 1 << FLAG_BITS["HOT"]
    region.flags[4, 4] |= 1 << FLAG_BITS["SOURCE"]  # not a bad flag by default
    region.image[5, 6] = np.nan
    region.zodi[7, 8] = np.inf
    pix = region_pixels(region, PhotometryConfig(), flag_bits(region))
    assert set(zip(*np.nonzero(pix.bad), strict=True)) == {(2, 3), (5, 6), (7, 8)}
    assert pix.avoid is None and not pix.repaired.any()
    assert pix.variance.dtype == np.float64 and pix.image.flags["C_CONTIGUOUS"]
    # a ZODI value only matters when zodi is subtracted; bad flags are chosen by name
    pix = region_pixels(region, PhotometryConfig(zodi="none", bad_flags=("SOURCE",)), flag_bits(region))
    assert set(zip(*np.nonzero(pix.bad), strict=True)) == {(4, 4), (5, 6)}
    pix = region_pixels(region, PhotometryConfig(background_avoid_flags=("SOURCE",)), flag_bits(region))
    assert set(zip(*np.nonzero(pix.avoid), strict=True)) == {(4, 4)}


def test_variance_repair_takes_the_median_of_the_box_and_masks_what_it_cannot_repair():
    var = np.arange(1.0, 50.0).reshape(7, 7)
    var[3, 3] = np.nan
    var[0, 0] = -1.0
    bad = np.zeros((7, 7), dtype=bool)
    bad[6, 6] = True
    var[6, 6] = 0.0  # a bad pixel: masked anyway, left alone
    fixed, repaired = repair_variance(var, bad, 1)
    assert fixed[3, 3] == np.median(np.delete(var[2:5, 2:5].ravel(), 4))
    assert fixed[0, 0] == np.median([2.0, 8.0, 9.0])  # the box clipped at the corner
    assert fixed[6, 6] == 0.0
    assert set(zip(*np.nonzero(repaired), strict=True)) == {(3, 3), (0, 0)}
    # nothing finite and positive nearby: NaN, so the pixel becomes bad
    region = _region()
    region.variance[:] = np.nan
    pix = region_pixels(region, PhotometryConfig(), flag_bits(region))
    assert pix.bad.all() and pix.repaired.all()


def test_flag_names_come_from_the_file_else_the_defaults():
    region = _region()
    assert flag_bits(region) == FLAG_BITS
    h = fits.Header()
    h["HIERARCH MP_HOT"] = 3
    region.flags_header = h
    assert flag_bits(region) == {"HOT": 3}
    assert known_mask(("HOT", "NONFUNC"), {"HOT": 3}) == 1 << 3  # a name the file lacks cannot be set
    region.flags_header = fits.Header()
    assert flag_bits(region) == FLAG_BITS
