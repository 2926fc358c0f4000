"""A calibration product that stays unavailable after the retries (HTTP 503 on every try) fails the image,
recorded with the reason, instead of measuring it without the product; a truly absent product (404) is a
legitimate fallback, said in the notes and in `ImageRegion.calibration`. A plain threaded HTTP server
serves the archive, answering 503 or 404 for one product."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fetch_checks import HALF, sources_on

from spxbatch.archive.io import RetryPolicy
from spxbatch.fetch.cache import FetchCache
from spxbatch.fetch.fetch import FetchOptions, fetch_image
from spxbatch.level2.naming import IBE_ROOT


class _Handler(SimpleHTTPRequestHandler):
    """Serves the archive directory; requests for `broken` get `status`."""

    broken = "solid_angle_pixel_map"
    status = 503

    def do_GET(self):
        if self.broken in self.path:
            self.send_response(self.status)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def server(sim_archive, request):
    handler = type("H", (_Handler,), {"status": request.param})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(sim_archive.root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _fetch(base: str, sim_archive, truth):
    relpath = sim_archive.files[0]
    ra, dec = sources_on(truth, relpath, 3)
    row = {"url": f"{base}/{relpath}", "relpath": f"{IBE_ROOT}/{relpath}", "detector": int(relpath.split("/")[4])}
    options = FetchOptions(retry=RetryPolicy(max_attempts=3, backoff_s=0.01, max_backoff_s=0.02))
    return fetch_image(row, ra, dec, strategy="whole", halfsize=HALF, cache=FetchCache(), options=options), ra


@pytest.mark.parametrize("server", [503], indirect=True)
def test_a_product_that_stays_unavailable_fails_the_image(server, sim_archive, truth):
    result, ra = _fetch(server, sim_archive, truth)
    assert result.regions == [] and result.missing.size == ra.size
    assert "solid_angle_pixel_map" in result.error and "503" in result.error
    assert result.retries >= 2  # it was tried again before giving up


@pytest.mark.parametrize("server", [404], indirect=True)
def test_an_absent_product_is_a_recorded_fallback(server, sim_archive, truth):
    result, ra = _fetch(server, sim_archive, truth)
    assert result.error is None and sum(idx.size for _, idx in result.regions) == ra.size
    assert any("solid_angle_pixel_map: absent" in n for n in result.notes)
    for region, _ in result.regions:
        assert region.solid_angle is None and region.cwave is not None
        assert region.calibration == ("spectral_wcs/CWAVE", "spectral_wcs/CBAND")
