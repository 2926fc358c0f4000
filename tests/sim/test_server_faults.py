"""Network realism of the simulated archive: each fault kind, seeded reproducible patterns, Retry-After, the
path filter, stalls, latency and the bandwidth cap."""

from __future__ import annotations

import http.client
import time

import pytest
import requests

from spxbatch.sim.faults import FAULT_KINDS, FaultConfig, FaultInjector
from spxbatch.sim.server import serve_archive


@pytest.fixture(scope="module")
def archive(sim_archive):
    rel = sim_archive.files[0]
    return sim_archive.root, rel, (sim_archive.root / rel).read_bytes()


def _raw_get(url: str, rng: tuple[int, int]) -> tuple[int, dict, bytes, str | None]:
    """GET with http.client so that short bodies are observed, not hidden by a client library."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    path = "/" + url.split("//")[1].split("/", 1)[1]
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers={"Range": f"bytes={rng[0]}-{rng[1]}"})
        resp = conn.getresponse()
        headers = dict(resp.getheaders())
        try:
            body, error = resp.read(), None
        except (http.client.IncompleteRead, ConnectionError) as exc:
            body, error = getattr(exc, "partial", b""), type(exc).__name__
        return resp.status, headers, body, error
    finally:
        conn.close()


@pytest.mark.parametrize("code", [500, 503, 429])
def test_status_faults(archive, code):
    root, rel, _ = archive
    with serve_archive(root, faults={f"http{code}": 1.0, "retry_after": 7}) as srv:
        r = requests.get(srv.file_url(rel), headers={"Range": "bytes=0-99"})
        assert r.status_code == code
        assert r.headers.get("Retry-After") == (None if code == 500 else "7")
        srv.wait_for_log(1)
        assert srv.access_log[-1]["status"] == code
        # TAP is spared unless asked for
        assert requests.get(f"{srv.tap_url}/async").status_code == 200
    with serve_archive(root, faults={f"http{code}": 1.0, "include_tap": True}) as srv:
        assert requests.get(f"{srv.tap_url}/async").status_code == code


@pytest.mark.parametrize("kind", ["drop", "truncate"])
def test_short_body_faults(archive, kind):
    """Headers promise the full body, half arrives, then the connection ends (reset or closed)."""
    root, rel, data = archive
    with serve_archive(root, faults={kind: 1.0}) as srv:
        status, headers, body, error = _raw_get(srv.file_url(rel), (1000, 100_999))
        assert status == 206 and int(headers["Content-Length"]) == 100_000
        assert error is not None and len(body) < 100_000
        assert body == data[1000:1000 + len(body)]
        srv.wait_for_log(1)
        assert srv.access_log[-1]["bytes"] == 50_000
        with pytest.raises(requests.exceptions.RequestException):
            requests.get(srv.file_url(rel), headers={"Range": "bytes=0-99999"})


def _pattern(root, rel, seed, n=60):
    out = []
    with serve_archive(root, faults={"http503": 0.2, "http429": 0.1, "truncate": 0.1}, seed=seed) as srv:
        for i in range(n):
            status, _, _, error = _raw_get(srv.file_url(rel), (i, i + 999))
            out.append("short" if error else status)
    return out


def test_seeded_pattern_is_reproducible(archive):
    root, rel, _ = archive
    a, b, c = _pattern(root, rel, 1), _pattern(root, rel, 1), _pattern(root, rel, 2)
    assert a == b and a != c
    faults = sum(x != 206 for x in a)
    assert 0.2 * len(a) <= faults <= 0.6 * len(a)
    assert {503, 429, "short", 206} <= set(a)


def test_retry_gets_a_fresh_draw():
    inj = FaultInjector(FaultConfig(http503=0.5), seed=0)
    draws = [inj.draw("GET /x") for _ in range(40)]
    assert None in draws and "http503" in draws
    assert FaultInjector(FaultConfig(http503=0.5), seed=0).draw("GET /x") == draws[0]


def test_fault_config_validation():
    with pytest.raises(ValueError):
        FaultConfig(http500=0.7, drop=0.5)
    with pytest.raises(ValueError):
        FaultConfig.coerce({"http404": 0.1})
    assert FaultConfig.coerce(None) == FaultConfig()
    with pytest.raises(ValueError, match="regular expression"):
        FaultConfig(http503=1.0, only="spectral_wcs(")
    with pytest.raises(ValueError, match="stall_s"):
        FaultConfig(stall=1.0, stall_s=-1)
    assert set(FAULT_KINDS) == {"http500", "http503", "http429", "drop", "truncate", "stall"}


def test_only_confines_faults_to_matching_paths(sim_archive):
    """Calibration products targeted, Level-2 files spared: the filter is a regex searched in the URL path."""
    calib = next(f for f in sim_archive.root.rglob("*.fits") if "/spectral_wcs/" in f.as_posix())
    calib_rel = calib.relative_to(sim_archive.root).as_posix()
    level2 = sim_archive.files[0]
    with serve_archive(sim_archive.root, faults={"http503": 1.0, "only": "/spectral_wcs/"}) as srv:
        assert requests.get(srv.file_url(calib_rel), headers={"Range": "bytes=0-99"}).status_code == 503
        assert requests.get(srv.file_url(level2), headers={"Range": "bytes=0-99"}).status_code == 206
        assert requests.get(srv.file_url(calib_rel.rsplit("/", 1)[0] + "/")).status_code == 503  # its listing
    assert FaultConfig(only="/level2/").applies_to("/ibe/data/spherex/qr2/level2/x.fits")
    assert not FaultConfig(only="/level2/").applies_to("/ibe/data/spherex/qr2/spectral_wcs/x.fits")


def test_stall_holds_the_response_past_a_client_timeout(archive, caplog):
    """Not a byte for `stall_s`: a client with a shorter read timeout gives up (logged as gone, no server
    traceback); a patient one gets it all."""
    root, rel, data = archive
    with serve_archive(root, faults={"stall": 1.0, "stall_s": 1.5}) as srv:
        t = time.perf_counter()
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.get(srv.file_url(rel), headers={"Range": "bytes=0-99"}, timeout=(5, 0.3))
        assert time.perf_counter() - t < 1.4
        (entry,) = srv.wait_for_log(1)
        assert entry["fault"] == "stall" and entry["client_closed"] and entry["bytes"] == 0
        assert "Error handling request" not in caplog.text
        t = time.perf_counter()
        r = requests.get(srv.file_url(rel), headers={"Range": "bytes=0-99"}, timeout=10)
        assert r.status_code == 206 and r.content == data[:100]
        assert time.perf_counter() - t >= 1.5


def test_latency_and_bandwidth(archive):
    root, rel, data = archive
    with serve_archive(root, latency=0.3) as srv:
        t = time.perf_counter()
        requests.get(srv.file_url(rel), headers={"Range": "bytes=0-9"})
        assert time.perf_counter() - t >= 0.3
    n = 1_000_000
    with serve_archive(root, bandwidth=4e6) as srv:
        t = time.perf_counter()
        r = requests.get(srv.file_url(rel), headers={"Range": f"bytes=0-{n - 1}"})
        elapsed = time.perf_counter() - t
        assert r.content == data[:n]
        assert elapsed >= 0.9 * n / 4e6
