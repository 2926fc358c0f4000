"""Dependent round trips per image, counted in the simulated server's access log: after the first file of a
detector, its headers come in one request beside the pixels' one; each folder listing is read once per
process, whatever the number of detectors asking."""

from __future__ import annotations

from collections import Counter

import pytest
from fetch_checks import HALF, check_same_as_local, plan_row, sources_on
from truth_match import truth_with_positions

from spxbatch.fetch.cache import FetchCache
from spxbatch.fetch.fetch import FetchOptions, fetch_image
from spxbatch.level2.fitsmap import FitsMap
from spxbatch.sim.server import serve_archive


def _by_detector(files: list[str]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for rel in files:
        out.setdefault(int(rel.split("/")[4]), []).append(rel)
    return out


def _scan_requests(entries: list[dict], fmap: FitsMap) -> int:
    """How many of a file's logged requests read a header or a tile table (the header scan's bytes)."""
    scan = [(h.header_offset, h.data_offset) for h in fmap.hdus]
    scan += [(h.data_offset, h.data_offset + h.table_size) for h in fmap.hdus if h.compressed]
    count = 0
    for e in entries:
        spans = [tuple(int(v) for v in part.split("-")) for part in e["range"].removeprefix("bytes=").split(",")]
        count += any(s < end and start <= e_ for s, e_ in spans for start, end in scan)
    return count


@pytest.mark.parametrize("archive", ["sim_archive", "sim_archive_qr3"])
def test_headers_in_one_round_trip_after_the_first_of_a_detector(archive, request):
    """QR2 and R7 files: the first of a detector takes its header rounds; each later one reads its headers in
    one request, no HEAD (the plan gives the size), and the PSF comes with the pixels (QR2: exactly two
    requests), giving the same pixels as a local read, in regions that share one copy of the headers."""
    info = request.getfixturevalue(archive)
    truth = truth_with_positions(info)
    opts = FetchOptions(calibration=False)  # the level-2 files' requests only
    cache = FetchCache()
    boxes = 0
    with serve_archive(info.root) as srv:
        for files in list(_by_detector(info.files).values())[:2]:
            for k, rel in enumerate(files[:3]):
                ra, dec = sources_on(truth, rel, 4)
                srv.clear_log()
                result = fetch_image(plan_row(srv, rel), ra, dec, strategy="range", halfsize=HALF, cache=cache,
                                     options=opts)
                assert result.error is None
                entries = srv.requests_for(rel, method=None)
                assert all(e["method"] == "GET" for e in entries)
                scans = _scan_requests(entries, cache.get_fitsmap(srv.file_url(rel)))
                if k == 0:
                    assert scans >= 2  # head and tail, then the guessed windows
                else:
                    assert scans == 1, rel
                    if archive == "sim_archive":  # R7's boxes of compressed rows go out in several requests
                        assert len(entries) == 2, rel
                check_same_as_local(result, info.root / rel, ra.size)
                # the regions of one read carry one copy of the file's headers: photometry sets the frame up once
                assert len({id(r.image_header) for r, _ in result.regions}) == 1
                boxes = max(boxes, len(result.regions))
    assert boxes > 1  # some read gave several regions


def test_folder_listings_once_per_process(sim_archive, truth):
    """Calibration lookups for images of several detectors list each folder once (a product's delivery
    tags once for every detector) and ask no product's size (a HEAD) before reading its headers; a later
    image of a detector lists nothing."""
    cache = FetchCache()
    with serve_archive(sim_archive.root) as srv:
        detectors = list(_by_detector(sim_archive.files).values())[:3]
        for files in detectors:
            ra, dec = sources_on(truth, files[0], 3)
            result = fetch_image(plan_row(srv, files[0]), ra, dec, strategy="range", halfsize=HALF, cache=cache)
            assert result.error is None and result.regions[0][0].calibration
        assert "HEAD" not in {e["method"] for e in srv.access_log}  # sizes from the plan or Content-Range
        listings = Counter(e["path"] for e in srv.access_log if e["path"].endswith("/"))
        assert listings and max(listings.values()) == 1, listings
        products = {p for p in listings if p.count("/") == 6}  # .../ibe/data/spherex/qr2/<product>/
        assert len(listings) == len(products) * (1 + len(detectors))  # the tags once, a folder per detector
        srv.clear_log()
        later = detectors[0][1]
        ra, dec = sources_on(truth, later, 3)
        assert fetch_image(plan_row(srv, later), ra, dec, strategy="range", halfsize=HALF, cache=cache).error is None
        assert not [e for e in srv.access_log if e["path"].endswith("/")]
