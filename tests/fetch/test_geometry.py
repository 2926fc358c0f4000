"""Which pixels sources need, as plain geometry: neighbourhoods, strips, boxes, the inside test, cutout
groups, sides and URLs."""

from __future__ import annotations

import numpy as np
import pytest

from spxbatch.fetch.geometry import (
    SAFETY_PX,
    Box,
    box_parts,
    cutout_side_px,
    cutout_url,
    group_on_sky,
    inside,
    neighbourhoods,
    plan_boxes,
    plan_strips,
    span_px,
)
from spxbatch.level2.constants import PIXEL_SCALE_ARCSEC
from spxbatch.sky import mean_direction, separation_deg


def test_box_and_strip_planning():
    x = np.array([10.2, 14.0, 60.0, 200.0, -20.0, np.nan])
    y = np.array([10.0, 13.6, 10.0, 50.0, 5.0, 5.0])
    xlo, xhi, ylo, yhi, ok = neighbourhoods(x, y, 3, (100, 100))
    assert ok.tolist() == [True, True, True, False, False, False]  # off the frame by more than the box, NaN
    assert (xlo[0], xhi[0], ylo[0], yhi[0]) == (6, 15, 6, 14)  # floor/ceil +- (3 + 1 safety)
    boxes = plan_boxes(xlo, xhi, ylo, yhi, ok)
    assert [(b[:4], b[4].tolist()) for b in boxes] == [((6, 19, 6, 19), [0, 1]), ((56, 65, 6, 15), [2])]
    strips = plan_strips(ylo, yhi, ok, 0, 100)
    assert [(s[:4], s[4].tolist()) for s in strips] == [((0, 100, 6, 19), [0, 1, 2])]
    far = plan_strips(np.array([0, 50]), np.array([9, 59]), np.array([True, True]), 39, 100)
    assert len(far) == 2 and len(plan_strips(np.array([0, 50]), np.array([9, 59]), np.array([True, True]),
                                             40, 100)) == 1


def test_boxes_cover_every_neighbourhood_once():
    """Random sources: every on-image source is in exactly one box, which holds its whole neighbourhood, and
    no two boxes overlap or touch (they would have been merged)."""
    rng = np.random.default_rng(2)
    x, y = rng.uniform(-10, 210, 300), rng.uniform(-10, 110, 300)
    nb = neighbourhoods(x, y, 4, (100, 200))
    boxes = plan_boxes(*nb)
    members = np.concatenate([b.members for b in boxes])
    assert np.array_equal(np.sort(members), np.flatnonzero(nb.on_image))
    for b in boxes:
        held = inside(nb, b.x0, b.y0, (b.y1 - b.y0, b.x1 - b.x0))
        assert held[b.members].all()
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a.x1 < b.x0 or b.x1 < a.x0 or a.y1 < b.y0 or b.y1 < a.y0


def test_inside_and_box_parts():
    nb = neighbourhoods(np.array([20.0, 20.0, 5.0]), np.array([20.0, 3.0, 20.0]), 2, (50, 50))
    assert inside(nb, 10, 10, (20, 20)).tolist() == [True, False, False]
    assert inside(nb, 0, 0, (50, 50)).tolist() == [True, True, True]
    strips = [Box(0, 50, 0, 10, np.array([0])), Box(0, 50, 20, 22, np.array([1]))]
    assert box_parts(strips, 50) == 4 * 2  # one range per plane for a full-width box
    assert box_parts([Box(3, 9, 0, 7, np.array([0]))], 50) == 4 * 7  # one per row and plane otherwise


def _field(ra0: float, dec0: float, n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    return (ra0 + rng.uniform(-0.4, 0.4, n) / np.cos(np.radians(dec0))) % 360.0, dec0 + rng.uniform(-0.4, 0.4, n)


@pytest.mark.parametrize("dec0", [0.0, 45.0, -70.0])
def test_groups_are_tight_and_the_same_across_ra_zero(dec0):
    """Groups partition the sources, each member within the grid pitch of the others (plus the projection's
    stretch); a field straddling RA = 0 is grouped exactly like the same field at RA 180."""
    ra, dec = _field(180.0, dec0, 400)
    groups = group_on_sky(ra, dec, 32)
    assert np.array_equal(np.sort(np.concatenate(groups)), np.arange(ra.size))
    for g in groups:
        c = mean_direction(ra[g], dec[g])
        sep_px = separation_deg(ra[g], dec[g], *c) * 3600.0 / PIXEL_SCALE_ARCSEC
        assert sep_px.max() <= 32 * np.sqrt(2) * 1.01
    wrapped = group_on_sky((ra - 180.0) % 360.0, dec, 32)
    assert [g.tolist() for g in wrapped] == [g.tolist() for g in groups]


def test_cutout_sides_hold_every_member():
    """A single source needs exactly its neighbourhood plus the margins; a group its span on top, and the
    span is the largest separation from the mean direction, doubled."""
    ra, dec = np.array([150.0]), np.array([2.0])
    assert span_px(ra, dec) < 1e-9
    assert cutout_side_px(ra, dec, 6, 2) == 2 * (6 + SAFETY_PX + 2) + 1
    ra2 = np.array([150.0, 150.0 + 10 * PIXEL_SCALE_ARCSEC / 3600.0 / np.cos(np.radians(2.0))])
    dec2 = np.array([2.0, 2.0])
    assert span_px(ra2, dec2) == pytest.approx(10.0, rel=1e-6)
    assert cutout_side_px(ra2, dec2, 6, 2) == 10 + 2 * (6 + SAFETY_PX + 2) + 1


def test_cutout_url():
    url = cutout_url("http://h/f.fits", 1.5, -2.25, 31, gzip=False)
    assert url == "http://h/f.fits?center=1.50000000,-2.25000000&size=31px&gzip=false"
    assert cutout_url("http://h/f.fits", 1.5, -2.25, 31, gzip=True).endswith("&size=31px")
