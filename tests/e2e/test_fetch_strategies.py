"""Fetch strategies against the simulated archive served on loopback: the same pixels as a local astropy read."""

from __future__ import annotations

import pickle
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from fetch_checks import HALF, check_same_as_local, plan_row, sources_on

from spxbatch.archive import io as http
from spxbatch.archive.io import RetryPolicy
from spxbatch.fetch.cache import FetchCache
from spxbatch.fetch.fetch import FetchOptions, fetch_image
from spxbatch.level2.layout import PLANES
from spxbatch.level2.naming import IBE_ROOT
from spxbatch.sim.server import serve_archive
from spxbatch.sim.server.files import parse_ranges

#: Small merge gap so that the 128-px test images are read as several strips.
OPTS = FetchOptions(merge_gap_rows=2, retry=RetryPolicy(backoff_s=0.01, max_backoff_s=0.05))


@pytest.fixture(scope="module")
def server(sim_archive):
    with serve_archive(sim_archive.root) as srv:
        yield srv


@pytest.mark.parametrize("strategy", ["range", "range-strips", "cutout", "whole"])
def test_strategy_equals_local_read(server, sim_archive, truth, strategy):
    relpath = sim_archive.files[0]
    ra, dec = sources_on(truth, relpath, 4, spread=True)
    image = plan_row(server, relpath)
    opts = FetchOptions(merge_gap_rows=2, boxes=strategy != "range-strips")
    result = fetch_image(image, ra, dec, strategy=strategy.split("-")[0], halfsize=HALF, cache=FetchCache(),
                         options=opts)
    assert result.strategy == strategy.split("-")[0]
    check_same_as_local(result, sim_archive.root / relpath, ra.size, sim_archive.root, image["detector"])
    assert result.missing.size == 0  # the truth puts every source on the image
    assert result.bytes_read > 0 and result.requests > 0
    if strategy == "range":  # sparse sources: only their boxes, read as row segments
        assert any("boxes" in n for n in result.notes)
        assert all(r.shape[1] < 128 for r, _ in result.regions)
    if strategy == "range-strips":
        assert len(result.regions) > 1 and all(r.x0 == 0 and r.shape[1] == 128 for r, _ in result.regions)
    if strategy == "cutout":
        assert all(r.shape[0] < 128 for r, _ in result.regions)


def test_boxes_fall_back_to_strips(server, sim_archive, truth, monkeypatch):
    """A server refusing the multi-range request (here: more ranges than it takes) gets strips instead."""
    monkeypatch.setattr(http, "MAX_RANGES_PER_REQUEST", 10_000)
    monkeypatch.setattr(http, "_NO_MULTIRANGE", set())
    relpath = sim_archive.files[1]
    ra, dec = sources_on(truth, relpath, 8, spread=True)  # 8 boxes x 15 rows x 4 planes > the server's 256
    # no per-region CPU charge, so that the cost model tries boxes (which the server then refuses)
    result = fetch_image(plan_row(server, relpath), ra, dec, strategy="range", halfsize=HALF,
                         cache=FetchCache(), options=FetchOptions(region_overhead_s=0.0))
    check_same_as_local(result, sim_archive.root / relpath, ra.size)
    assert any("refuses multi-range" in n for n in result.notes)
    assert all(r.x0 == 0 for r, _ in result.regions)


def test_local_mirror_needs_no_server(sim_archive, truth):
    relpath = sim_archive.files[1]
    ra, dec = sources_on(truth, relpath, 30)
    image = {"url": "http://127.0.0.1:9/nowhere", "relpath": f"{IBE_ROOT}/{relpath}", "detector":
             int(relpath.split("/")[4])}
    opts = FetchOptions(file_root=str(sim_archive.root), merge_gap_rows=2)
    result = fetch_image(image, ra, dec, halfsize=HALF, cache=FetchCache(), options=opts)
    assert result.strategy == "local"
    check_same_as_local(result, sim_archive.root / relpath, ra.size, sim_archive.root, image["detector"])


def test_sources_off_the_image_are_missing(server, sim_archive, truth):
    relpath = sim_archive.files[0]
    ra, dec = sources_on(truth, relpath, 3)
    ra = np.append(ra, ra[0] + 5.0)
    dec = np.append(dec, dec[0])
    for strategy in ("range", "cutout", "whole"):
        result = fetch_image(plan_row(server, relpath), ra, dec, strategy=strategy, halfsize=HALF,
                             cache=FetchCache(), options=OPTS)
        assert result.error is None
        assert result.missing.tolist() == [3], strategy


