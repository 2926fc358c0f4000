"""The simulated TAP service's tables, built from the small test archive's header index: IRSA's columns, one
row per file (per exposure in `observation`), and values that follow the files."""

from __future__ import annotations

import numpy as np
import pytest

from spxbatch.level2.naming import IBE_ROOT, make_did, parse_did
from spxbatch.plan.index import index_directory
from spxbatch.sim.tap.geometry import lonlat
from spxbatch.sim.tap.notation import parse_geometry
from spxbatch.sim.tap.schema import COLUMN_UNITS, build_tables

BASE = "http://127.0.0.1:8123"

#: The columns of each table, in order (the contract with clients: spxbatch selects a. and p. columns).
COLUMNS = {
    "plane": ["planeid", "obsid", "obs_publisher_did", "time_bounds_lower", "time_bounds_upper",
              "energy_bandpassname", "energy_bounds_lower", "energy_bounds_upper", "poly", "pt", "dataproducttype",
              "calibrationlevel", "provenance_version", "quality_flag"],
    "artifact": ["artifactid", "planeid", "uri", "producttype", "contenttype", "contentlength", "size"],
    "observation": ["obsid", "observationid", "collection"],
    "obscore": ["obs_id", "obs_publisher_did", "obs_collection", "dataproduct_type", "calib_level", "s_region",
                "s_ra", "s_dec", "s_xel1", "s_xel2", "s_pixel_scale", "t_min", "t_max", "t_exptime", "em_min",
                "em_max", "energy_bandpassname", "access_url", "access_format", "access_estsize"],
}


@pytest.fixture(scope="module")
def index(sim_archive):
    return index_directory(sim_archive.root)


@pytest.fixture(scope="module")
def tables(index):
    return build_tables(index, base_url=BASE + "/")


def _corners(row) -> np.ndarray:
    return np.array([[row[f"ra{i}"], row[f"dec{i}"]] for i in range(1, 5)])


def test_tables_and_columns(tables, index):
    assert {name: list(t.columns) for name, t in tables.items()} == COLUMNS
    n = len(index)
    assert len(tables["plane"]) == len(tables["artifact"]) == len(tables["obscore"]) == n
    assert len(tables["observation"]) == index["obs_id"].nunique()
    every_column = {c for cols in COLUMNS.values() for c in cols}
    assert set(COLUMN_UNITS) <= every_column


def test_rows_in_time_order_with_consistent_ids(tables, index):
    plane, artifact, observation = tables["plane"], tables["artifact"], tables["observation"]
    assert np.all(np.diff(plane["time_bounds_lower"]) >= 0)
    assert list(plane["planeid"]) == list(range(1, len(index) + 1)) == list(artifact["planeid"])
    assert list(artifact["artifactid"]) == list(artifact["planeid"])
    obs_of = dict(zip(observation["obsid"], observation["observationid"], strict=True))
    for did, obsid in zip(plane["obs_publisher_did"], plane["obsid"], strict=True):
        assert parse_did(did)[0] == obs_of[obsid]
    assert sorted(observation["obsid"]) == list(range(1, len(observation) + 1))


def test_values_follow_the_files(tables, index, sim_archive):
    """Each plane/artifact/obscore row describes the file its URI names: DID, times, energies, footprint,
    size, version, collection and URLs."""
    plane, artifact, obscore = tables["plane"], tables["artifact"], tables["obscore"]
    by_rel = index.set_index("relpath")
    for i, uri in enumerate(artifact["uri"]):
        assert uri.startswith(f"{IBE_ROOT}/")
        rel = uri[len(IBE_ROOT) + 1:]
        row = by_rel.loc[rel]
        size = (sim_archive.root / rel).stat().st_size
        assert artifact["contentlength"][i] == artifact["size"][i] == size
        assert plane["obs_publisher_did"][i] == obscore["obs_publisher_did"][i] == make_did(
            row["obs_id"], int(row["detector"]), row["collection"])
        assert obscore["obs_collection"][i] == row["collection"]
        assert plane["provenance_version"][i] == row["pipeline_version"]
        assert plane["energy_bandpassname"][i] == obscore["energy_bandpassname"][i] == row["band"]
        assert (plane["time_bounds_lower"][i], plane["time_bounds_upper"][i]) == (
            obscore["t_min"][i], obscore["t_max"][i]) == (row["time_bounds_lower"], row["time_bounds_upper"])
        assert (obscore["em_min"][i], obscore["em_max"][i]) == (row["energy_bounds_lower"],
                                                                row["energy_bounds_upper"])
        assert (obscore["s_xel1"][i], obscore["s_xel2"][i]) == (row["nx"], row["ny"])
        corners = _corners(row)
        corners[:, 0] %= 360
        for text in (plane["poly"][i], obscore["s_region"][i]):
            np.testing.assert_allclose([lonlat(v) for v in parse_geometry(text).verts], corners, atol=1e-12)
        np.testing.assert_allclose(lonlat(parse_geometry(plane["pt"][i]).v), (row["ra"], row["dec"]), atol=1e-12)
        assert obscore["access_url"][i] == f"{BASE}/{uri}"
        assert obscore["access_estsize"][i] == -(-size // 1024)


def test_observation_collections(tables, index):
    observation = tables["observation"]
    want = index.groupby("obs_id")["collection"].first()
    assert dict(zip(observation["observationid"], observation["collection"], strict=True)) == want.to_dict()
