"""IBE-style cutouts: pixels equal the parent's slice, sky and wavelength WCS agree with the parent, edges
clip, no overlap is a 400, gzip by default."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
import requests
from astropy.io import fits
from astropy.wcs import WCS

from spxbatch.level2.read import read_wave_table
from spxbatch.level2.region import parent_origin
from spxbatch.sim.cutout import CutoutError, parse_cutout_query
from spxbatch.sim.server import serve_archive


@pytest.fixture(scope="module")
def served(sim_archive):
    with serve_archive(sim_archive.root) as srv:
        rel = sim_archive.files[0]
        with fits.open(sim_archive.root / rel) as hdul:
            parent = {h.name: (h.header.copy(), None if h.data is None else np.array(h.data)) for h in hdul}
        yield srv, rel, parent


def _get(srv, rel, query) -> fits.HDUList:
    r = requests.get(srv.file_url(rel) + "?" + query)
    assert r.status_code == 200, r.text
    body = r.content
    if "gzip=false" in query:
        assert r.headers["Content-Type"] == "application/fits"
    else:
        assert r.headers["Content-Type"] == "application/gzip"
        body = gzip.decompress(body)
    return fits.open(io.BytesIO(body))


def _wave_wcs(header, hdul):
    w = WCS(header, fobj=hdul, key="W")
    w.sip = None
    return w


def test_cutout_pixels_and_wcs_match_parent(served):
    srv, rel, parent = served
    ihdr = parent["IMAGE"][0]
    ra, dec = WCS(ihdr).all_pix2world(40.3, 70.8, 0)
    cut = _get(srv, rel, f"center={float(ra)},{float(dec)}&size=25px")
    assert [h.name for h in cut] == ["PRIMARY", "IMAGE", "FLAGS", "VARIANCE", "ZODI", "PSF", "WCS-WAVE"]
    x0, y0 = parent_origin(cut["IMAGE"].header)
    assert (x0, y0) == (28, 58) and cut["IMAGE"].data.shape == (25, 25)
    for name in ("IMAGE", "FLAGS", "VARIANCE", "ZODI"):
        np.testing.assert_array_equal(cut[name].data, parent[name][1][y0:y0 + 25, x0:x0 + 25])
        assert cut[name].data.dtype == parent[name][1].dtype
    np.testing.assert_array_equal(cut["PSF"].data, parent["PSF"][1])
    assert cut["PSF"].header == parent["PSF"][0]
    a, b = read_wave_table(cut["WCS-WAVE"]), read_wave_table(fits.BinTableHDU(parent["WCS-WAVE"][1],
                                                                                parent["WCS-WAVE"][0]))
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.x, b.x)
    # sky and wavelength at the same physical pixels
    xc, yc = np.meshgrid(np.arange(0, 25, 6.0), np.arange(0, 25, 6.0))
    sky_cut = WCS(cut["IMAGE"].header).all_pix2world(xc, yc, 0)
    sky_par = WCS(ihdr).all_pix2world(xc + x0, yc + y0, 0)
    np.testing.assert_allclose(sky_cut, sky_par, rtol=0, atol=1e-10)
    with fits.open(srv.root / rel) as hdul:
        lam_par = _wave_wcs(ihdr, hdul).all_pix2world(xc + x0, yc + y0, 0)
    lam_cut = _wave_wcs(cut["IMAGE"].header, cut).all_pix2world(xc, yc, 0)
    np.testing.assert_allclose(lam_cut, lam_par, rtol=1e-12)
    assert np.ptp(lam_cut[0]) > 0


def test_gzip_false_and_angular_size(served):
    srv, rel, parent = served
    scale = np.sqrt(abs(np.linalg.det(WCS(parent["IMAGE"][0]).pixel_scale_matrix))) * 3600
    cut = _get(srv, rel, f"center=64,64pix&size={10 * scale / 60},{6 * scale / 60}arcmin&gzip=false")
    assert cut["IMAGE"].data.shape == (6, 10)
    assert parent_origin(cut["IMAGE"].header) == (59, 61)


def test_edge_clipping(served):
    srv, rel, parent = served
    ny, nx = parent["IMAGE"][1].shape
    cut = _get(srv, rel, "center=2,3px&size=20px&gzip=false")
    assert parent_origin(cut["IMAGE"].header) == (0, 0)
    assert cut["IMAGE"].data.shape == (13, 12)
    np.testing.assert_array_equal(cut["IMAGE"].data, parent["IMAGE"][1][:13, :12])
    cut = _get(srv, rel, f"center={nx - 1},{ny - 1}px&size=10px")
    assert parent_origin(cut["IMAGE"].header) == (nx - 6, ny - 6)
    np.testing.assert_array_equal(cut["FLAGS"].data, parent["FLAGS"][1][-6:, -6:])


@pytest.mark.parametrize(
    "query",
    [
        "center=500,500px&size=10px",  # off the image
        "center=0,0&size=0.01",  # sky position far away
        "center=10,95&size=0.1",  # dec out of range
        "center=abc&size=0.1",
        "center=10,10px&size=-3px",
        "center=10,10px&size=3furlongs",
        "center=10,10px",
        "center=10,10px&size=3px&gzip=maybe",
    ],
)
def test_bad_or_non_overlapping_requests_are_400(served, query):
    srv, rel, _ = served
    r = requests.get(srv.file_url(rel) + "?" + query)
    assert r.status_code == 400, query


def test_parse_units():
    s = parse_cutout_query({"center": "0.5,0.25rad", "size": "2arcmin"})
    assert s.center == pytest.approx((np.degrees(0.5), np.degrees(0.25))) and not s.center_in_pixels
    assert s.size == pytest.approx((2 / 60, 2 / 60)) and s.gzip
    s = parse_cutout_query({"center": "156.09,-41.64", "size": "0.1,0.2", "gzip": "false"})
    assert s.size == (0.1, 0.2) and not s.size_in_pixels and not s.gzip
    with pytest.raises(CutoutError):
        parse_cutout_query({"center": "1,2px", "size": "0"})


def test_cutout_reads_only_needed_rows(served):
    """The trimmed planes come from `.section`: their full `.data` is never loaded."""
    from spxbatch.sim import cutout

    srv, rel, _ = served
    spec = parse_cutout_query({"center": "64,64px", "size": "8px"})
    with fits.open(srv.root / rel, lazy_load_hdus=True, memmap=False) as hdul:
        cut = cutout.cutout_hdul(hdul, spec)
        assert cut["IMAGE"].data.shape == (8, 8)
        assert all("data" not in hdul[name].__dict__ for name in cutout.TRIMMED)
    body = cutout.make_cutout(srv.root / rel, spec)
    assert body[:2] == b"\x1f\x8b"
