"""Run directory: atomic parts, resume bookkeeping, state."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spxbatch.pipeline.rundir import RunDir


def test_parts_state_and_failed_retry(tmp_path):
    rd = RunDir(tmp_path / "run").create()
    t = pd.DataFrame({"source_index": np.arange(3), "flux": [1.0, 2.0, 3.0]})
    rd.write_part(7, t, {"error": None, "bytes": 10})
    rd.write_part(9, t.iloc[:1], {"error": "HTTP 503 after 5 attempts"})
    assert rd.finished_images() == {7}  # the failed image is retried on a rerun
    assert rd.finished_images(retry_failed=False) == {7, 9}
    assert rd.part_meta(9)["error"].startswith("HTTP 503")
    assert rd.part_meta(8) is None
    both = rd.read_parts()
    assert len(both) == 4
    assert not list(rd.parts_dir.glob(".*tmp"))  # no temporary files left behind
    rd.mark_stage("plan", images=2)
    rd.mark_stage("measure")
    assert rd.stage_done("plan") and rd.stage_done("measure")
    rd.clear_stage("measure")
    assert rd.stage_done("plan") and not rd.stage_done("measure")


def _measured_rows(n: int, image_id: int) -> pd.DataFrame:
    """Rows as measure_region writes them (every photometry column, in its dtype)."""
    from spxbatch.photometry.columns import empty_table

    t = pd.DataFrame(empty_table(n, {"source_index": np.arange(n), "mjd": 60000.0, "band": 3, "obs_id": "o",
                                     "x": 1.0, "y": 2.0, "flags": 5, "psf_zone": 2, "measured": True}))
    t["image_id"] = np.int64(image_id)
    return t


def _mixed_rows(image_id: int) -> pd.DataFrame:
    """A measured row and an unmeasured one concatenated, as measure_image does: the integer columns the
    unmeasured row lacks come out float (NaN) -- the case that broke assembly."""
    unmeasured = pd.DataFrame({"source_index": np.array([9], np.int64), "obs_id": ["o"],
                               "band": np.array([3], np.int8), "measured": [False], "status": ["off_image"]})
    t = pd.concat([_measured_rows(1, image_id).drop(columns="image_id"), unmeasured], ignore_index=True)
    t["image_id"] = np.int64(image_id)
    assert t["flags"].dtype == np.float64 and t["psf_zone"].dtype == np.float64
    return t


def test_parts_are_written_and_read_in_the_schema_types(tmp_path):
    from spxbatch.pipeline.rundir import PART_SCHEMA

    rd = RunDir(tmp_path / "run").create()
    rd.write_part(1, _measured_rows(2, 1), {"error": None})
    rd.write_part(2, _mixed_rows(2), {"error": None})
    only_unmeasured = _mixed_rows(3).iloc[1:][["source_index", "obs_id", "band", "measured", "status", "image_id"]]
    rd.write_part(3, only_unmeasured, {"error": None})
    for i in (1, 2, 3):
        assert pq.read_schema(rd.part_path(i)).remove_metadata() == PART_SCHEMA
    assert rd.part_meta(2) == {"error": None}
    parts = rd.read_parts()  # raised ArrowTypeError (double vs int32) when parts were typed by their values
    assert len(parts) == 5 and parts["flags"].dtype == np.int32 and parts["psf_zone"].dtype == np.int16
    unmeasured = parts[~parts["measured"]]
    assert (unmeasured["flags"] == 0).all() and (unmeasured["psf_zone"] == -1).all()  # the schema's fill
    assert parts.loc[parts["measured"], "flags"].tolist() == [5, 5, 5]
    assert parts["status"].tolist() == ["ok", "ok", "ok", "off_image", "off_image"]


def test_parts_typed_by_their_values_are_read_in_the_schema(tmp_path):
    """Parts a run wrote before the schema (flags double in one, int32 in another) assemble on a rerun."""
    rd = RunDir(tmp_path / "run").create()
    for i, t in ((1, _measured_rows(1, 1)), (2, _mixed_rows(2))):
        pq.write_table(pa.Table.from_pandas(t, preserve_index=False), rd.part_path(i))
    with pytest.raises(pa.ArrowTypeError):  # what the old reader did with them
        pa.concat_tables([pq.read_table(rd.part_path(i)) for i in (1, 2)], promote_options="default")
    parts = rd.read_parts()
    assert parts["flags"].dtype == np.int32 and parts["flags"].tolist() == [5, 5, 0]


def test_a_part_column_outside_the_schema_is_refused(tmp_path):
    rd = RunDir(tmp_path / "run").create()
    with pytest.raises(ValueError, match="not in the part schema"):
        rd.write_part(1, _measured_rows(1, 1).assign(flux_typo=1.0), {"error": None})
    assert not rd.part_path(1).exists()


def test_the_part_schema_and_the_cube_schema_agree():
    """A measurement column's type is the same in the parts and in the cube (no cast that changes values)."""
    from spxbatch.cube.assemble import OBS_VARIABLES
    from spxbatch.pipeline.rundir import PART_SCHEMA

    shared = [name for name in OBS_VARIABLES if name in PART_SCHEMA.names]
    assert len(shared) == len(OBS_VARIABLES)  # every cube measurement column comes from the parts
    for name in shared:
        cube_dtype = OBS_VARIABLES[name][0]
        part_type = PART_SCHEMA.field(name).type
        expected = pa.string() if cube_dtype == "str" else pa.from_numpy_dtype(np.dtype(cube_dtype))
        assert part_type == expected, name
