"""The simulated archive serving today's releases: TAP lists every file with its collection and processing
version, cutouts of R7 files (FLAGS compressed again, EPSF whole, CRPIX shifted), folder listings through
which clients find calibration tags."""

from __future__ import annotations

import gzip
import io

import fsspec
import numpy as np
import pandas as pd
import pytest
import pyvo
import requests
from astropy.io import fits
from test_sim_r7_format import _raw_header

from spxbatch.level2.naming import IBE_ROOT, parse_did
from spxbatch.plan.index import index_directory
from spxbatch.sim.server import serve_archive
from spxbatch.sim.server.listing import listing_html

QUERY = """SELECT a.uri, p.obs_publisher_did, p.provenance_version, o.collection, o.observationid
FROM spherex.artifact AS a JOIN spherex.plane AS p ON a.planeid = p.planeid
JOIN spherex.observation AS o ON p.obsid = o.obsid"""


@pytest.fixture(scope="module")
def mixed(sim_archive_mixed):
    with serve_archive(sim_archive_mixed.root) as srv:
        yield srv, sim_archive_mixed


def test_index_of_r7_and_mixed_archives_has_every_level2_file_and_no_failure(sim_archive_mixed, tmp_path):
    df = index_directory(sim_archive_mixed.root, cache_dir=tmp_path)
    assert df.attrs["failed"] == []  # the QR3 calibration folders are not taken for images
    assert sorted(df.relpath) == sorted(sim_archive_mixed.files)
    truth = pd.read_csv(sim_archive_mixed.truth["files"]).set_index("relpath")
    row = truth.loc[df.relpath]
    assert (df.collection.to_numpy() == row.collection.to_numpy()).all()
    assert (df.pipeline_version.to_numpy() == row.pipeline_version.to_numpy()).all()
    assert (df.version.to_numpy() == row.version.to_numpy()).all()  # the retry tag too
    assert (df.release.to_numpy() == row.release.to_numpy()).all()


def test_tap_lists_every_file_with_collection_and_version(mixed):
    srv, info = mixed
    table = pyvo.dal.TAPService(srv.tap_url).search(QUERY).to_table().to_pandas()
    truth = pd.read_csv(info.truth["files"])
    truth = truth[truth.present].set_index("relpath")
    prefix = IBE_ROOT + "/"
    table["relpath"] = [u[len(prefix) :] for u in table.uri]
    assert sorted(table.relpath) == sorted(truth.index)
    row = truth.loc[table.relpath]
    assert (table.collection.to_numpy() == row.collection.to_numpy()).all()
    assert (table.provenance_version.to_numpy() == row.pipeline_version.to_numpy()).all()
    assert set(table.collection) == {"spherex_qr2", "spherex_qr3", "spherex_qr3_deep"}
    for did, coll, obs in zip(table.obs_publisher_did, table.collection, table.observationid, strict=True):
        assert did.startswith(f"ivo://irsa.ipac/{coll}?") and parse_did(did)[0] == obs
    # An exposure with a QR2 file and its R7 reprocessing: two planes, one observation.
    dup = table[table.duplicated("obs_publisher_did", keep=False)]
    assert len(dup) > 0 and set(dup.provenance_version) >= {"7.0.4"}
    obscore = pyvo.dal.TAPService(srv.tap_url).search(
        "SELECT obs_collection, access_url FROM spherex.obscore").to_table().to_pandas()
    assert set(obscore.obs_collection) == set(table.collection) and len(obscore) == len(table)


def _cutout(srv, rel: str, query: str) -> tuple[fits.HDUList, bytes]:
    r = requests.get(srv.file_url(rel) + "?" + query)
    assert r.status_code == 200, r.text
    body = gzip.decompress(r.content) if r.headers["Content-Type"] == "application/gzip" else r.content
    return fits.open(io.BytesIO(body)), body


def test_cutout_of_an_r7_file(mixed, tmp_path):
    srv, info = mixed
    rel = next(r for r in info.files if r.startswith("qr3/"))
    with fits.open(info.root / rel) as parent:
        planes = {n: np.array(parent[n].data) for n in ("IMAGE", "FLAGS", "VARIANCE", "ZODI")}
        headers = {n: parent[n].header.copy() for n in ("IMAGE", "FLAGS")}
        epsf = parent["EPSF"].data.copy()
        wave = parent["WCS-WAVE"].data.copy()
    cut, body = _cutout(srv, rel, "center=20.4,100.7px&size=25px")
    with cut:
        assert [h.name for h in cut] == ["PRIMARY", "IMAGE", "FLAGS", "VARIANCE", "ZODI", "EPSF", "WCS-WAVE"]
        assert isinstance(cut["FLAGS"], fits.CompImageHDU)
        x0, y0 = 8, 88  # floor(20.4 + 0.5 - 12.5), floor(100.7 + 0.5 - 12.5)
        for name, data in planes.items():
            assert np.array_equal(cut[name].data, data[y0 : y0 + 25, x0 : x0 + 25], equal_nan=True), name
        for name in ("IMAGE", "FLAGS"):
            h, p = cut[name].header, headers[name]
            for suffix in ("", "A", "W"):
                assert h[f"CRPIX1{suffix}"] == p[f"CRPIX1{suffix}"] - x0
                assert h[f"CRPIX2{suffix}"] == p[f"CRPIX2{suffix}"] - y0
        assert [k for k in cut["FLAGS"].header if k.startswith("MSKN")] == [
            k for k in headers["FLAGS"] if k.startswith("MSKN")]
        assert np.array_equal(cut["EPSF"].data, epsf) and np.array_equal(cut["WCS-WAVE"].data, wave)
    path = tmp_path / "cut.fits"
    path.write_bytes(body)
    raw = _raw_header(path, "FLAGS")
    assert raw["ZCMPTYPE"] == "RICE_1" and int(raw["ZTILE1"]) == 25 and int(raw["ZTILE2"]) == 1
    assert len(body) > 0.8 * len(epsf.tobytes())  # the EPSF table is most of a small cutout


def test_folder_listing_gives_calibration_tags(mixed):
    srv, _ = mixed
    base = f"{srv.url}/{IBE_ROOT}/qr3/epsf"
    r = requests.get(base + "/")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert 'href="cal-epsf-v1-2026-191/"' in r.text and 'href="cal-epsf-v2-2026-191/"' in r.text
    fs = fsspec.filesystem("http")
    for url in (base, base + "/"):  # with and without the trailing slash
        assert sorted(u.rstrip("/").rsplit("/", 1)[1] for u in fs.ls(url, detail=False)) == [
            "cal-epsf-v1-2026-191", "cal-epsf-v2-2026-191"]
    files = fs.ls(base + "/cal-epsf-v2-2026-191/3/", detail=False)
    assert [u.rsplit("/", 1)[1] for u in files] == ["epsf_D3_spx_cal-epsf-v2-2026-191.fits"]
    assert requests.get(f"{srv.url}/{IBE_ROOT}/qr3/no_such_product/").status_code == 404
    assert requests.head(base).status_code == 200


def test_listing_page_lists_folders_first_and_hides_hidden_entries(tmp_path):
    (tmp_path / "b-folder").mkdir()
    (tmp_path / "a.fits").write_bytes(b"x" * 7)
    (tmp_path / ".spxbatch-index.parquet").write_bytes(b"")
    page = listing_html(tmp_path, "/ibe/data/spherex/qr3/x")
    assert page.index('href="b-folder/"') < page.index('href="a.fits"')
    assert ".spxbatch-index" not in page and "Index of /ibe/data/spherex/qr3/x/" in page
    assert '<td align="right">7</td>' in page
