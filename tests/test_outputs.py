"""Plots and exports of a cube: figure contents against the cube, and exports that round-trip."""

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table

from spxbatch.cube import assemble_cube, open_cube, write_cube
from spxbatch.export import export_csv, export_parquet, export_votable
from spxbatch.plots import plot_cube, source_figure, summary_figure


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    rng = np.random.default_rng(3)
    n_obs = 60
    sidx = rng.integers(0, 3, n_obs)
    flux = rng.normal(100, 30, n_obs)
    flux[:5] = rng.normal(0, 1, 5)  # faint points become upper limits
    err = np.full(n_obs, 2.0)
    good = flux / err >= 5
    flags = np.zeros(n_obs, dtype=np.int32)
    flags[5:8] = 1 << 10  # HOT: rejected
    good[5:8] = False
    m = pd.DataFrame({
        "source_index": sidx, "flux": flux, "flux_err": err, "flux_aperture": flux * 0.8,
        "wavelength": rng.uniform(0.8, 4.9, n_obs), "bandwidth": np.full(n_obs, 0.03),
        "band": rng.integers(1, 7, n_obs), "mjd": 60800 + rng.uniform(0, 30, n_obs),
        "obs_id": [f"2025W18_2B_{i:04d}_1" for i in range(n_obs)], "flags": flags,
        "condition": np.zeros(n_obs, dtype=np.int64), "good": good, "x": rng.uniform(0, 100, n_obs),
        "y": rng.uniform(0, 100, n_obs), "aperture_radius": np.full(n_obs, 2.5)})
    ds = assemble_cube(np.array(["alpha", "beta", "gamma", "lonely"]), np.array([10.0, 10.1, 10.2, 11.0]),
                       np.array([-5.0, -5.1, -5.2, -6.0]), m)
    path = tmp_path_factory.mktemp("cube") / "run.zarr"
    write_cube(ds, path)
    return path


def _points(ax):
    """(x, y) offsets of every scatter collection on an axis, by label."""
    out = {}
    for coll in ax.collections:
        offs = coll.get_offsets()
        if len(offs) and coll.get_label() and not coll.get_label().startswith("_"):
            out[coll.get_label()] = np.asarray(offs)
    return out


def test_source_figure_matches_cube(cube):
    ds = open_cube(cube).load()
    src = ds.spx.source("beta")
    fig = source_figure(ds, "beta")
    ax_s, _, ax_t, _ = fig.axes  # spectrum, its colour bar, light curve, its colour bar
    pts = _points(ax_s)
    good = src["good"].values
    assert len(pts["good"]) == good.sum()
    np.testing.assert_allclose(np.sort(pts["good"][:, 0]), np.sort(src["wavelength"].values[good]))
    assert ax_s.get_xlabel() == "wavelength (um)" and "uJy" in ax_s.get_ylabel()
    assert ax_t.get_xlabel() == "MJD"
    assert "beta" in fig._suptitle.get_text() and "RA 10.10000" in fig._suptitle.get_text()
    n_drawn = sum(len(v) for k, v in pts.items() if k in ("good", "rejected", "3σ upper limit"))
    assert n_drawn == src.sizes["obs"]


def test_summary_and_plot_cube_files(cube, tmp_path):
    ds = open_cube(cube).load()
    fig = summary_figure(ds)
    bars = fig.axes[1].patches
    assert sum(b.get_height() for b in bars[:6]) == ds.sizes["obs"]
    paths = plot_cube(cube, ["alpha", "lonely"], tmp_path / "plots", workers=2)
    assert [p.name for p in paths] == ["summary.png", "alpha.png", "lonely.png"]
    assert all(p.stat().st_size > 10_000 for p in paths)
    with pytest.raises(KeyError, match="nobody"):
        plot_cube(cube, ["nobody"], tmp_path / "plots")


def test_exports_round_trip(cube, tmp_path):
    ds = open_cube(cube).load()
    paths = export_csv(ds, tmp_path / "csv")
    assert sorted(p.stem for p in paths) == ["alpha", "beta", "gamma"]
    lc = pd.read_csv(tmp_path / "csv" / "gamma.csv")
    src = ds.spx.source("gamma")
    assert list(lc.columns[:15]) == ["obs_id", "mjd", "flux", "flux_error", "mag_ab", "mag_ab_error", "wavelength",
                                     "bandwidth", "band", "flag", "flag_binary", "pix_x", "pix_y",
                                     "is_upper_limit", "snr"]
    np.testing.assert_allclose(lc["flux"], src["flux"].values)
    np.testing.assert_allclose(lc["mjd"], src["mjd"].values)

    pq = pd.read_parquet(export_parquet(ds, tmp_path / "all.parquet"))
    np.testing.assert_array_equal(pq["flux"], ds["flux"].values)
    np.testing.assert_array_equal(pq["source"], ds["source"].values[ds["source_index"].values])

    vt = Table.read(export_votable(ds, tmp_path / "all.xml"), format="votable")
    np.testing.assert_allclose(vt["lambda"], ds["wavelength"].values)
    np.testing.assert_allclose(vt["flux_err"], ds["flux_err"].values)
    assert str(vt["flux"].unit) == "uJy"
    np.testing.assert_array_equal(vt["flags"], ds["flags"].values)
