"""Request plans executed over local files (no server) and their bodies decoded into regions: the same pixels,
PSF and wavelength table as astropy's read of the file; cutout bodies decoded with the no-overlap rule."""

from __future__ import annotations

import gzip
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pytest
from astropy.io import fits
from fetch_checks import ATTRS, HALF, sources_on

from spxbatch.archive.io import ReadError
from spxbatch.fetch.cache import FetchCache
from spxbatch.fetch.decode import decode
from spxbatch.fetch.execute import FetchContext, Fetched, cutout_bodies, read_plan, scan_headers
from spxbatch.fetch.options import FetchOptions
from spxbatch.fetch.request_plan import MirrorCutoutPlan, WholePlan, plan_cutouts, plan_image
from spxbatch.fetch.tables import ImageTables
from spxbatch.fetch.target import ImageTarget
from spxbatch.level2.layout import PLANES
from spxbatch.level2.naming import IBE_ROOT
from spxbatch.sim.cutout import make_cutout, parse_cutout_query


def _setup(sim_archive, relpath: str):
    options = FetchOptions(file_root=str(sim_archive.root))
    header = fits.getheader(sim_archive.root / relpath, "IMAGE")
    row = {"url": "http://127.0.0.1:9/unused", "relpath": f"{IBE_ROOT}/{relpath}",
           "detector": int(relpath.split("/")[4]), "nx": header["NAXIS1"], "ny": header["NAXIS2"]}
    target = ImageTarget.from_row(row, options)
    ctx = FetchContext.open(target.protocol, options, FetchCache())
    return target, ctx, ImageTables(ctx, target, "file")


def _same_as_file(regions, path):
    with fits.open(path) as hdul:
        for region, members in regions:
            assert members.size
            ny, nx = region.shape
            sl = np.s_[region.y0:region.y0 + ny, region.x0:region.x0 + nx]
            for name in PLANES:
                assert np.array_equal(getattr(region, ATTRS[name]), hdul[name].data[sl], equal_nan=True), name
            assert np.array_equal(region.psf.cube, hdul["PSF"].data)
            assert np.array_equal(region.wave.values.ravel(), np.ravel(hdul["WCS-WAVE"].data[0]["VALUES"]))
            assert region.parent_shape == hdul["IMAGE"].data.shape


def test_local_range_plan_read_and_decoded(sim_archive, truth):
    relpath = sim_archive.files[0]
    target, ctx, tables = _setup(sim_archive, relpath)
    ra, dec = sources_on(truth, relpath, 6, spread=True)
    ra, dec = np.append(ra, ra[0] + 5.0), np.append(dec, dec[0])  # one far off the frame
    fmap = scan_headers(ctx, target.path, target.size)
    psf_spans = tables.psf_spans(fmap, ra, dec)  # a local file's cube whole
    assert psf_spans == ((fmap["PSF"].data_offset, fmap["PSF"].data_offset + fmap["PSF"].data_size),)
    plan, estimates = plan_image(fmap, ra, dec, HALF, "local", FetchOptions(), ctx.transport(target.path),
                                 psf_spans, target.size)
    assert plan.strategy == "local" and estimates == {} and plan.off_image.tolist() == [6]
    requests = ctx.stats.requests
    fetched = read_plan(plan, ctx)
    assert ctx.stats.requests - requests == len(plan.ranges())  # a local file: one read per range
    decoded = decode(fetched, fmap, tables, ra, dec, HALF, fmap["IMAGE"].shape)
    assert decoded.errors == () and decoded.missing.tolist() == [6]
    assert sorted(np.concatenate([m for _, m in decoded.regions]).tolist()) == list(range(6))
    _same_as_file(decoded.regions, sim_archive.root / relpath)
    assert tables.psf_spans(fmap, ra, dec) == ()  # the PSF HDU was read once and is now held


def test_whole_plan_decoded(sim_archive, truth):
    relpath = sim_archive.files[1]
    target, ctx, tables = _setup(sim_archive, relpath)
    ra, dec = sources_on(truth, relpath, 4)
    ra, dec = np.append(ra, 10.0), np.append(dec, -80.0)
    fetched = read_plan(WholePlan(target.path, None), ctx)
    assert ctx.stats.requests == 1 and ctx.stats.bytes_read == (sim_archive.root / relpath).stat().st_size
    decoded = decode(fetched, None, tables, ra, dec, HALF, target.parent_shape)
    (region, members), = decoded.regions
    assert (region.x0, region.y0) == (0, 0) and members.tolist() == [0, 1, 2, 3] and decoded.missing.tolist() == [4]
    _same_as_file(decoded.regions, sim_archive.root / relpath)
    fmap = scan_headers(ctx, target.path, target.size)
    assert ctx.cache.psf_reads == 0 and tables.psf_spans(fmap, ra, dec) == ()  # the cube came with the file


