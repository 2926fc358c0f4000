"""Plan logic without a server: matching, save/load, archive locations, TAP rows (tiles and filters: test_tiles,
test_select)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from plan_rows import image_rows

from spxbatch.archive.location import resolve_archive
from spxbatch.errors import StageError
from spxbatch.plan.match import match
from spxbatch.plan.pairs import concat_pairs, iter_pairs, partition_bounds
from spxbatch.plan.plan import Plan, saved_is_current
from spxbatch.plan.tap import parse_polygon


def test_polygon_parsing_forms():
    expect = ([10.0, 11.0, 11.0], [1.0, 1.0, 2.0])
    assert parse_polygon(np.array([10.0, 1, 11, 1, 11, 2])) == expect
    assert parse_polygon("POLYGON ICRS 10 1 11 1 11 2") == expect
    assert parse_polygon("{(10d,1d),(11d,1d),(11d,2d)}") == expect
    assert parse_polygon(np.array([-1.0, 0, 1, 0, 0, 1]))[0] == [359.0, 1.0, 0.0]
    with pytest.raises(ValueError):
        parse_polygon(np.array([1.0, 2.0]))


def test_match_orders_images_and_pairs_and_drops_emptyimage_rows(tmp_path):
    df = image_rows([
        dict(obs_id="2025W18_2B_0002_1", detector=1, version="v", mjd_start=2.0, mjd_end=2.1),
        dict(obs_id="2025W18_2B_0001_1", detector=1, version="v", mjd_start=1.0, mjd_end=1.1),
        dict(obs_id="2025W18_2B_0003_1", detector=1, version="v", mjd_start=0.5, mjd_end=0.6,
             poly_ra=[50.0, 51, 51, 50]),  # no source on it
    ])
    ra = np.array([11.0, 30.0, 10.5, 11.9])
    dec = np.array([1.0, 1.0, 0.5, 1.9])
    images, pairs_dir, parts = match(df, ra, dec, 0.0, tmp_path)
    pairs = concat_pairs(iter_pairs(tmp_path, {"pairs_dir": pairs_dir, "partitions": parts}))
    assert images["obs_id"].tolist() == ["2025W18_2B_0001_1", "2025W18_2B_0002_1"]
    assert images["image_id"].tolist() == [0, 1] and images["mjd"].tolist() == pytest.approx([1.05, 2.05])
    assert list(zip(pairs["image_id"], pairs["source_index"], strict=True)) == [
        (0, 0), (0, 2), (0, 3), (1, 0), (1, 2), (1, 3)]
    # matched a source at a time into partitions of one image each: the same images and pairs
    small, small_dir, small_parts = match(df, ra, dec, 0.0, tmp_path, chunk_sources=1, max_pairs=1)
    pd.testing.assert_frame_equal(small, images)
    assert [(p["first_image"], p["end_image"], p["images"], p["pairs"]) for p in small_parts] == [
        (0, 1, 1, 3), (1, 2, 1, 3)]
    pd.testing.assert_frame_equal(
        concat_pairs(iter_pairs(tmp_path, {"pairs_dir": small_dir, "partitions": small_parts})), pairs)
    assert not list(tmp_path.glob("*/.spill"))  # the spill is removed
    plan = Plan(images.assign(url="file:///x"), pairs, {"fingerprint": "abc"})
    plan.save(tmp_path)
    assert [p.name for p in tmp_path.joinpath("plan").glob("pairs-*")] == [plan.meta["pairs_dir"]]
    back = Plan.load(tmp_path)
    pd.testing.assert_frame_equal(back.pairs, pairs)
    pd.testing.assert_frame_equal(back.images, plan.images)
    assert back.meta["fingerprint"] == "abc" and back.paired_images == 2
    assert {k: v.tolist() for k, v in back.sources_by_image().items()} == {0: [0, 2, 3], 1: [0, 2, 3]}


def test_partition_bounds_hold_at_most_the_limit_unless_one_image_is_bigger():
    assert partition_bounds(np.array([3, 1, 1, 5, 2, 2]), 4).tolist() == [0, 2, 3, 4, 6]
    assert partition_bounds(np.array([1, 1]), 10).tolist() == [0, 2]
    assert partition_bounds(np.array([], dtype=np.int64), 10).tolist() == [0]


def test_a_plan_saved_by_older_code_is_refused_with_a_reason(tmp_path):
    (tmp_path / "plan").mkdir()
    (tmp_path / "plan" / "plan.json").write_text('{"format": 2}')
    with pytest.raises(StageError, match="older spxbatch"):
        Plan.load(tmp_path)
    assert not saved_is_current(tmp_path)


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
