"""The retrying fsspec/aiohttp layer against the simulated archive's real server and its injected faults."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from fits_files import write_mef

from spxbatch.archive import io as http
from spxbatch.archive.io import ArchiveIO, IOStats, ReadError, RetryPolicy, retry_after_seconds
from spxbatch.sim.server import serve_archive

RELPATH = "qr2/level2/2025W18_2B/l2b-v20-2025-253/3/level2_2025W18_2B_0001_1D3_spx_l2b-v20-2025-253.fits"
RANGES = [(0, 2880), (5000, 9000), (70_000, 70_100), (100_000, 160_000), (200_000, 200_001)]
FAST = RetryPolicy(max_attempts=8, backoff_s=0.01, max_backoff_s=0.05, stall_timeout_s=5.0)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("http_archive")
    (root / RELPATH).parent.mkdir(parents=True)
    write_mef(root / RELPATH)
    return root, (root / RELPATH).read_bytes()


def _expected(data: bytes) -> list[bytes]:
    return [data[s:e] for s, e in RANGES]


@pytest.mark.parametrize("multirange", [True, False])
def test_clean_reads_and_accounting(archive, multirange):
    root, data = archive
    with serve_archive(root) as srv:
        io, stats = ArchiveIO("http", FAST, multirange=multirange), IOStats()
        url = srv.file_url(RELPATH)
        assert io.read_ranges(url, RANGES, stats) == _expected(data)
        assert stats.requests == (1 if multirange else len(RANGES)) == len(srv.wait_idle())
        assert stats.retries == 0
        if multirange:  # one request, all ranges in its Range header, a multipart answer
            assert srv.access_log[0]["range"].count(",") == len(RANGES) - 1
            assert stats.bytes_read > sum(e - s for s, e in RANGES)
        else:
            assert stats.bytes_read == sum(e - s for s, e in RANGES)
        assert io.read_whole(url, stats, expected_size=len(data)) == data
        assert io.size(url, stats) == len(data)


def test_moderate_faults_are_retried(archive):
    root, data = archive
    faults = {"http500": 0.1, "http503": 0.1, "http429": 0.1, "drop": 0.05, "truncate": 0.05, "retry_after": 0}
    with serve_archive(root, faults=faults, seed=3) as srv:
        io, stats = ArchiveIO("http", FAST, seed=1), IOStats()
        url = srv.file_url(RELPATH)
        for _ in range(10):
            assert io.read_ranges(url, RANGES, stats) == _expected(data)
        assert io.read_whole(url, stats, expected_size=len(data)) == data
        statuses = [e["status"] for e in srv.access_log]
    assert stats.retries > 0
    assert stats.requests == len(statuses)  # every attempt is one request on the wire
    assert {500, 503, 429} <= set(statuses)
    reasons = " ".join(r for _, r in stats.failures)
    assert "Payload" in reasons or "received" in reasons  # a dropped or truncated body was caught


def test_persistent_failure_is_bounded(archive):
    root, _ = archive
    policy = RetryPolicy(max_attempts=3, backoff_s=0.01, max_backoff_s=0.02)
    with serve_archive(root, faults={"http500": 1.0}) as srv:
        io, stats = ArchiveIO("http", policy, multirange=False), IOStats()
        t0 = time.monotonic()
        with pytest.raises(ReadError) as err:
            io.read_ranges(srv.file_url(RELPATH), RANGES[:2], stats)
        assert time.monotonic() - t0 < 5
        # both ranges, 3 attempts each, then stop (the other range's last attempt may still be on its way
        # when the first range's ReadError is raised)
        assert len(srv.wait_for_log(2 * 3)) == 2 * 3
    assert err.value.status == 500 and err.value.attempts == 3
    assert RELPATH in err.value.url


def test_server_ignoring_multirange_falls_back(archive, monkeypatch):
    """More ranges than the server takes in one request: it answers 200 (whole file), which is not read;
    the host is remembered and the ranges are fetched one by one."""
    root, data = archive
    monkeypatch.setattr(http, "MAX_RANGES_PER_REQUEST", 1000)
    monkeypatch.setattr(http, "_NO_MULTIRANGE", set())
    ranges = [(i * 1000, i * 1000 + 10) for i in range(300)]  # the server's limit is 256
    with serve_archive(root) as srv:
        io, stats = ArchiveIO("http", FAST), IOStats()
        assert io.read_ranges(srv.file_url(RELPATH), ranges, stats) == [data[s:e] for s, e in ranges]
        assert stats.requests == 1 + len(ranges)
        assert stats.bytes_read < len(data) / 5  # the 200 body was not downloaded
        assert {srv.url} == http._NO_MULTIRANGE


def test_parse_byteranges_and_coalesced_parts():
    body = (b"\r\n--XYZ\r\nContent-Type: application/fits\r\nContent-Range: bytes 10-14/100\r\n\r\nabcde"
            b"\r\n--XYZ\r\nContent-Range: bytes 50-52/100\r\n\r\n--X\r\n--XYZ--\r\n")
    parts = http.parse_byteranges(body, 'multipart/byteranges; boundary="XYZ"')
    assert parts == [(10, b"abcde"), (50, b"--X")]
    assert http._slice_parts(parts, [(11, 13), (50, 53)]) == [b"bc", b"--X"]
    with pytest.raises(http.TruncatedBody):
        http._slice_parts(parts, [(14, 16)])
    with pytest.raises(http.TruncatedBody):
        http.parse_byteranges(body[:60], "multipart/byteranges; boundary=XYZ")


def test_read_head_tells_the_size_in_one_request(archive, tmp_path):
    """The first bytes and the size from one ranged GET (Content-Range), no HEAD; retried through faults; a
    missing file is a 404 ReadError (an absent calibration product); a local file gives its size only."""
    root, data = archive
    with serve_archive(root, faults={"http503": 0.3, "retry_after": 0}, seed=2) as srv:
        io, stats = ArchiveIO("http", FAST), IOStats()
        for n in (2880, len(data) + 100):
            assert io.read_head(srv.file_url(RELPATH), n, stats) == (data[:n], len(data))
        assert {e["method"] for e in srv.access_log} == {"GET"} and stats.requests == len(srv.access_log)
        with pytest.raises(ReadError) as err:
            io.read_head(srv.file_url(RELPATH.replace("0001_1", "0009_1")), 2880, stats)
        assert err.value.status == 404
    assert ArchiveIO("file").read_head(str(root / RELPATH), 2880, IOStats()) == (b"", len(data))


def test_not_found_is_not_retried(archive):
    root, _ = archive
    with serve_archive(root) as srv:
        io, stats = ArchiveIO("http", FAST), IOStats()
        with pytest.raises(ReadError) as err:
            io.read_ranges(srv.file_url(RELPATH.replace("0001_1", "0009_1")), [(0, 10)], stats)
    assert err.value.status == 404 and err.value.attempts == 1


def test_retry_after_is_honoured(archive):
    """Backoff alone would retry within ~0.03 s; two Retry-After: 1 waits make it take >= 2 s."""
    root, _ = archive
    policy = RetryPolicy(max_attempts=3, backoff_s=0.01, max_backoff_s=0.02)
    with serve_archive(root, faults={"http503": 1.0, "retry_after": 1}) as srv:
        io, stats = ArchiveIO("http", policy), IOStats()
        t0 = time.monotonic()
        with pytest.raises(ReadError) as err:
            io.read_ranges(srv.file_url(RELPATH), [(0, 100)], stats)
        elapsed = time.monotonic() - t0
        times = [e["time"] for e in srv.access_log]
    assert err.value.status == 503 and err.value.attempts == 3
    assert 2.0 <= elapsed < 6.0
    assert all(b - a >= 0.95 for a, b in itertools.pairwise(times))


def test_retry_after_beyond_the_cap_fails_at_once(archive):
    root, _ = archive
    policy = RetryPolicy(max_attempts=5, max_retry_after_s=2.0)
    with serve_archive(root, faults={"http429": 1.0, "retry_after": 30}) as srv:
        io, stats = ArchiveIO("http", policy), IOStats()
        t0 = time.monotonic()
        with pytest.raises(ReadError, match="Retry-After 30 s") as err:
            io.read_ranges(srv.file_url(RELPATH), [(0, 100)], stats)
        assert time.monotonic() - t0 < 2
    assert err.value.status == 429 and err.value.attempts == 1


def test_stalled_transfer_times_out(archive):
    root, _ = archive
    policy = RetryPolicy(max_attempts=2, backoff_s=0.01, stall_timeout_s=0.3)
    with serve_archive(root, latency=2.0) as srv:
        io, stats = ArchiveIO("http", policy), IOStats()
        t0 = time.monotonic()
        with pytest.raises(ReadError, match="timeout"):
            io.read_ranges(srv.file_url(RELPATH), [(0, 100)], stats)
        assert time.monotonic() - t0 < 1.8  # two attempts of ~0.3 s, not the server's 2 s


def test_retry_after_header_forms():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=90), usegmt=True), now=now) == 90.0
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=5), usegmt=True), now=now) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


@pytest.mark.parametrize("lane", [2, None])
def test_a_lane_serves_calls_in_the_order_they_came(archive, lane):
    """Two calls sharing a lane of two requests in flight: every request of the first is answered before any
    of the second (first come, first served), where each call's own two would interleave them."""
    root, data = archive
    ranges = [(k * 1000, k * 1000 + 500) for k in range(6)]
    with serve_archive(root, latency=0.02) as srv:
        url_a, url_b = srv.file_url(RELPATH), srv.file_url(RELPATH) + "?b"
        io = ArchiveIO("http", replace(FAST, concurrency=2), multirange=False)
        got: dict[str, list[bytes]] = {}

        def read(url: str) -> None:
            got[url] = io.read_ranges(url, ranges, IOStats(), lane=lane)

        first = threading.Thread(target=read, args=(url_a,))
        first.start()
        time.sleep(0.01)  # the first call's requests are queued in the lane before the second's
        read(url_b)
        first.join()
        log = srv.wait_idle()
    assert got[url_a] == got[url_b] == [data[s:e] for s, e in ranges]
    in_turn = [e["query"] for e in log] == [""] * len(ranges) + ["b"] * len(ranges)
    assert in_turn == (lane is not None)