def _cutout_body(path, url: str, compress: bool) -> bytes:
    query = dict(parse_qsl(urlsplit(url).query))
    query["gzip"] = "true" if compress else "false"
    return make_cutout(path, parse_cutout_query(query))


def test_cutout_bodies_decoded_with_the_no_overlap_rule(sim_archive, truth):
    relpath = sim_archive.files[0]
    path = sim_archive.root / relpath
    target, _, tables = _setup(sim_archive, relpath)
    ra, dec = sources_on(truth, relpath, 4, spread=True)
    plan = plan_cutouts(f"http://h/{relpath}", ra, dec, HALF, FetchOptions(cutout_group_px=4), gzip=False)
    assert len(plan.requests) == 4
    urls = [r.url for r in plan.requests]
    bodies = (_cutout_body(path, urls[0], compress=True), ReadError(urls[1], 400, 1, "HTTP 400 no overlap"),
              ReadError(urls[2], 503, 5, "HTTP 503"), b"SIMPLE  = not a FITS file")
    fetched = Fetched(plan, bodies)
    outcomes = cutout_bodies(fetched)
    assert outcomes[0].data[:6] == b"SIMPLE" and outcomes[0].error is None  # gunzipped
    assert outcomes[1].data is None and outcomes[1].error is None  # no overlap: nothing there, no error
    assert outcomes[2].data is None and "503" in outcomes[2].error
    decoded = decode(fetched, None, tables, ra, dec, HALF, target.parent_shape)
    (region, members), = decoded.regions
    assert members.tolist() == plan.requests[0].members.tolist() and region.shape[0] < 128
    lost = np.concatenate([r.members for r in plan.requests[1:]])
    assert decoded.missing.tolist() == sorted(lost.tolist())
    assert len(decoded.errors) == 2 and "503" in decoded.errors[0] and urls[3] in decoded.errors[1]
    _same_as_file(decoded.regions, path)
    plain = decode(Fetched(plan, (_cutout_body(path, urls[0], compress=False), *bodies[1:])), None, tables,
                   ra, dec, HALF, target.parent_shape)
    assert np.array_equal(plain.regions[0][0].image, region.image)


def test_mirror_cutouts_say_which_sources_they_lack(sim_archive, truth, tmp_path):
    relpath = sim_archive.files[0]
    path = sim_archive.root / relpath
    target, ctx, tables = _setup(sim_archive, relpath)
    ra, dec = sources_on(truth, relpath, 3, spread=True)
    plan = plan_cutouts(f"http://h/{relpath}", ra, dec, HALF, FetchOptions(cutout_group_px=4), gzip=False)
    staged = tmp_path / "cut000.fits"
    staged.write_bytes(_cutout_body(path, plan.requests[0].url, compress=False))
    ra, dec = np.append(ra, 10.0), np.append(dec, -80.0)  # off the frame: missing, but no error
    fetched = read_plan(MirrorCutoutPlan((str(staged), str(tmp_path / "absent.fits"))), ctx)
    decoded = decode(fetched, None, tables, ra, dec, HALF, target.parent_shape)
    assert [m.tolist() for _, m in decoded.regions] == [plan.requests[0].members.tolist()]
    assert "absent.fits" in decoded.errors[0]
    assert decoded.errors[1].startswith("2 source(s) on the image are in none of its staged cutouts")
    _same_as_file(decoded.regions, path)


def test_gzip_detection_is_by_content():
    data = b"SIMPLE  = T" + b" " * 100
    fetched = Fetched(plan_cutouts("http://h/f.fits", np.array([1.0]), np.array([2.0]), HALF, FetchOptions(),
                                   gzip=True), (gzip.compress(data),))
    assert cutout_bodies(fetched)[0].data == data


@pytest.mark.parametrize("protocol,local,cutouts", [("file", True, False), ("s3", False, False),
                                                     ("http", False, True)])
def test_transport_of_a_context(protocol, local, cutouts):
    ctx = FetchContext.open(protocol, FetchOptions(), FetchCache())
    transport = ctx.transport("http://127.0.0.1:1/x.fits")
    assert (transport.local, transport.cutout_service) == (local, cutouts)
    assert transport.multirange == (protocol == "http")
