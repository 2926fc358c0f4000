"""The pure parts of `spxbatch update`: which planned images are measured, the time window, the catalog rows an
update may add, and the cube's rows carried over as parts that assemble back to the same cube."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from cubes import assert_cubes_equal

from spxbatch.cube.store import open_cube
from spxbatch.errors import ConfigError
from spxbatch.pipeline.config import config_from_dict
from spxbatch.pipeline.rundir import conform_part
from spxbatch.pipeline.stages import build_dataset
from spxbatch.pipeline.update.carry import carried_parts, cube_rows
from spxbatch.pipeline.update.catalog_rows import added_rows
from spxbatch.pipeline.update.classify import classify, measured_images, not_planned, summary
from spxbatch.pipeline.update.window import look_window, mjd_of_date
from spxbatch.plan.catalog import make_catalog, read_catalog
from spxbatch.plan.plan import Plan

V1, V2 = "l2b-v20-2025-253", "l2b-v21-2025-354"
URL = "http://h/ibe/data/spherex/qr2/level2/2025W18_2A/{v}/2/level2_2025W18_2A_0058_{s}D2_spx_{v}.fits"


def _held() -> pd.DataFrame:
    obs = pd.DataFrame({"obs_id": ["A", "A", "B", "C"], "band": np.array([1, 1, 2, 1], np.int8),
                        "processing": [V1, V1, V1, V1]})
    failures = pd.DataFrame({"obs_id": ["D", "C", "E"], "band": [2, 1, 3],
                             "url": [URL.format(v=V2, s=1), URL.format(v=V1, s=2), URL.format(v=V1, s=3)],
                             "reason": ["off_image", "failed: HTTP 503", "edge"]})
    return measured_images(obs, failures)


def test_measured_images_take_the_processing_of_measurements_else_of_the_failure_url():
    held = _held().set_index(["obs_id", "band"])
    assert held.loc[("A", 1), "processing"] == V1 and not held.loc[("A", 1), "failed"]
    assert held.loc[("D", 2), "processing"] == V2  # only an off-image row: the tag in its URL
    assert held.loc[("C", 1), "failed"] and not held.loc[("E", 3), "failed"]
    assert len(held) == 5


def test_classify_each_kind():
    images = pd.DataFrame({"image_id": [0, 1, 2, 3, 4, 5], "obs_id": ["A", "B", "C", "D", "F", "E"],
                           "detector": [1, 2, 1, 2, 1, 3], "version": [V1, V2, V1, V2, V1, V1]})
    pairs = pd.DataFrame({"source_index": [0, 1, 0, 0, 0, 0, 0, 5], "image_id": [0, 0, 1, 2, 3, 4, 5, 5]})
    kinds = classify(images, pairs, _held(), n_old_sources=5)
    assert kinds.to_dict() == {0: "old", 1: "superseding", 2: "retry", 3: "old", 4: "new", 5: "new_sources"}
    assert summary(kinds) == {"new": 1, "superseding": 1, "retry": 1, "new_sources": 1, "old": 2}
    assert not_planned(images.iloc[:3], _held())[["obs_id", "band"]].values.tolist() == [["D", 2], ["E", 3]]


def test_look_window():
    assert look_window(None, None, None) is None
    assert look_window(None, None, (60000.0, 60010.0)) == [60000.0, 60010.0]
    assert look_window([60005.0, 60100.0], None, (60000.0, 60010.0)) == [60005.0, 60010.0]
    assert mjd_of_date("2026-07-20") == 61241.0  # QR3's first day
    assert look_window(None, "2026-07-20T12:00", None)[0] == 61241.5
    for args, match in (((None, "2026-07-20", (1.0, 2.0)), "not both"), ((None, "last week", None), "ISO date"),
                        (([1.0, 2.0], None, (3.0, 4.0)), "outside the cube's time range"),
                        ((None, None, (4.0, 3.0)), "must not be after")):
        with pytest.raises(ConfigError, match=match):
            look_window(*args)


def test_added_rows_and_changed_rows():
    names, ra, dec = np.array(["a", "bb"]), np.array([1.0, 2.0]), np.array([3.0, 4.0])
    assert added_rows(make_catalog([1.0, 2.0, 5.0], [3.0, 4.0, 6.0], ["a", "bb", "a-much-longer-name"]),
                      names, ra, dec, None) == 1
    with pytest.raises(ConfigError, match=r"row 2 \(bx"):
        added_rows(make_catalog([1.0, 2.0], [3.0, 4.0], ["a", "bx"]), names, ra, dec, None)
    with pytest.raises(ConfigError, match="fewer than the cube's 2 sources"):
        added_rows(make_catalog([1.0], [3.0], ["a"]), names, ra, dec, None)


def test_proper_motions_of_the_cube_sources_are_bound_by_the_fingerprint():
    from spxbatch.pipeline.fingerprint import catalog_fingerprint

    def cat(pmra: list[float]):
        n = len(pmra)
        return make_catalog([1.0, 2.0, 5.0][:n], [3.0, 4.0, 6.0][:n], ["a", "bb", "ccc"][:n],
                            extra={"pmra": np.array(pmra), "pmdec": np.zeros(n)})

    old = cat([10.0, 20.0])
    fingerprint = catalog_fingerprint(old)
    args = (old.name, old.ra, old.dec, fingerprint)
    assert added_rows(cat([10.0, 20.0, 30.0]), *args) == 1
    with pytest.raises(ConfigError, match="proper motions"):
        added_rows(cat([10.0, 25.0, 30.0]), *args)


def test_carried_parts_assemble_to_the_same_cube(sim_run):
    """The rows of a real cube, carried over as parts keyed to its plan's image ids, assemble to that cube."""
    cube = open_cube(sim_run).load()
    obs, failures = cube_rows(cube)
    plan = Plan.load(sim_run.with_suffix(".run"))
    images = plan.images.set_index("image_id")
    keys = {(str(images.at[i, "obs_id"]), int(images.at[i, "detector"])): int(i) for i in images.index[::-1]}
    parts = pd.concat([conform_part(pa.Table.from_pandas(t, preserve_index=False)).to_pandas()
                       for _, t in carried_parts(obs, failures, keys, "2026-01-01T00:00:00+00:00")])
    config = config_from_dict(json.loads(cube.attrs["config"]))
    again = build_dataset(read_catalog(config.catalog), plan, parts, config, config.photometry_config)
    assert_cubes_equal(cube, again)
    assert cube.sizes["failure"] > 0


