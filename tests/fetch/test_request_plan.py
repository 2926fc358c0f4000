"""Request plans built without I/O from a header map, positions and options: the byte ranges they name are
the pixels astropy reads (the oracle), strips and boxes follow the transport, 'auto' follows the cost model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from fits_files import FileReader, write_mef

from spxbatch.archive.io import RetryPolicy
from spxbatch.fetch.geometry import SAFETY_PX
from spxbatch.fetch.options import FetchOptions
from spxbatch.fetch.request_plan import (
    CutoutPlan,
    RangePlan,
    Transport,
    WholePlan,
    cutout_plan_bytes,
    plan_cutouts,
    plan_image,
)
from spxbatch.level2.fitsmap import scan_fits
from spxbatch.level2.layout import PLANES

N = 256
HALF = 6
MULTI = Transport(local=False, multirange=True, ranges_per_request=64, cutout_service=True)
SINGLE = Transport(local=False, multirange=False, ranges_per_request=1, cutout_service=False)
LOCAL = Transport(local=True, multirange=False, ranges_per_request=1, cutout_service=False)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("plans") / "l2.fits"
    write_mef(path, n=N, seed=5)
    reader = FileReader(path)
    fmap = scan_fits(reader, len(reader.data), f"http://h/{path.name}")
    with fits.open(path) as hdul:
        wcs = WCS(hdul["IMAGE"].header, fix=False)
        planes = {name: hdul[name].data.copy() for name in PLANES}
    return fmap, reader, wcs, planes


def _sky(wcs, x, y):
    return wcs.all_pix2world(np.asarray(x, float), np.asarray(y, float), 0)


def _check_reads(plan: RangePlan, reader, planes):
    """Every region's ranges hold exactly its box of every plane; each source is in one region."""
    for read in plan.reads:
        x0, x1, y0, y1, _ = read.box
        per_plane = len(read.ranges) // len(PLANES)
        for k, name in enumerate(PLANES):
            raw = b"".join(reader(read.ranges[k * per_plane:(k + 1) * per_plane]))
            got = np.frombuffer(raw, dtype=planes[name].dtype.newbyteorder(">")).reshape(y1 - y0, x1 - x0)
            assert np.array_equal(got, planes[name][y0:y1, x0:x1]), name


def _whole_psf(fmap):
    """The PSF spans of a cold process: the PSF HDU whole."""
    psf = fmap["PSF"]
    return ((psf.data_offset, psf.data_offset + psf.data_size),)


def test_boxes_with_strips_as_fallback(image):
    fmap, reader, wcs, planes = image
    ra, dec = _sky(wcs, [20.3, 200.0, 120.7, 900.0], [30.0, 131.5, 220.2, 10.0])  # the last is off the frame
    plan, estimates = plan_image(fmap, ra, dec, HALF, "range", FetchOptions(), MULTI, psf_spans=_whole_psf(fmap),
                                 whole_size=None)
    assert isinstance(plan, RangePlan) and plan.strategy == "range" and plan.off_image.tolist() == [3]
    assert estimates["range-boxes"] < estimates["range"] and "boxes read as row segments" in plan.note
    assert all(r.box.x1 - r.box.x0 == 2 * (HALF + SAFETY_PX) + 2 for r in plan.reads)
    assert sorted(np.concatenate([r.box.members for r in plan.reads]).tolist()) == [0, 1, 2]
    _check_reads(plan, reader, planes)
    strips = plan.fallback
    assert strips is not None and strips.fallback is None and strips.note == ""
    assert all(r.box.x0 == 0 and r.box.x1 == N for r in strips.reads)
    assert [len(r.ranges) for r in strips.reads] == [4] * len(strips.reads)  # one range per plane
    _check_reads(strips, reader, planes)


