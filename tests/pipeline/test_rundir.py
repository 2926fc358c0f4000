"""Run directory: atomic parts, resume bookkeeping, state."""

import numpy as np
import pandas as pd

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
