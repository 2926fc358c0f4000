"""Every measurement says which file it came from: release folder, processing tag and pipeline VERSION, as
the truth has them; and each source which releases its spectrum mixes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spxbatch.cube.store import open_cube


def test_each_measurement_records_its_files_processing(sim_run, sim_archive):
    cube = open_cube(sim_run).load()
    files = pd.read_csv(sim_archive.truth["files"])
    files = files[~files.superseded]
    by_exposure = files.set_index(["obs_id", "detector"])
    keys = list(zip(cube["obs_id"].values.astype(str), cube["band"].values.astype(int), strict=True))
    assert len(keys) > 100
    assert list(cube["processing"].values.astype(str)) == [by_exposure.loc[k, "version"] for k in keys]
    assert list(cube["pipeline_version"].values.astype(str)) == [by_exposure.loc[k, "pipeline_version"]
                                                               for k in keys]
    assert set(cube["release"].values.astype(str)) == {"qr2"}
    measured = cube["row_size"].values > 0
    good_any = np.bincount(np.repeat(np.arange(cube.sizes["source"]), cube["row_size"].values),
                           weights=cube["good"].values, minlength=cube.sizes["source"]) > 0
    assert set(cube["source_releases"].values[good_any]) == {"qr2/6"}
    assert set(cube["source_releases"].values[~measured]) <= {""}
