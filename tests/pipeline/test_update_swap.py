"""The end of an update killed between any two of its steps (the new cube written, the old one renamed, the
new one renamed into place, the backup removed, the run directory handed over): a rerun of `update_cube`
finishes it, and until the first rename the old cube is the one in place."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from spxbatch.cube.assemble import assemble_cube
from spxbatch.cube.store import open_cube, write_cube
from spxbatch.pipeline.update import update_cube
from spxbatch.pipeline.update.swap import UpdatePaths

RESULT = {"cube": "", "kinds": {"new": 1, "superseding": 0, "retry": 0, "new_sources": 0, "old": 0},
          "kept_unplanned": 0, "sources_added": 0, "fetch_bytes": 0, "unknown_sizes": 0}


def _cube(label: str) -> xr.Dataset:
    import pandas as pd

    m = pd.DataFrame({"source_index": [0], "flux": [1.0], "flux_err": [0.1], "wavelength": [1.0], "band": [1],
                      "good": [True], "mjd": [60000.0], "obs_id": ["2025W18_2A_0058_1"]})
    return assemble_cube(np.array(["a"]), np.array([1.0]), np.array([2.0]), m, attrs={"label": label})


#: The on-disk steps of the end of an update, in order (each as a kill would leave it after that step).
STEPS = ("new written", "old renamed", "new renamed", "backup removed", "old run dir removed", "run dir moved")


def _state_after(step: int, paths: UpdatePaths, run_dir: Path) -> None:
    """Leave the files as an update killed right after STEPS[step] does."""
    write_cube(_cube("new"), paths.new)
    (paths.work / "parts").mkdir(parents=True)
    (paths.work / "config.json").write_text("{}")
    paths.record.write_text(json.dumps({"phase": "swap", "when": "t", "run_dir": str(run_dir), "keep": True,
                                        "result": {**RESULT, "cube": str(paths.cube)}}))
    actions = (lambda: os.replace(paths.cube, paths.backup), lambda: os.replace(paths.new, paths.cube),
               lambda: shutil.rmtree(paths.backup), lambda: shutil.rmtree(run_dir),
               lambda: os.replace(paths.work, run_dir))
    for action in actions[:step]:
        action()


@pytest.mark.parametrize("step", range(len(STEPS)), ids=list(STEPS))
def test_an_update_killed_while_swapping_is_finished_by_the_rerun(step, tmp_path):
    paths = UpdatePaths.of(tmp_path / "cube.zarr")
    run_dir = tmp_path / "cube.run"
    write_cube(_cube("old"), paths.cube)
    (run_dir / "parts").mkdir(parents=True)
    (run_dir / "config.json").write_text('{"old": true}')
    _state_after(step, paths, run_dir)
    if step == 0:
        assert open_cube(paths.cube).attrs["label"] == "old"  # killed before the first rename: the old cube
    if step == 1:
        assert open_cube(paths.backup).attrs["label"] == "old"  # the old cube, whole, beside
    result = update_cube(paths.cube)  # nothing to plan: the record says the new cube is complete
    assert result.resumed_swap and result.kinds == RESULT["kinds"]
    assert open_cube(paths.cube).attrs["label"] == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.run", "cube.zarr"]
    assert (run_dir / "config.json").read_text() == "{}"  # the update's run directory took the old one's place


def test_a_backup_that_is_not_a_cube_is_never_removed(tmp_path):
    """`CUBE.old` of the user's (not a spxbatch cube) blocks the swap rather than being deleted."""
    paths = UpdatePaths.of(tmp_path / "cube.zarr")
    write_cube(_cube("old"), paths.cube)
    paths.backup.mkdir()
    (paths.backup / "mine.txt").write_text("keep me")
    _state_after(0, paths, tmp_path / "cube.run")
    with pytest.raises(OSError):
        update_cube(paths.cube)
    assert (paths.backup / "mine.txt").read_text() == "keep me"
    assert open_cube(paths.cube).attrs["label"] == "old"