def test_psf_read_once_per_detector(server, sim_archive, truth):
    """Many images of one detector: the PSF cube crosses the wire once (average_psf whole, or the file's HDU,
    plane by plane as its images' sources need them: no plane twice)."""
    by_det = pd.Series(sim_archive.files).groupby([int(f.split("/")[4]) for f in sim_archive.files])
    files = list(max(by_det, key=lambda kv: len(kv[1]))[1])
    assert len(files) >= 3
    for source in ("calibration", "file"):
        server.clear_log()
        cache = FetchCache()
        opts = FetchOptions(psf_source=source)
        for relpath in files:
            ra, dec = sources_on(truth, relpath, 5)
            result = fetch_image(plan_row(server, relpath), ra, dec, strategy="range", halfsize=HALF,
                                 cache=cache, options=opts)
            assert result.error is None and all(r.psf is not None for r, _ in result.regions)
        plane = 4 * int(np.prod(fits.getdata(sim_archive.root / files[0], "PSF").shape[1:]))
        big = [e for e in server.access_log if e["method"] == "GET" and e["bytes"] >= 121 * plane]
        n_versions = len({f.split("/")[3] for f in files})
        if source == "calibration":
            assert len(big) == 1 and "average_psf" in big[0]["path"]
            assert cache.psf_reads == len(big) and cache.psf_planes_read == 0
        else:  # plane by plane, no plane twice per processing version (erratum versions have other headers)
            assert big == [] and 0 < cache.psf_planes_read <= 121 * n_versions
            assert len(cache.psf_planes) <= n_versions < len(files)
            assert cache.psf_planes_read == sum(len(p.held) for p in cache.psf_planes.values())


def test_header_scan_is_cached(server, sim_archive, truth):
    relpath = sim_archive.files[2]
    ra, dec = sources_on(truth, relpath, 4)
    cache = FetchCache()
    opts = FetchOptions(boxes=False, calibration=False)  # the level-2 file's requests only
    first = fetch_image(plan_row(server, relpath), ra, dec, strategy="range", halfsize=HALF, cache=cache,
                        options=opts)
    again = fetch_image(plan_row(server, relpath), ra, dec, strategy="range", halfsize=HALF, cache=cache,
                        options=opts)
    assert again.requests == 1 < first.requests  # one multi-range request for every strip and plane
    assert again.bytes_read < first.bytes_read


def test_psf_comes_with_the_pixels(server, sim_archive, truth):
    """A range read takes the PSF planes its sources use along in its pixels' request: no round trip of its
    own."""
    relpath = sim_archive.files[2]
    ra, dec = sources_on(truth, relpath, 4)
    opts = FetchOptions(boxes=False, calibration=False)  # the level-2 file's requests only
    scanned = FetchCache()
    fetch_image(plan_row(server, relpath), ra, dec, strategy="range", halfsize=HALF, cache=scanned, options=opts)
    url = plan_row(server, relpath)["url"]
    cache = FetchCache()  # the header map known, the PSF not
    cache.put_fitsmap(scanned.get_fitsmap(url))
    server.clear_log()
    result = fetch_image(plan_row(server, relpath), ra, dec, strategy="range", halfsize=HALF, cache=cache,
                         options=opts)
    psf = cache.get_fitsmap(url)["PSF"]
    assert result.error is None and result.requests == 1 and cache.psf_reads == 1
    (entry,) = server.access_log
    (planes,) = cache.psf_planes.values()
    spans = parse_ranges(entry["range"], cache.get_fitsmap(url).size)
    at = [psf.data_offset + k * planes.plane_bytes for k in planes.held]
    assert at and all(any(a <= s and s + planes.plane_bytes - 1 <= b for a, b in spans) for s in at)
    check_same_as_local(result, sim_archive.root / relpath, ra.size)


def test_auto_picks_by_cost(server, sim_archive, truth):
    relpath = sim_archive.files[0]
    image = plan_row(server, relpath)
    ra, dec = sources_on(truth, relpath)
    few = fetch_image(image, ra[:2], dec[:2], halfsize=HALF, cache=FetchCache(), options=FetchOptions())
    assert few.strategy == "range" and few.estimates["range"] < few.estimates["whole"]
    # every row needed and a very slow link, one request at a time: one GET of the whole file wins
    slow = FetchOptions(latency_s=5.0, merge_gap_rows=0, retry=RetryPolicy(concurrency=1))
    dense = fetch_image(image, ra, dec, halfsize=HALF, cache=FetchCache(), options=slow)
    assert dense.strategy == "whole", dense.estimates
    check_same_as_local(dense, sim_archive.root / relpath, ra.size)


def test_faults_are_retried(sim_archive, truth):
    relpath = sim_archive.files[0]
    ra, dec = sources_on(truth, relpath, 20)
    faults = {"http500": 0.1, "http503": 0.1, "http429": 0.05, "drop": 0.05, "truncate": 0.05, "retry_after": 0}
    # 35 % of requests fail: 8 attempts leave a request failing for good at odds of 0.35^8 (2e-4), not 5e-3
    opts = replace(OPTS, retry=replace(OPTS.retry, max_attempts=8))
    with serve_archive(sim_archive.root, faults=faults, seed=5) as srv:
        for strategy in ("range", "cutout", "whole"):
            result = fetch_image(plan_row(srv, relpath), ra, dec, strategy=strategy, halfsize=HALF,
                                 cache=FetchCache(), options=opts)
            check_same_as_local(result, sim_archive.root / relpath, ra.size)
        assert {e["status"] for e in srv.access_log} & {500, 503, 429}


