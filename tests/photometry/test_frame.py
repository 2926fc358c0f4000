"""measure_regions: the regions of one read share one frame set-up and measure exactly as each alone; regions
of other images (or cutouts with their own headers) get their own frame, and their own image columns."""

from __future__ import annotations

import dataclasses

import numpy as np

from spxbatch.photometry import frame as frame_module
from spxbatch.photometry import measure as measure_module
from spxbatch.photometry.config import PhotometryConfig
from spxbatch.photometry.measure import measure_region, measure_regions
from spxbatch.sim.regions import make_region, subregion

X = np.array([30.0, 34.5, 90.2, 96.0])
Y = np.array([31.0, 40.2, 88.7, 30.5])


def _sky(region, x, y):
    """(ra, dec) of parent pixels (x, y) of a full-frame region."""
    from spxbatch.level2.wcs import celestial_wcs

    return celestial_wcs(region.image_header).all_pix2world(x, y, 0)


def _counting_frames(monkeypatch) -> list[int]:
    """Count the frames measure_regions sets up."""
    made: list[int] = []
    real = frame_module.image_frame

    def counted(*args, **kwargs):
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(measure_module, "image_frame", counted)
    return made


def _assert_rows_equal(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_boxes_of_one_read_share_a_frame_and_measure_as_alone(monkeypatch):
    full, _, _ = make_region(128, X, Y, np.full(4, 2000.0), noise=True, seed=3)
    ra, dec = _sky(full, X, Y)
    # two boxes as a range read gives them: the file's headers, one copy shared (level2.read.frame_headers)
    boxes = [dataclasses.replace(subregion(full, 10, 10, 50, 50, as_cutout=False), image_header=full.image_header),
             dataclasses.replace(subregion(full, 60, 10, 60, 100, as_cutout=False), image_header=full.image_header)]
    members = [np.array([0, 1]), np.array([2, 3])]
    cfg = PhotometryConfig()
    alone = [measure_region(b, ra[m], dec[m], cfg, source_index=m, neighbours=(ra, dec))
             for b, m in zip(boxes, members, strict=True)]
    made = _counting_frames(monkeypatch)
    together = measure_regions(list(zip(boxes, members, strict=True)), ra, dec, cfg, np.arange(4), (ra, dec))
    assert len(made) == 1
    _assert_rows_equal(together, {k: np.concatenate([a[k] for a in alone]) for k in alone[0]})
    assert together["measured"].all()


def test_regions_of_other_images_keep_their_own_frames(monkeypatch):
    one, _, _ = make_region(128, X[:2], Y[:2], np.full(2, 2000.0), seed=1)
    two, _, _ = make_region(128, X[2:], Y[2:], np.full(2, 2000.0), seed=2)
    two.image_header["OBSID"] = "other-image"
    two.image_header["MJD-BEG"] = float(one.image_header.get("MJD-BEG", 60000.0)) + 5.0
    two.image_header["MJD-END"] = two.image_header["MJD-BEG"] + 0.001
    ra1, dec1 = _sky(one, X[:2], Y[:2])
    ra2, dec2 = _sky(two, X[2:], Y[2:])
    ra, dec = np.concatenate([ra1, ra2]), np.concatenate([dec1, dec2])
    # a cutout of the first image brings its own (shifted) header: a frame of its own, the same numbers
    cutout = subregion(one, 20, 20, 40, 40, as_cutout=True)
    regions = [(one, np.array([0])), (two, np.array([2, 3])), (cutout, np.array([1]))]
    made = _counting_frames(monkeypatch)
    rows = measure_regions(regions, ra, dec)
    assert len(made) == 3
    assert rows["obs_id"].tolist()[1:3] == ["other-image"] * 2 and rows["obs_id"][0] != "other-image"
    assert rows["mjd"][1] > rows["mjd"][0] + 4.9
    monkeypatch.undo()
    for (region, m), at in zip(regions, (slice(0, 1), slice(1, 3), slice(3, 4)), strict=True):
        alone = measure_region(region, ra[m], dec[m], source_index=m)
        _assert_rows_equal({k: v[at] for k, v in rows.items()}, alone)