def test_unplanned_images_join_the_plan_numbered_after_it():
    from spxbatch.pipeline.update.unplanned import carried_only, with_unplanned

    plan = Plan(pd.DataFrame({"image_id": [0, 1], "obs_id": ["A", "B"], "detector": [1, 2], "version": [V1, V1],
                              "url": ["u0", "u1"], "poly_ra": [[1.0], [1.0]], "poly_dec": [[2.0], [2.0]]}),
                pd.DataFrame({"source_index": [0, 1], "image_id": [0, 1]}), {"fingerprint": "f"})
    obs = pd.DataFrame({"source_index": [2, 0, 0], "obs_id": ["D", "D", "A"], "band": np.array([2, 2, 1], np.int8)})
    failures = pd.DataFrame({"source_index": [1, 3], "obs_id": ["D", "E"], "band": [2, 3], "url": ["uD", "uE"],
                             "reason": ["edge", "off_image"]})
    grown = with_unplanned(plan, not_planned(plan.images, measured_images(obs.assign(processing=V1), failures)),
                           obs, failures)
    assert grown.images["image_id"].tolist() == [0, 1, 2, 3] and carried_only(grown.images).tolist() == [
        False, False, True, True]
    assert grown.images["url"].tolist() == ["u0", "u1", "uD", "uE"]
    assert grown.pairs.values.tolist() == [[0, 0], [1, 1], [0, 2], [1, 2], [2, 2], [3, 3]]
    assert list(grown.sources_by_image()[2]) == [0, 1, 2] and grown.meta["fingerprint"] == "f"
    assert not carried_only(plan.images).any()
