"""A mixed archive through the whole pipeline (QR2 files, their R7 reprocessings including retry tags, QR3
wide and deep): planned through TAP over HTTP and through a local mirror's index, each (source, exposure,
band) is measured once, from the newest processing, and every measurement records the release, tag and
pipeline version of the file it came from, as the truth has them."""

from __future__ import annotations

import pandas as pd
import pytest

from spxbatch.cube.export import measurements_table
from spxbatch.cube.store import open_cube
from spxbatch.pipeline.executor import SerialExecutor
from spxbatch.pipeline.stages import run
from spxbatch.sim.server import serve_archive

KEY = ["source", "obs_id", "band"]


@pytest.fixture(scope="module", params=["http", "local"])
def mixed_run(request, sim_archive_mixed, tmp_path_factory):
    """The cube's measurements of a run on the mixed archive, planned over HTTP (TAP) or from the files."""
    out = tmp_path_factory.mktemp(f"mixed_{request.param}") / "cube.zarr"
    if request.param == "http":
        with serve_archive(sim_archive_mixed.root) as srv:
            run(sim_archive_mixed.catalog, out, archive=srv.url, progress=False, executor=SerialExecutor())
    else:
        run(sim_archive_mixed.catalog, out, archive=str(sim_archive_mixed.root), progress=False,
            executor=SerialExecutor())
    return open_cube(out).load()


@pytest.fixture(scope="module")
def truth_mixed(sim_archive_mixed) -> pd.DataFrame:
    """The truth's (source, file) rows, keyed like the cube's measurements."""
    t = pd.read_parquet(sim_archive_mixed.truth["measurements"])
    return t.rename(columns={"name": "source", "detector": "band"})


def test_the_archive_really_mixes_processings(truth_mixed):
    """What the checks below rely on: superseded QR2 and R7 files, retry tags, both layouts, both releases."""
    t = truth_mixed
    assert set(t.loc[t.superseded, "layout"]) == {"QR2", "R7"}
    assert t.loc[~t.superseded, "version"].str.startswith("l2b_retry").any()
    assert t.loc[t.superseded, "version"].str.startswith("l2b-v26").any()  # the retried reprocessing
    assert set(t["release"]) == {"qr2", "qr3"}
    assert t.duplicated(KEY).any()  # some (source, exposure, band) have more than one file


def test_each_exposure_measured_once_from_the_newest_processing(mixed_run, truth_mixed):
    m = measurements_table(mixed_run)
    assert not m.duplicated(KEY).any()
    current = truth_mixed[~truth_mixed.superseded]
    assert not current.duplicated(KEY).any()
    # exactly the truth's newest files' (source, exposure, band): nothing missing, nothing superseded
    assert set(map(tuple, m[KEY].to_numpy())) == set(map(tuple, current[KEY].to_numpy()))
    j = m.merge(current, on=KEY, suffixes=("", "_true"), validate="one_to_one")
    assert len(j) == len(m) > 500
    assert (j["processing"] == j["version"]).all()
    assert (j["release"] == j["release_true"]).all()
    assert (j["pipeline_version"] == j["pipeline_version_true"]).all()
    assert {"l2b_retry-v26-2026-197", "l2b-v26-2026-196", "l2b-v27-2026-222"} <= set(j["processing"])


def test_source_releases_list_the_mix_of_good_measurements(mixed_run, truth_mixed):
    """Per source, the releases and pipeline majors of its good measurements, derived from the truth's
    files (not the cube's own provenance columns)."""
    m = measurements_table(mixed_run).merge(truth_mixed[~truth_mixed.superseded], on=KEY, suffixes=("", "_true"))
    good = m[m["good"].astype(bool)]
    labels = good["release_true"] + "/" + good["pipeline_version_true"].str.split(".").str[0]
    expected = labels.groupby(good["source"]).agg(lambda s: ", ".join(sorted(set(s))))
    got = pd.Series(mixed_run["source_releases"].values.astype(str), index=mixed_run["source"].values.astype(str))
    assert got[expected.index].to_dict() == expected.to_dict()
    assert (got.drop(expected.index) == "").all()
    assert (expected == "qr2/6, qr2/7, qr3/7").sum() >= 10
