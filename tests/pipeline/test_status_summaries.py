"""`spxbatch status` counts images from summaries (the plan stage's record, the image table's footer) and the
parts' metadata: a plan's pairs, one row per source and image, are never read."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from spxbatch.pipeline.rundir import RunDir
from spxbatch.pipeline.status import run_status


def _run_dir(tmp_path) -> RunDir:
    rd = RunDir(tmp_path / "cube.run").create()
    rd.write_config({"catalog": "cat.csv", "archive": "irsa", "output": str(tmp_path / "cube.zarr")})
    rows = pd.DataFrame({"source_index": [0], "mjd": [60000.0], "band": [1], "obs_id": ["o"], "x": [1.0],
                         "y": [1.0], "image_id": [0]})
    for i in range(3):
        rd.write_part(i, rows.assign(image_id=i), {"image_id": i, "error": "failed: HTTP 503" if i == 2 else ""})
    return rd


def test_counts_come_from_the_plan_summary_without_the_pairs(tmp_path):
    rd = _run_dir(tmp_path)
    rd.mark_stage("plan", images=5, pairs=10**7, sources_planned=10**6)
    (rd.plan_dir / "pairs-x").mkdir()
    (rd.plan_dir / "pairs-x" / "part_00000.parquet").write_bytes(b"not parquet: reading it would fail")
    text = run_status(rd.path)
    assert "Images: 5 planned, 2 measured, 1 failed, 2 not yet done" in text
    assert "failed image 2: failed: HTTP 503" in text


def test_a_plan_not_yet_marked_is_counted_from_the_image_table_footer(tmp_path):
    rd = _run_dir(tmp_path)
    pq.write_table(pa.table({"image_id": list(range(4))}), rd.plan_dir / "images.parquet")
    assert "Images: 4 planned, 2 measured, 1 failed, 1 not yet done" in run_status(rd.path)
