"""A high-proper-motion star (5"/yr, catalog epoch J2016.0, so ~8 px from its catalog position by the
survey) is measured where it is at each exposure: positions, fluxes and the epoch used; without its motion
it would be missed. The simulator moves it with astropy's space motion, spxbatch with its own code."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spxbatch.cube.store import open_cube
from spxbatch.pipeline.executor import SerialExecutor
from spxbatch.pipeline.stages import run
from spxbatch.sim import make_archive

STAR = "demo-pm001"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return make_archive(tmp_path_factory.mktemp("pm"), npix=128, seed=7, n_visits=8, moving_star=True)


def _star_rows(cube_path, truth) -> pd.DataFrame:
    cube = open_cube(cube_path).load()
    i = list(cube["source"].values).index(STAR)
    start, n = int(cube["obs_start"].values[i]), int(cube["row_size"].values[i])
    rows = pd.DataFrame({v: cube[v].values[start:start + n] for v in
                         ("obs_id", "band", "x", "y", "flux", "flux_err", "good", "mjd", "position_mjd")})
    t = truth[truth.name == STAR].drop_duplicates(["obs_id", "detector"])
    return rows.merge(t, left_on=["obs_id", "band"], right_on=["obs_id", "detector"], suffixes=("", "_true"))


@pytest.fixture(scope="module")
def truth(archive):
    m = pd.read_parquet(archive.truth["measurements"])
    return m[~m.superseded]


def test_the_moving_star_is_measured_where_it_is(archive, truth, tmp_path):
    out = tmp_path / "pm.zarr"
    run(archive.catalog, out, archive=str(archive.root), progress=False, executor=SerialExecutor())
    rows = _star_rows(out, truth)
    assert len(rows) >= 10
    assert np.abs(rows.x - rows.x_true).max() < 0.01 and np.abs(rows.y - rows.y_true).max() < 0.01
    np.testing.assert_allclose(rows.position_mjd, rows.mjd, atol=1e-4)  # moved to each exposure's time
    good = rows[rows.good]
    assert len(good) >= 8
    pull = (good.flux - good.flux_ujy) / good.flux_err
    assert abs(np.median(pull)) < 1.0 and abs(np.median(good.flux / good.flux_ujy - 1)) < 0.02


def test_without_its_motion_it_would_be_missed(archive, truth, tmp_path):
    catalog = pd.read_csv(archive.catalog).drop(columns=["pmra", "pmdec", "epoch"])
    path = tmp_path / "static.csv"
    catalog.to_csv(path, index=False)
    out = tmp_path / "static.zarr"
    run(path, out, archive=str(archive.root), progress=False, executor=SerialExecutor())
    rows = _star_rows(out, truth)
    if len(rows):
        assert np.hypot(rows.x - rows.x_true, rows.y - rows.y_true).min() > 5
        assert np.isnan(rows.position_mjd).all()
        assert not (rows.good & (np.abs(rows.flux / rows.flux_ujy - 1) < 0.1)).any()