def test_persistent_failure_is_recorded_not_raised(sim_archive, truth):
    relpath = sim_archive.files[0]
    ra, dec = sources_on(truth, relpath, 5)
    opts = FetchOptions(retry=RetryPolicy(max_attempts=3, backoff_s=0.01, max_backoff_s=0.02))
    with serve_archive(sim_archive.root, faults={"http503": 1.0, "retry_after": 0}) as srv:
        for strategy in ("range", "cutout", "whole"):
            t0 = time.monotonic()
            result = fetch_image(plan_row(srv, relpath), ra, dec, strategy=strategy, halfsize=HALF,
                                 cache=FetchCache(), options=opts)
            assert time.monotonic() - t0 < 10
            assert result.regions == [] and result.missing.tolist() == list(range(ra.size))
            assert relpath in result.error and "503" in result.error and "3 attempt" in result.error
            assert result.requests >= 3


def test_calibration_absent_is_noted(tmp_path):
    """An archive without calibration products: regions come without them, the reason is in the notes."""
    from fits_files import write_mef

    relpath = "qr2/level2/2025W18_2B/l2b-v20-2025-253/3/level2_2025W18_2B_0001_1D3_spx_l2b-v20-2025-253.fits"
    (tmp_path / relpath).parent.mkdir(parents=True)
    write_mef(tmp_path / relpath, n=128)
    header = fits.getheader(tmp_path / relpath, "IMAGE")
    from astropy.wcs import WCS

    ra, dec = WCS(header).all_pix2world([20.0, 100.0], [30.0, 90.0], 0)
    with serve_archive(tmp_path) as srv:
        result = fetch_image(plan_row(srv, relpath), ra, dec, strategy="range", halfsize=HALF,
                             cache=FetchCache(), options=replace(OPTS, psf_source="calibration"))
    check_same_as_local(result, tmp_path / relpath, 2)
    assert all(r.solid_angle is None and r.cwave is None for r, _ in result.regions)
    assert any("solid_angle_pixel_map: absent" in n for n in result.notes)
    assert any("average_psf: absent" in n for n in result.notes)


def test_gzip_cutouts(server, sim_archive, truth):
    relpath = sim_archive.files[0]
    ra, dec = sources_on(truth, relpath, 3, spread=True)
    plain = fetch_image(plan_row(server, relpath), ra, dec, strategy="cutout", halfsize=HALF,
                        cache=FetchCache(), options=OPTS)
    server.clear_log()
    zipped = fetch_image(plan_row(server, relpath), ra, dec, strategy="cutout", halfsize=HALF,
                         cache=FetchCache(), options=FetchOptions(cutout_gzip=True))
    assert not any("gzip=false" in e["query"] for e in server.access_log if "center" in e["query"])
    check_same_as_local(zipped, sim_archive.root / relpath, ra.size)
    assert zipped.bytes_read < plain.bytes_read  # the wire bytes are the compressed ones


def test_offset_tables_persist_on_disk(server, sim_archive, truth, tmp_path):
    relpath = sim_archive.files[3]
    ra, dec = sources_on(truth, relpath, 2)
    first = fetch_image(plan_row(server, relpath), ra, dec, strategy="range", halfsize=HALF,
                        cache=FetchCache(disk_dir=str(tmp_path)), options=OPTS)
    fresh = FetchCache(disk_dir=str(tmp_path))  # another process, same run directory
    again = fetch_image(plan_row(server, relpath), ra, dec, strategy="range", halfsize=HALF, cache=fresh,
                        options=FetchOptions(merge_gap_rows=2, calibration=False, psf_source="file",
                                             multirange=False))
    assert len(list((tmp_path / "fitsmaps").glob("*.json.gz"))) >= 2  # the image and its calibration files
    assert again.requests == len(PLANES) * len(again.regions) + 1  # strips + the PSF, no header scan
    assert first.error is None and again.error is None


def test_options_and_results_pickle(server, sim_archive, truth):
    relpath = sim_archive.files[0]
    ra, dec = sources_on(truth, relpath, 2)
    result = fetch_image(plan_row(server, relpath), ra, dec, strategy="range", halfsize=HALF,
                         cache=FetchCache(), options=OPTS)
    back = pickle.loads(pickle.dumps((OPTS, result)))
    assert back[0] == OPTS
    assert np.array_equal(back[1].regions[0][0].image, result.regions[0][0].image, equal_nan=True)


def test_plan_row_without_size(server, sim_archive, truth):
    """A pandas row whose size is missing (pd.NA): the size comes with the file's first bytes (Content-Range
    of one GET, no HEAD before it), then all goes as usual."""
    relpath = sim_archive.files[0]
    ra, dec = sources_on(truth, relpath, 3, spread=True)
    row = pd.Series({**plan_row(server, relpath), "size_bytes": pd.NA, "nx": pd.NA, "ny": pd.NA})
    server.clear_log()
    result = fetch_image(row, ra, dec, strategy="range", halfsize=HALF, cache=FetchCache(), options=OPTS)
    check_same_as_local(result, sim_archive.root / relpath, ra.size)
    entries = server.requests_for(relpath, method=None)
    assert [e["method"] for e in entries] == ["GET"] * len(entries) and entries[0]["range"].startswith("bytes=0-")
