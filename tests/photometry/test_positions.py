"""Where sources fall: parent pixels and their status on the frame, local pixels and clipping in a region."""

from __future__ import annotations

import numpy as np

from spxbatch.level2.wcs import celestial_wcs
from spxbatch.photometry.positions import frame_positions, local_pixels
from spxbatch.sim.regions import make_region, subregion


def _sky(region, x, y):
    return celestial_wcs(region.image_header).all_pix2world(np.asarray(x, float), np.asarray(y, float), 0)


def test_status_of_each_kind_of_position():
    region, _, _ = make_region(64, np.array([30.0]), np.array([30.0]))
    cut = subregion(region, 10, 10, 30, 30)
    x = np.array([20.0, 2.0, -3.0, 50.0, 20.0, -0.4])
    y = np.array([20.0, 20.0, 20.0, 20.0, 20.0, 20.0])
    ra, dec = _sky(region, x, y)
    ra[4] = np.nan
    pos = frame_positions(cut, ra, dec, celestial_wcs(cut.image_header), min_edge_distance=1.0)
    np.testing.assert_allclose(pos.x[:4], x[:4], atol=1e-8)
    assert list(pos.status) == ["ok", "outside_region", "off_frame", "outside_region", "bad_position",
                                "near_edge"]
    assert np.isnan(pos.x[4]) and pos.status.dtype == np.dtype("<U14")
    # no edge margin: a source half a pixel inside the frame's first pixel is on the frame
    whole = frame_positions(region, ra, dec, celestial_wcs(region.image_header), min_edge_distance=0.0)
    assert whole.status[5] == "ok" and whole.status[1] == "ok"


def test_local_pixels_clip_at_region_borders_not_frame_borders():
    region, _, _ = make_region(64, np.array([30.0]), np.array([30.0]))
    cut = subregion(region, 10, 0, 40, 30)  # touches the frame's bottom edge, not its left one
    x = np.array([25.0, 12.3, 30.0, 49.6])
    y = np.array([15.0, 15.0, 1.0, 15.0])
    at = local_pixels(cut, x, y, halfsize=4, whole=False)
    np.testing.assert_array_equal(at.ix, [15, 2, 20, 40])
    np.testing.assert_array_equal(at.iy, [15, 15, 1, 15])
    np.testing.assert_allclose(at.xl, x - 10)
    # 2: the region ends 2 px left of it (clipped); 1 px from the frame's bottom: not clipped (nothing there)
    np.testing.assert_array_equal(at.clipped, [False, True, False, True])
    assert not local_pixels(cut, x, y, halfsize=4, whole=True).clipped.any()
