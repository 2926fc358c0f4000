"""The cost model on hand-computed numbers: rounds of concurrent requests, bytes over bandwidth, per-region
CPU, the PSF read that only range reads pay, and the cutout service time."""

from __future__ import annotations

import pytest

from spxbatch.fetch.cost import Link, Reads, cutout_bytes, estimate_costs, seconds
from spxbatch.fetch.options import FetchOptions

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
