"""The simulated archive's TAP service driven by pyvo over HTTP: sync, async (UWS), uploads, errors, geometry
against the files' own WCS (the engine alone: test_tap_engine.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import pyvo
import requests
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning

from spxbatch.level2.constants import BANDS, TIME_BOUNDS_SPAN_S
from spxbatch.level2.naming import IBE_ROOT, make_did, parse_did
from spxbatch.sim import make_archive
from spxbatch.sim.server import serve_archive

CANONICAL = """SELECT 'https://irsa.ipac.caltech.edu/' || a.uri AS download_url,
       p.obs_publisher_did, p.time_bounds_lower, p.time_bounds_upper,
       p.energy_bandpassname, p.energy_bounds_lower, p.energy_bounds_upper, a.uri
FROM artifact a JOIN plane p ON a.planeid = p.planeid
WHERE CONTAINS(POINT('ICRS', {ra}, {dec}), p.poly) = 1
ORDER BY p.time_bounds_lower"""


def _archive(tmp_path_factory, name, **kw):
    root = tmp_path_factory.mktemp(name)
    make_archive(root, npix=128, seed=3, n_visits=3, noise=False, calibration=False, **kw)
    return root


@pytest.fixture(scope="module")
def demo(sim_archive):
    with serve_archive(sim_archive.root) as srv:
        yield srv


@pytest.fixture(scope="module")
def wrap(tmp_path_factory):
    """A field straddling RA = 0."""
    with serve_archive(_archive(tmp_path_factory, "tap_wrap", field="wrap", ra=359.95, dec=1.0)) as srv:
        yield srv


@pytest.fixture(scope="module")
def polar(tmp_path_factory):
    """A field around the north celestial pole."""
    with serve_archive(_archive(tmp_path_factory, "tap_pole", field="pole", ra=30.0, dec=89.95)) as srv:
        yield srv


def _pixel_of(srv, ra: float, dec: float) -> dict[str, tuple[float, float, int, int]]:
    """For every served file: (x, y, nx, ny) of the point through the file's own SIP WCS."""
    out = {}
    for rel, (wcs, nx, ny) in _wcs_of(srv).items():
        x, y = wcs.all_world2pix(ra, dec, 0, quiet=True)
        out[rel] = (float(x), float(y), nx, ny)
    return out


_WCS_CACHE: dict[str, dict] = {}


def _wcs_of(srv) -> dict:
    if srv.url not in _WCS_CACHE:
        out = {}
        for rel in srv.index["relpath"]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FITSFixedWarning)
                hdr = fits.getheader(srv.root / rel, "IMAGE")
                out[rel] = (WCS(hdr), hdr["NAXIS1"], hdr["NAXIS2"])
        _WCS_CACHE[srv.url] = out
    return _WCS_CACHE[srv.url]


def _check_contains(srv, ra: float, dec: float, margin: float = 1.0) -> set[str]:
    """TAP CONTAINS(point, poly) against the WCS: files with the point >= margin px inside must be returned,
    files with it >= margin px outside must not. Returns the returned relpaths."""
    svc = pyvo.dal.TAPService(srv.tap_url)
    rows = svc.search(CANONICAL.format(ra=ra, dec=dec)).to_table()
    got = {u[len(IBE_ROOT) + 1:] for u in rows["uri"]}
    inside, outside = set(), set()
    for rel, (x, y, nx, ny) in _pixel_of(srv, ra, dec).items():
        lo, hi = -0.5, np.array([nx, ny]) - 0.5
        d = min(x - lo, y - lo, hi[0] - x, hi[1] - y)
        if d >= margin:
            inside.add(rel)
        elif d <= -margin or not np.isfinite(d):
            outside.add(rel)
    assert inside <= got, f"missing {inside - got}"
    assert not (got & outside), f"wrongly returned {got & outside}"
    return got


def _points_around(srv, n: int = 8, seed: int = 0) -> list[tuple[float, float]]:
    """File centres plus random points within 0.3 deg of the first file (inside and outside footprints)."""
    rng = np.random.default_rng(seed)
    idx = srv.index
    pts = [(float(r), float(d)) for r, d in zip(idx["ra"], idx["dec"], strict=True)][:4]
    c = SkyCoord(idx["ra"].iloc[0], idx["dec"].iloc[0], unit="deg")
    for _ in range(n):
        q = c.directional_offset_by(rng.uniform(0, 360) * u.deg, rng.uniform(0, 0.3) * u.deg)
        pts.append((float(q.ra.deg), float(q.dec.deg)))
    return pts


