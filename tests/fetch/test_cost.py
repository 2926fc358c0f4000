"""The cost model on hand-computed numbers: rounds of concurrent requests, bytes over an image's share of the
bandwidth, per-region CPU, the PSF read that only range reads pay, and the cutout service time; and the plan
it picks on a link shared by several images."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from fits_files import FileReader, write_mef

from spxbatch.fetch.cost import Link, Reads, cutout_bytes, estimate_costs, seconds
from spxbatch.fetch.options import FetchOptions
from spxbatch.fetch.request_plan import Transport, plan_image
from spxbatch.level2.fitsmap import scan_fits

LINK = Link(latency_s=0.1, bandwidth_bps=1e6, concurrency=4, region_overhead_s=0.01, cutout_service_s=2.0)


def test_seconds_counts_rounds_bytes_and_regions():
    assert seconds(LINK, Reads(0, 4, 0)) == pytest.approx(0.1)  # four requests in one round
    assert seconds(LINK, Reads(0, 5, 0)) == pytest.approx(0.2)
    assert seconds(LINK, Reads(2_000_000, 1, 3)) == pytest.approx(0.1 + 2.0 + 0.03)
    assert seconds(LINK, Reads(0, 9, 0), service_s=2.0) == pytest.approx(3 * 2.1)
    assert seconds(Link(0.1, 1e6, 0, 0.0, 0.0), Reads(0, 2, 0)) == pytest.approx(0.2)  # concurrency >= 1


def test_estimates_per_strategy():
    psf = Reads(500_000, 1, 0)
    out = estimate_costs(LINK, strips=Reads(1_000_000, 8, 2), whole_bytes=7_000_000, psf=psf,
                         boxes=Reads(100_000, 1, 5), cutouts=Reads(3_000_000, 6, 6))
    assert list(out) == ["range", "whole", "range-boxes", "cutout"]
    assert out["range"] == pytest.approx(3 * 0.1 + 1.5 + 0.02)  # 9 requests with the PSF: 3 rounds
    assert out["whole"] == pytest.approx(0.1 + 7.0 + 0.01)
    assert out["range-boxes"] == pytest.approx(0.1 + 0.6 + 0.05)
    assert out["cutout"] == pytest.approx(2 * 2.1 + 3.0 + 0.06)
    cached = estimate_costs(LINK, strips=Reads(1_000_000, 8, 2), whole_bytes=7_000_000, psf=Reads(0, 0, 0))
    assert list(cached) == ["range", "whole"] and cached["range"] == pytest.approx(2 * 0.1 + 1.0 + 0.02)


def test_cutout_bytes_and_options_link():
    assert cutout_bytes(5_000_000, 30, 4, 4) == 5_000_000 + 16 * 900
    opts = FetchOptions(latency_s=0.3, bandwidth_bps=5e6, region_overhead_s=0.0, cutout_service_s=1.0)
    assert opts.link() == Link(0.3, 5e6, opts.retry.concurrency, 0.0, 1.0)
    assert FetchOptions(link_sharers=5).link().sharers == 5


def test_a_shared_link_gives_each_image_its_share_of_the_bandwidth():
    shared = Link(latency_s=0.1, bandwidth_bps=1e6, concurrency=4, region_overhead_s=0.01, cutout_service_s=2.0,
                  sharers=4)
    assert shared.share_bps == pytest.approx(250_000)
    # the bytes take 4x longer; the rounds of requests and the regions' CPU do not
    assert seconds(shared, Reads(2_000_000, 5, 3)) == pytest.approx(2 * 0.1 + 8.0 + 0.03)
    assert seconds(Link(0.1, 1e6, 4, 0.0, 0.0, sharers=0), Reads(1_000_000, 1, 0)) == pytest.approx(1.1)
    # a gap between strips is worth reading up to the bandwidth-delay product of the image's share
    assert FetchOptions(latency_s=0.05, bandwidth_bps=20e6, link_sharers=8).request_bytes() == pytest.approx(125_000)


def test_boxes_beat_strips_on_a_shared_link_where_strips_win_alone():
    """Issue #17's image of ~100 sources: strips of 50 MB in 43 requests against boxes of 9.4 MB in 263
    requests. Alone on the link the strips are cheaper; with 8 images sharing it, the boxes are."""
    strips, boxes, psf = Reads(50_000_000, 43, 27), Reads(9_400_000, 263, 85), Reads(0, 0, 0)
    alone = estimate_costs(FetchOptions().link(), strips=strips, whole_bytes=72_000_000, psf=psf, boxes=boxes)
    shared = estimate_costs(FetchOptions(link_sharers=8).link(), strips=strips, whole_bytes=72_000_000, psf=psf,
                            boxes=boxes)
    assert min(alone, key=alone.__getitem__) == "range"
    assert min(shared, key=shared.__getitem__) == "range-boxes"
    assert shared["range"] == pytest.approx(6 * 0.05 + 50e6 / (25e6 / 8) + 27 * 0.02)


def test_plan_image_reads_boxes_when_the_link_is_shared(tmp_path):
    path = tmp_path / "l2.fits"
    write_mef(path, n=256, seed=5)
    reader = FileReader(path)
    fmap = scan_fits(reader, len(reader.data), "http://h/l2.fits")
    wcs = WCS(fits.getheader(path, "IMAGE"), fix=False)
    ra, dec = wcs.all_pix2world([30.0, 100.0, 170.0, 230.0, 60.0, 200.0], [40.0, 44.0, 48.0, 52.0, 150.0, 154.0], 0)
    multi = Transport(local=False, multirange=True, ranges_per_request=64, cutout_service=False)

    def plan(sharers: int):
        options = FetchOptions(bandwidth_bps=4e6, link_sharers=sharers)
        return plan_image(fmap, ra, dec, 6, "range", options, multi, psf_spans=(), whole_size=None)[0]

    alone, shared = plan(1), plan(8)
    assert alone.note == "" and len(alone.reads) == 2  # two full-width strips, three sources each
    assert all(r.box.x1 - r.box.x0 == 256 for r in alone.reads)
    assert "6 boxes" in shared.note and shared.fallback is not None
    assert sorted(np.concatenate([r.box.members for r in shared.reads]).tolist()) == list(range(6))
