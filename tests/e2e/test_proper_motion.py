"""High-proper-motion stars (3-6"/yr, catalog epoch J2016.0, so 5-10 px from their catalog positions by the
survey) are measured where they are at each exposure: positions, the epoch used, and pulls that pass the
isolated-source bars within what ~300 measurements can tell; without their motions they are missed. The
simulator moves them with astropy's space motion, spxbatch with its own code."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spxbatch.cube.store import open_cube
from spxbatch.pipeline.executor import SerialExecutor
from spxbatch.pipeline.stages import run
from spxbatch.sim import make_archive

MOVERS = 24


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return make_archive(tmp_path_factory.mktemp("pm"), npix=256, seed=7, n_visits=8, moving_stars=MOVERS)


@pytest.fixture(scope="module")
def truth(archive):
    m = pd.read_parquet(archive.truth["measurements"])
    return m[~m.superseded & m.name.str.contains("-pm")].drop_duplicates(["name", "obs_id", "detector"])


def _mover_rows(cube_path, truth) -> pd.DataFrame:
    cube = open_cube(cube_path).load()
    names = cube["source"].values.astype(str)
    idx = np.repeat(np.arange(names.size), cube["row_size"].values)
    rows = pd.DataFrame({v: cube[v].values for v in
                         ("obs_id", "band", "x", "y", "flux", "flux_err", "good", "mjd", "position_mjd")})
    rows["name"] = names[idx]
    return rows.merge(truth, left_on=["name", "obs_id", "band"], right_on=["name", "obs_id", "detector"],
                      suffixes=("", "_true"))


def test_moving_stars_are_measured_where_they_are(archive, truth, tmp_path):
    out = tmp_path / "pm.zarr"
    run(archive.catalog, out, archive=str(archive.root), progress=False, executor=SerialExecutor())
    rows = _mover_rows(out, truth)
    assert rows.name.nunique() >= MOVERS - 2 and len(rows) >= 200
    assert np.abs(rows.x - rows.x_true).max() < 0.01 and np.abs(rows.y - rows.y_true).max() < 0.01
    np.testing.assert_allclose(rows.position_mjd, rows.mjd, atol=1e-4)  # moved to each exposure's time
    good = rows[rows.good]
    pull = (good.flux - good.flux_ujy) / good.flux_err
    med, width = float(np.median(pull)), float(1.4826 * np.median(np.abs(pull - np.median(pull))))
    # the isolated-source bars (+-0.05, 0.95-1.05) widened by what ~len(good) pulls can resolve (3 sigma)
    slack = 3 * 1.25 / np.sqrt(len(good))
    print(f"\nmovers: {len(rows)} measurements, {len(good)} good, median pull {med:+.3f}, width {width:.3f}")
    assert len(good) >= 150 and abs(med) < 0.05 + slack and abs(width - 1) < 0.05 + slack, (med, width)
    bright = good[good.flux / good.flux_err > 100]
    assert abs(np.median(bright.flux / bright.flux_ujy - 1)) < 0.005


def test_without_their_motions_they_are_missed(archive, truth, tmp_path):
    catalog = pd.read_csv(archive.catalog).drop(columns=["pmra", "pmdec", "epoch"])
    path = tmp_path / "static.csv"
    catalog.to_csv(path, index=False)
    out = tmp_path / "static.zarr"
    run(path, out, archive=str(archive.root), progress=False, executor=SerialExecutor())
    rows = _mover_rows(out, truth)
    assert np.hypot(rows.x - rows.x_true, rows.y - rows.y_true).min() > 3
    assert np.isnan(rows.position_mjd).all()
    good = rows[rows.good]
    assert len(good) == 0 or abs(np.median((good.flux - good.flux_ujy) / good.flux_err)) > 3