def test_canonical_query_sync(demo):
    """The SPXQuery/tutorial query: rows, DID and URL formats, units, order, time span."""
    ra, dec = float(demo.index["ra"].iloc[0]), float(demo.index["dec"].iloc[0])
    t = pyvo.dal.TAPService(demo.tap_url).search(CANONICAL.format(ra=ra, dec=dec)).to_table()
    assert len(t) >= 2
    assert all(u.startswith("https://irsa.ipac.caltech.edu/ibe/data/spherex/qr2/level2/") for u in t["download_url"])
    assert all(not u.startswith("/") for u in t["uri"])
    obs_id, det = parse_did(t["obs_publisher_did"][0])
    row = demo.index[demo.index["relpath"] == t["uri"][0][len(IBE_ROOT) + 1:]].iloc[0]
    assert (obs_id, det) == (row["obs_id"], row["detector"])
    assert t["obs_publisher_did"][0] == make_did(obs_id, det, row["collection"])
    assert np.all(np.diff(t["time_bounds_lower"]) >= 0)
    span_s = (t["time_bounds_upper"] - t["time_bounds_lower"]) * 86400
    assert np.allclose(span_s, TIME_BOUNDS_SPAN_S, atol=1e-3)
    for lo, hi, name in zip(t["energy_bounds_lower"], t["energy_bounds_upper"], t["energy_bandpassname"],
                            strict=True):
        band = BANDS[int(name[-1])]
        assert 0.5e-6 < lo < hi < 5.5e-6
        assert lo < band.hi_um * 1e-6 and hi > band.lo_um * 1e-6
    assert str(t["energy_bounds_lower"].unit) == "m" and str(t["time_bounds_lower"].unit) == "d"


@pytest.mark.parametrize("field", ["demo", "wrap", "polar"])
def test_contains_point_matches_wcs(field, request):
    """CONTAINS(POINT, p.poly) returns exactly the files whose SIP WCS footprint holds the point."""
    srv = request.getfixturevalue(field)
    hits = [_check_contains(srv, ra, dec) for ra, dec in _points_around(srv)]
    assert any(hits) and not all(len(h) == len(srv.index) for h in hits)


def test_wrap_field_straddles_zero(wrap):
    ras = wrap.index[[f"ra{i}" for i in range(1, 5)]].to_numpy()
    assert (ras > 359).any() and (ras < 1).any()
    assert _check_contains(wrap, 0.0, 1.0) or _check_contains(wrap, 359.99, 1.0)


def test_polar_field_contains_pole(polar):
    got = _check_contains(polar, 123.0, 89.999)
    assert got == _check_contains(polar, 300.0, 89.999)


def test_intersects_circle(demo):
    """INTERSECTS(p.poly, CIRCLE): a tiny circle at a file centre finds it; a circle beside the footprint
    finds it only when its radius reaches the nearest corner or edge."""
    svc = pyvo.dal.TAPService(demo.tap_url)
    row = demo.index.iloc[0]
    q = ("SELECT a.uri FROM plane p JOIN artifact a ON a.planeid = p.planeid "
         "WHERE INTERSECTS(p.poly, CIRCLE('ICRS', {ra}, {dec}, {r})) = 1")

    def uris(ra, dec, r):
        return {x[len(IBE_ROOT) + 1:] for x in svc.search(q.format(ra=ra, dec=dec, r=r))["uri"]}

    assert row["relpath"] in uris(row["ra"], row["dec"], 1e-4)
    corner = SkyCoord(row["ra1"], row["dec1"], unit="deg")
    centre = SkyCoord(row["ra"], row["dec"], unit="deg")
    away = corner.directional_offset_by(centre.position_angle(corner), 0.05 * u.deg)
    assert row["relpath"] not in uris(away.ra.deg, away.dec.deg, 0.04)
    assert row["relpath"] in uris(away.ra.deg, away.dec.deg, 0.06)
    # a circle around the whole field holds everything; CONTAINS(poly, CIRCLE) then too
    everything = uris(row["ra"], row["dec"], 2.0)
    assert everything == set(demo.index["relpath"])
    q2 = q.replace("INTERSECTS", "CONTAINS")
    assert {x[len(IBE_ROOT) + 1:] for x in svc.search(q2.format(ra=row["ra"], dec=row["dec"],
                                                                         r=2.0))["uri"]} == everything


def test_async_matches_sync_and_delete(demo):
    svc = pyvo.dal.TAPService(demo.tap_url)
    q = "SELECT p.planeid, p.obs_publisher_did FROM plane p ORDER BY p.planeid"
    job = svc.submit_job(q)
    assert job.phase == "PENDING"
    job.run()
    job.wait(phases=["COMPLETED", "ERROR", "ABORTED"], timeout=30)
    assert job.phase == "COMPLETED"
    res = job.fetch_result().to_table()
    assert list(res["obs_publisher_did"]) == list(svc.search(q).to_table()["obs_publisher_did"])
    assert len(res) == len(demo.index)
    url = job.url
    job.delete()
    assert requests.get(url).status_code == 404


