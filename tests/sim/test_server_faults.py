"""Network realism of the simulated archive: each fault kind, seeded reproducible patterns, Retry-After, the
path and HDU filters, stalls (before and in the middle of a body), TAP jobs that error, latency and the
bandwidth cap."""

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
    assert set(FAULT_KINDS) == {"http500", "http503", "http429", "drop", "truncate", "stall", "stall_body"}
    with pytest.raises(ValueError, match="extname"):
        FaultConfig(http503=1.0, extname="PSF(")
    with pytest.raises(ValueError, match="job_error"):
        FaultConfig(job_error=1.5)


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


def test_extname_confines_faults_to_the_bytes_of_one_hdu(sim_archive):
    """A Range touching the PSF cube's bytes fails, one elsewhere in the same file does not; a whole-file GET
    holds the PSF and fails too."""
    from astropy.io import fits

    rel = sim_archive.files[0]
    with fits.open(sim_archive.root / rel) as hdul:
        info = {h.name: h.fileinfo() for h in hdul}
    psf, image = info["PSF"], info["IMAGE"]
    with serve_archive(sim_archive.root, faults={"http503": 1.0, "retry_after": 0, "extname": "PSF"}) as srv:
        def status(rng: str | None) -> int:
            return requests.get(srv.file_url(rel), headers={"Range": rng} if rng else {}).status_code

        assert status(f"bytes={psf['datLoc'] + 10}-{psf['datLoc'] + 20}") == 503
        assert status(f"bytes={psf['hdrLoc']}-{psf['hdrLoc'] + 79}") == 503  # its header is its bytes too
        assert status(f"bytes={image['datLoc']}-{image['datLoc'] + 999}") == 206
        assert status(f"bytes=0-99,{psf['datLoc']}-{psf['datLoc'] + 9}") == 503  # one of several ranges
        assert status(None) == 503
        assert requests.get(srv.file_url(rel.rsplit("/", 1)[0] + "/")).status_code == 200  # listings spared
    cfg = FaultConfig(extname="E?PSF")
    spans = [("IMAGE", 2880, 10_000), ("EPSF", 10_000, 20_000)]
    assert cfg.touches_hdu(spans, [(12_000, 12_010)]) and not cfg.touches_hdu(spans, [(0, 9_999)])
    assert not FaultConfig(extname="PSF").touches_hdu(spans, None)  # EXTNAME matched whole, not searched


def test_stall_in_the_middle_of_a_body(archive, caplog):
    """Headers and half the body, then nothing for `stall_s`: a client with a shorter read timeout gives up
    mid-body (the bytes it got are the file's), a patient one gets it all."""
    root, rel, data = archive
    n = 600_000
    with serve_archive(root, faults={"stall_body": 1.0, "stall_s": 1.5}) as srv:
        t = time.perf_counter()
        with pytest.raises(requests.exceptions.ConnectionError, match="timed out"):
            r = requests.get(srv.file_url(rel), headers={"Range": f"bytes=0-{n - 1}"}, timeout=(5, 0.5),
                             stream=True)
            assert r.status_code == 206 and int(r.headers["Content-Length"]) == n
            got = bytearray()
            try:
                for chunk in r.iter_content(65536):
                    got += chunk
            finally:
                assert n // 4 <= len(got) < n and bytes(got) == data[: len(got)]
        assert time.perf_counter() - t < 1.4
        (entry,) = srv.wait_for_log(1)
        assert entry["fault"] == "stall_body" and entry["client_closed"] and n // 4 <= entry["bytes"] < n
        assert "Error handling request" not in caplog.text
        t = time.perf_counter()
        r = requests.get(srv.file_url(rel), headers={"Range": f"bytes=0-{n - 1}"}, timeout=10)
        assert r.status_code == 206 and r.content == data[:n] and time.perf_counter() - t >= 1.5


def test_tap_job_error_and_tap_status_faults(sim_archive):
    """`job_error`: an async job ends in ERROR with a message (its retry draws again); a status fault on TAP
    answers an error VOTable, as a TAP service does."""
    import pyvo

    query = "SELECT TOP 1 a.uri FROM artifact AS a"
    with serve_archive(sim_archive.root, faults={"job_error": 1.0}) as srv:
        job = pyvo.dal.TAPService(srv.tap_url).submit_job(query).run()
        job.wait(phases=["COMPLETED", "ERROR", "ABORTED"], timeout=30)
        assert job.phase == "ERROR" and "simulated fault" in job._job.errorsummary.message.content
        assert len(pyvo.dal.TAPService(srv.tap_url).run_sync(query)) == 1  # sync queries are no jobs
    with serve_archive(sim_archive.root, faults={"job_error": 0.5}, seed=1) as srv:
        phases = []
        for _ in range(12):
            job = pyvo.dal.TAPService(srv.tap_url).submit_job(query).run()
            phases.append(job.wait(phases=["COMPLETED", "ERROR"], timeout=30).phase)
        assert {"COMPLETED", "ERROR"} == set(phases)
    with serve_archive(sim_archive.root, faults={"http503": 1.0, "include_tap": True, "only": "^/TAP"}) as srv:
        r = requests.post(f"{srv.tap_url}/sync", data={"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": query})
        assert r.status_code == 503 and "simulated fault 503" in r.text and "QUERY_STATUS" in r.text
