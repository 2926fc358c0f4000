"""Plan logic without a server: tiles, ADQL validity, filters, dedupe, matching, save/load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spxbatch.archive.location import resolve_archive
from spxbatch.plan.footprint import radec_to_xyz
from spxbatch.plan.plan import Plan, _filters, apply_filters, dedupe, make_tiles, match, tile_query
from spxbatch.plan.tap import check_adql, parse_polygon, point_query, version_key


def _angle_deg(ra1, dec1, ra2, dec2):
    a, b = np.broadcast_arrays(radec_to_xyz(ra1, dec1), radec_to_xyz(ra2, dec2))
    return np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), np.sum(a * b, -1)))


def test_tiles_cover_every_source_once():
    rng = np.random.default_rng(1)
    # a dense field across RA=0, a polar cap, and sparse sources over the sky
    ra = np.concatenate([rng.uniform(-1, 1, 3000) % 360, rng.uniform(0, 360, 500), rng.uniform(0, 360, 200)])
    dec = np.concatenate([rng.uniform(-1, 1, 3000), rng.uniform(88.5, 90, 500), rng.uniform(-60, 60, 200)])
    tiles = make_tiles(ra, dec)
    assert sum(t.count for t in tiles) == len(ra)
    # every source lies inside at least one tile circle
    tra = np.array([t.ra for t in tiles])
    tdec = np.array([t.dec for t in tiles])
    trad = np.array([t.radius_deg for t in tiles])
    inside = _angle_deg(ra[:, None], dec[:, None], tra[None, :], tdec[None, :]) <= trad[None, :] + 1e-6
    assert inside.any(axis=1).all()
    assert max(trad) <= 6.0
    # the dense 2x2 deg field and the polar cap are a handful of queries, not thousands
    dense = [t for t in tiles if abs(t.dec) < 2 and (t.ra < 3 or t.ra > 357)]
    polar = [t for t in tiles if t.dec > 87]
    assert len(dense) <= 4 and len(polar) <= 4
    assert len(tiles) < 250


def test_far_apart_sources_are_not_merged_and_one_source_has_radius_zero():
    tiles = make_tiles(np.array([10.0, 100.0, 200.0]), np.array([0.0, 30.0, -45.0]))
    assert len(tiles) == 3 and all(t.radius_deg < 1e-9 and t.count == 1 for t in tiles)
    assert make_tiles(np.array([]), np.array([])) == []


def test_every_query_form_passes_the_adql_grammar():
    """Each form the plan sends (the ANTLR parser costs ~1 s per query, so one of each form)."""
    filters = _filters([1, "D3"], (60800.5, 60900.25), None, ["qr2", "qr3"])
    tile = make_tiles(np.array([359.9, 0.1]), np.array([-89.9, -89.8]))[0]
    check_adql(tile_query(tile, 1e-3, filters))  # every filter, RA wrap, south pole
    check_adql(tile_query(tile, 0.0, _filters(None, None, None, None)))  # no filter
    check_adql(point_query(0.0, 90.0, bands=[6], releases=["qr2"]))  # SPXQuery's per-source form
    with pytest.raises(ValueError, match="not valid ADQL"):
        check_adql("SELECT FROM WHERE")


def test_polygon_parsing_forms():
    expect = ([10.0, 11.0, 11.0], [1.0, 1.0, 2.0])
    assert parse_polygon(np.array([10.0, 1, 11, 1, 11, 2])) == expect
    assert parse_polygon("POLYGON ICRS 10 1 11 1 11 2") == expect
    assert parse_polygon("{(10d,1d),(11d,1d),(11d,2d)}") == expect
    assert parse_polygon(np.array([-1.0, 0, 1, 0, 0, 1]))[0] == [359.0, 1.0, 0.0]
    with pytest.raises(ValueError):
        parse_polygon(np.array([1.0, 2.0]))


def _images(rows):
    base = dict(band_name="D1", release="qr2", collection="spherex_qr2", mjd_start=60800.0, mjd_end=60800.001,
                energy_lo_um=0.75, energy_hi_um=1.1, poly_ra=[10.0, 12.0, 12.0, 10.0],
                poly_dec=[0.0, 0.0, 2.0, 2.0], size_bytes=100)
    out = []
    for r in rows:
        d = {**base, **r}
        d.setdefault("relpath", f"ibe/data/spherex/{d['release']}/level2/2025W18_2B/{d['version']}/"
                                f"{d['detector']}/level2_{d['obs_id']}D{d['detector']}.fits")
        out.append(d)
    return pd.DataFrame(out)


def test_dedupe_keeps_newest_version_and_one_copy_per_file():
    df = _images([
        dict(obs_id="2025W18_2B_0001_1", detector=1, version="l2b-v20-2025-253"),
        dict(obs_id="2025W18_2B_0001_1", detector=1, version="l2b-v21-2025-354"),
        dict(obs_id="2025W18_2B_0001_1", detector=1, version="l2b-v21-2025-354", collection="spherex_qr2_deep"),
        dict(obs_id="2025W18_2B_0001_1", detector=4, version="l2b-v20-2025-253"),
        dict(obs_id="2025W18_2B_0002_1", detector=1, version="l2b-v20-2025-262"),
        dict(obs_id="2025W18_2B_0002_1", detector=1, version="l2b-v20-2025-253"),
    ])
    out = dedupe(df.sample(frac=1, random_state=3))
    got = sorted(zip(out["obs_id"], out["detector"], out["version"], out["collection"], strict=True))
    assert got == [("2025W18_2B_0001_1", 1, "l2b-v21-2025-354", "spherex_qr2"),
                   ("2025W18_2B_0001_1", 4, "l2b-v20-2025-253", "spherex_qr2"),
                   ("2025W18_2B_0002_1", 1, "l2b-v20-2025-262", "spherex_qr2")]
    assert version_key("l2b-v21-2025-354") > version_key("l2b-v20-2025-362") > version_key("junk")


def test_filters():
    df = _images([
        dict(obs_id="2025W18_2B_0001_1", detector=1, version="v", band_name="D1", mjd_start=100.0, mjd_end=101.0),
        dict(obs_id="2025W18_2B_0001_1", detector=2, version="v", band_name="D2", mjd_start=200.0, mjd_end=201.0,
             collection="spherex_qr2_deep"),
        dict(obs_id="2025W18_2B_0001_1", detector=3, version="v", band_name="D3", mjd_start=300.0, mjd_end=301.0,
             release="qr3"),
    ])
    sel = lambda **kw: apply_filters(df, _filters(**{"bands": None, "time_range": None, "collections": None,  # noqa: E731
                                                     "releases": None, **kw}))["detector"].tolist()
    assert sel() == [1, 2, 3]
    assert sel(bands=["D1", 3, "SPHEREx-D2"]) == [1, 2, 3] and sel(bands=[2]) == [2]
    assert sel(time_range=(100.5, 200.5)) == [1, 2]
    assert sel(collections=["spherex_qr2_deep"]) == [2]
    assert sel(releases=["QR2"]) == [1, 2]
    with pytest.raises(ValueError):
        sel(bands=[7])
    with pytest.raises(ValueError):
        sel(time_range=(3, 1))


def test_match_orders_images_and_pairs_and_drops_empty_images(tmp_path):
    df = _images([
        dict(obs_id="2025W18_2B_0002_1", detector=1, version="v", mjd_start=2.0, mjd_end=2.1),
        dict(obs_id="2025W18_2B_0001_1", detector=1, version="v", mjd_start=1.0, mjd_end=1.1),
        dict(obs_id="2025W18_2B_0003_1", detector=1, version="v", mjd_start=0.5, mjd_end=0.6,
             poly_ra=[50.0, 51, 51, 50]),  # no source on it
    ])
    ra = np.array([11.0, 30.0, 10.5, 11.9])
    dec = np.array([1.0, 1.0, 0.5, 1.9])
    images, pairs = match(df, ra, dec, 0.0)
    assert images["obs_id"].tolist() == ["2025W18_2B_0001_1", "2025W18_2B_0002_1"]
    assert images["image_id"].tolist() == [0, 1] and images["mjd"].tolist() == pytest.approx([1.05, 2.05])
    assert list(zip(pairs["image_id"], pairs["source_index"], strict=True)) == [
        (0, 0), (0, 2), (0, 3), (1, 0), (1, 2), (1, 3)]
    plan = Plan(images.assign(url="file:///x"), pairs, {"fingerprint": "abc"})
    plan.save(tmp_path)
    back = Plan.load(tmp_path)
    pd.testing.assert_frame_equal(back.pairs, pairs)
    pd.testing.assert_frame_equal(back.images, plan.images)
    assert back.meta == {"fingerprint": "abc"}
    assert {k: v.tolist() for k, v in back.sources_by_image().items()} == {0: [0, 2, 3], 1: [0, 2, 3]}


def test_resolve_archive(tmp_path):
    irsa = resolve_archive("irsa")
    uri = "ibe/data/spherex/qr2/level2/2025W25_1B/l2b-v20-2025-253/3/x.fits"
    assert irsa.file_url(uri) == f"https://irsa.ipac.caltech.edu/{uri}"
    assert irsa.file_url("/" + uri) == f"https://irsa.ipac.caltech.edu/{uri}"
    assert irsa.tap_url == "https://irsa.ipac.caltech.edu/TAP"
    http = resolve_archive("http://127.0.0.1:8123/")
    assert http.tap_url == "http://127.0.0.1:8123/TAP" and http.file_url(uri) == f"http://127.0.0.1:8123/{uri}"
    s3 = resolve_archive("s3://nasa-irsa-spherex")
    assert s3.file_url(uri) == "s3://nasa-irsa-spherex/qr2/level2/2025W25_1B/l2b-v20-2025-253/3/x.fits"
    assert s3.storage_options == {"anon": True} and s3.tap_url == irsa.tap_url
    assert resolve_archive("s3://b/pre/", tap_url="http://h/TAP").file_url(uri).startswith("s3://b/pre/qr2/")
    (tmp_path / "ibe/data/spherex").mkdir(parents=True)
    local = resolve_archive(str(tmp_path))
    assert local.kind == "local" and local.tap_url is None
    assert local.file_url(uri) == f"{tmp_path.resolve()}/{uri}"
    with pytest.raises(ValueError, match="not 'irsa'"):
        resolve_archive(str(tmp_path / "missing"))


def test_normalise_tap_rows():
    from astropy.table import MaskedColumn, Table

    from spxbatch.level2.naming import level2_relpath
    from spxbatch.plan.tap import normalise_tap

    uri = level2_relpath("2025W25_1B_0062_1", 3, "l2b-v20-2025-253")
    poly = np.empty(2, dtype=object)
    poly[0] = np.array([10.0, 1, 11, 1, 11, 2, 10, 2])
    poly[1] = np.array([-0.5, 1, 0.5, 1, 0.5, 2, -0.5, 2])
    t = Table({"uri": ["/" + uri, "https://irsa.ipac.caltech.edu/" + uri.replace("qr2", "qr3")],
               "contentlength": MaskedColumn([71_000_000, 0], mask=[False, True]),
               "obs_publisher_did": ["ivo://irsa.ipac/spherex_qr2_deep?2025W25_1B_0062_1/D3", "unparseable"],
               "time_bounds_lower": [1.0, 2.0], "time_bounds_upper": [1.5, 2.5],
               "energy_bandpassname": ["SPHEREx-D3", "SPHEREx-D3"],
               "energy_bounds_lower": [1.63e-6, 1.63e-6], "energy_bounds_upper": [2.43e-6, 2.43e-6], "poly": poly})
    df = normalise_tap(t)
    assert df["relpath"].tolist() == [uri, uri.replace("qr2", "qr3")]
    assert df["obs_id"].tolist() == ["2025W25_1B_0062_1"] * 2 and df["detector"].tolist() == [3, 3]
    assert df["collection"].tolist() == ["spherex_qr2_deep", ""] and df["release"].tolist() == ["qr2", "qr3"]
    assert df["version"].tolist() == ["l2b-v20-2025-253"] * 2 and df["band_name"].tolist() == ["D3", "D3"]
    assert df["size_bytes"].iloc[0] == 71_000_000 and pd.isna(df["size_bytes"].iloc[1])
    assert df["poly_ra"].iloc[1] == [359.5, 0.5, 0.5, 359.5]
    assert df["energy_lo_um"].tolist() == pytest.approx([1.63, 1.63])