def test_strips_follow_the_transport(image):
    fmap, reader, wcs, planes = image
    ra, dec = _sky(wcs, [40.0, 40.0, 40.0], [20.0, 60.0, 200.0])
    # one request per range: gaps cheaper than a request are read (latency x bandwidth >> these rows)
    single, est = plan_image(fmap, ra, dec, HALF, "range", FetchOptions(), SINGLE, _whole_psf(fmap), None)
    assert est == {} and single.fallback is None and len(single.reads) == 1
    _check_reads(single, reader, planes)
    local, est = plan_image(fmap, ra, dec, HALF, "local", FetchOptions(), LOCAL, _whole_psf(fmap), None)
    assert est == {} and local.strategy == "local" and len(local.reads) == 3  # only touching rows merge
    no_boxes, _ = plan_image(fmap, ra, dec, HALF, "range", FetchOptions(boxes=False), MULTI, _whole_psf(fmap), None)
    assert no_boxes.fallback is None and len(no_boxes.reads) == 3
    gap, _ = plan_image(fmap, ra, dec, HALF, "range", FetchOptions(merge_gap_rows=30), SINGLE, _whole_psf(fmap), None)
    assert [r.box.members.tolist() for r in gap.reads] == [[0, 1], [2]]


def test_auto_takes_the_cheapest(image):
    fmap, _, wcs, _ = image
    ra, dec = _sky(wcs, np.linspace(10, 240, 40), np.linspace(5, 250, 40))
    slow = FetchOptions(latency_s=5.0, merge_gap_rows=0, boxes=False, retry=RetryPolicy(concurrency=1))
    for options, transport in ((FetchOptions(), MULTI), (slow, SINGLE), (slow, MULTI)):
        plan, est = plan_image(fmap, ra, dec, HALF, "auto", options, transport, _whole_psf(fmap), whole_size=1234)
        best = min(est, key=est.__getitem__)
        assert plan.strategy == {"range-boxes": "range"}.get(best, best), est
        assert ("cutout" in est) == transport.cutout_service
    plan, _ = plan_image(fmap, ra, dec, HALF, "auto", slow, SINGLE, _whole_psf(fmap), whole_size=1234)
    assert plan == WholePlan(fmap.url, 1234)


def test_psf_in_the_cache_makes_range_reads_cheaper(image):
    fmap, _, wcs, _ = image
    ra, dec = _sky(wcs, [50.0], [60.0])
    _, cold = plan_image(fmap, ra, dec, HALF, "auto", FetchOptions(), MULTI, _whole_psf(fmap), None)
    _, warm = plan_image(fmap, ra, dec, HALF, "auto", FetchOptions(), MULTI, (), None)
    assert warm["range"] < cold["range"] and warm["whole"] == cold["whole"] and warm["cutout"] == cold["cutout"]


def test_cutout_plans(image):
    fmap, _, wcs, _ = image
    ra, dec = _sky(wcs, [20.0, 22.0, 150.0, 152.0, 240.0], [20.0, 21.0, 150.0, 40.0, 240.0])
    plan = plan_cutouts(fmap.url, ra, dec, HALF, FetchOptions(cutout_group_px=8), gzip=False)
    assert isinstance(plan, CutoutPlan) and plan.strategy == "cutout"
    assert sorted(np.concatenate([r.members for r in plan.requests]).tolist()) == [0, 1, 2, 3, 4]
    assert [0, 1] in [r.members.tolist() for r in plan.requests]  # close together: one cutout
    for r in plan.requests:
        assert r.url.startswith(fmap.url + "?center=") and r.url.endswith(f"&size={r.side_px}px&gzip=false")
    fixed = sum(h.data_offset - h.header_offset for h in fmap.hdus) + fmap["PSF"].data_size
    fixed += fmap["WCS-WAVE"].data_size
    assert cutout_plan_bytes(fmap, plan) == sum(fixed + 16 * r.side_px ** 2 for r in plan.requests)
    one = dataclasses.replace(plan, requests=plan.requests[:1])
    assert cutout_plan_bytes(fmap, one) < cutout_plan_bytes(fmap, plan)


def test_transport_requests():
    assert MULTI.requests_for(64) == 1 and MULTI.requests_for(65) == 2 and MULTI.requests_for(0) == 0
    assert SINGLE.requests_for(65) == 65