def test_async_error_phase(demo):
    svc = pyvo.dal.TAPService(demo.tap_url)
    job = svc.submit_job("SELECT no_such_column FROM plane")
    job.run().wait(phases=["COMPLETED", "ERROR", "ABORTED"], timeout=30)
    assert job.phase == "ERROR"
    with pytest.raises(pyvo.dal.DALQueryError, match="no_such_column"):
        job.raise_if_error()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELEC * FROM plane", "syntax error"),
        ("SELECT * FROM nothere", "no such table: nothere"),
        ("SELECT p.bogus FROM plane p", "no such column: p.bogus"),
        ("SELECT * FROM plane p WHERE CONTAINS(POINT('ICRS', 1, 2), POLYGON('ICRS', p.s_ra, 1, 2, 3, "
         "4, 5)) = 1", "numeric constants"),
        ("SELECT * FROM plane p WHERE CONTAINS(POINT('ICRS', 1, 2), time_bounds_lower) = 1",
         "cannot read region"),
        ("SELECT nosuchfunc(1) FROM plane", "no such function"),
    ],
)
def test_errors_are_tap_errors(demo, query, message):
    """Bad queries get an error VOTable with the reason (HTTP 400): pyvo raises DALQueryError, never a 500."""
    svc = pyvo.dal.TAPService(demo.tap_url)
    with pytest.raises(pyvo.dal.DALQueryError, match=message):
        svc.search(query)
    r = requests.post(f"{demo.tap_url}/sync", data={"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": query})
    assert r.status_code == 400 and 'value="ERROR"' in r.text


def test_upload_join(demo):
    """TAP_UPLOAD join: the same (source, file) pairs as one CONTAINS query per source."""
    svc = pyvo.dal.TAPService(demo.tap_url)
    pts = _points_around(demo, n=6, seed=5)
    src = Table({"name": [f"s{i}" for i in range(len(pts))], "ra": [p[0] for p in pts],
                 "dec": [p[1] for p in pts]})
    q = ("SELECT t.name, a.uri FROM TAP_UPLOAD.src AS t JOIN plane AS p "
         "ON CONTAINS(POINT('ICRS', t.ra, t.dec), p.poly) = 1 "
         "JOIN artifact AS a ON a.planeid = p.planeid")
    got = {(n, uri) for n, uri in svc.search(q, uploads={"src": src}).to_table().iterrows()}
    want = set()
    for name, (ra, dec) in zip(src["name"], pts, strict=True):
        want |= {(name, u_) for u_ in svc.search(CANONICAL.format(ra=ra, dec=dec)).to_table()["uri"]}
    assert got == want and got
    job = svc.submit_job(q, uploads={"src": src}).run().wait(phases=["COMPLETED", "ERROR"], timeout=30)
    assert {(n, uri) for n, uri in job.fetch_result().to_table().iterrows()} == want


def test_maxrec_top_and_csv(demo):
    svc = pyvo.dal.TAPService(demo.tap_url)
    n = len(demo.index)
    cut = svc.search("SELECT * FROM plane", maxrec=2)
    assert len(cut) == 2 and cut.query_status == "OVERFLOW"
    assert svc.search("SELECT * FROM plane", maxrec=n).query_status == "OK"
    assert len(svc.search("SELECT TOP 3 * FROM plane")) == min(3, n)
    r = requests.post(f"{demo.tap_url}/sync", data={"REQUEST": "doQuery", "LANG": "ADQL", "FORMAT": "csv",
                                                     "QUERY": "SELECT planeid, energy_bandpassname FROM "
                                                              "plane ORDER BY planeid"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    lines = r.text.strip().splitlines()
    assert lines[0] == "planeid,energy_bandpassname" and len(lines) == n + 1


def test_obscore_and_geometry_columns(demo):
    """obscore rows, STC-S s_region usable in CONTAINS, DALI polygon for p.poly equal to the index corners."""
    svc = pyvo.dal.TAPService(demo.tap_url)
    row = demo.index.iloc[0]
    t = svc.search(f"SELECT * FROM obscore WHERE CONTAINS(POINT('ICRS', {row['ra']}, {row['dec']}), "
                   "s_region) = 1").to_table()
    assert len(t) >= 1 and all(s.startswith("POLYGON ICRS ") for s in t["s_region"])
    assert all(a.startswith(demo.url + "/ibe/data/spherex/") for a in t["access_url"])
    assert requests.head(t["access_url"][0]).status_code == 200
    p = svc.search("SELECT p.poly, a.uri FROM plane p JOIN artifact a "
                   "ON a.planeid = p.planeid").to_table()
    by_uri = dict(zip(p["uri"], p["poly"], strict=True))
    poly = np.asarray(by_uri[f"{IBE_ROOT}/{row['relpath']}"], dtype=float)
    want = np.ravel([[row[f"ra{i}"], row[f"dec{i}"]] for i in range(1, 5)])
    assert np.allclose(poly, want, atol=1e-9)
