"""The output contract: ragged layout, statuses, spectral combination, Zarr v3 round trip, accessor."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from spxbatch.cube.assemble import assemble_cube, combine_spectrum
from spxbatch.cube.channels import channel_centers_um
from spxbatch.cube.store import open_cube, write_cube


def _measurements():
    return pd.DataFrame({
        "source_index": [2, 0, 2, 0, 0],
        "flux": [10.0, 4.0, 12.0, 2.0, -1.0],
        "flux_err": [1.0, 0.2, 1.0, 0.1, 0.5],
        "wavelength": [1.0, 1.0, 2.0, 1.0005, 4.5],
        "bandwidth": [0.02, 0.02, 0.05, 0.02, 0.04],
        "band": [1, 1, 3, 1, 6],
        "mjd": [60001.0, 60005.0, 60000.0, 60002.0, 60002.0],
        "obs_id": ["2025W18_2B_0001_1", "2025W18_2B_0002_1", "2025W18_2B_0003_1", "2025W18_2B_0004_1",
                   "2025W18_2B_0004_1"],
        "good": [True, True, True, True, False],
        "flags": np.zeros(5, dtype=np.int32),
    })


def test_ragged_layout_and_status():
    failures = pd.DataFrame({"source_index": [1, 0], "obs_id": ["x", "y"], "band": [2, 2],
                             "url": ["u1", "u2"], "reason": ["failed: HTTP 503", "failed: HTTP 500"]})
    ds = assemble_cube(np.array(["a", "b", "c", "d"]), np.zeros(4), np.zeros(4), _measurements(), failures,
                       planned=np.array([True, True, True, False]))
    assert ds["row_size"].values.tolist() == [3, 0, 2, 0]
    assert ds["obs_start"].values.tolist() == [0, 3, 3, 5]
    # grouped by source, ordered by (mjd, band) inside a source
    assert ds["source_index"].values.tolist() == [0, 0, 0, 2, 2]
    assert ds["mjd"].values[:3].tolist() == [60002.0, 60002.0, 60005.0]
    assert ds["band"].values[:2].tolist() == [1, 6]
    assert ds["status"].values.tolist() == ["ok", "failed", "ok", "no_coverage"]
    assert "HTTP 503" in ds["status_detail"].values[1]
    assert "HTTP 500" in ds["status_detail"].values[0]  # partial failures are reported too
    assert ds.sizes["failure"] == 2 and ds.sizes["channel"] == 102
    for name, var in ds.variables.items():
        assert "units" in var.attrs and "long_name" in var.attrs, name
    # negative fluxes are data
    assert -1.0 in ds["flux"].values


def test_spectrum_is_inverse_variance_mean_of_good_points():
    m = _measurements()
    flux, err, nobs = combine_spectrum(m["source_index"].to_numpy(), m["wavelength"].to_numpy(),
                                       m["band"].to_numpy(), m["flux"].to_numpy(), m["flux_err"].to_numpy(),
                                       m["good"].to_numpy(), 3)
    centers, bands = channel_centers_um()
    ch = int(np.flatnonzero((bands == 1) & (np.abs(centers - 1.0) == np.abs(centers[bands == 1] - 1.0).min()))[0])
    w = np.array([1 / 0.2**2, 1 / 0.1**2])
    assert flux[0, ch] == pytest.approx((4.0 * w[0] + 2.0 * w[1]) / w.sum())
    assert err[0, ch] == pytest.approx(1 / np.sqrt(w.sum()))
    assert nobs[0, ch] == 2
    assert nobs[0].sum() == 2  # the bad (good=False) band-6 point is not combined
    assert np.isnan(flux[1]).all()


def test_zarr_round_trip_and_accessor(tmp_path):
    ds = assemble_cube(np.array(["a", "b", "c"]), np.array([1.0, 2, 3]), np.array([4.0, 5, 6]), _measurements())
    path = write_cube(ds, tmp_path / "out.zarr")
    assert (path / "zarr.json").exists()
    back = open_cube(path)
    for name in ds.variables:
        np.testing.assert_array_equal(back[name].values, ds[name].values, err_msg=name)
    one = back.spx.source("c")
    assert one.sizes["obs"] == 2 and float(one["ra"]) == 3.0
    df = back.spx.dataframe("a")
    assert list(df["mjd"]) == sorted(df["mjd"])
    with pytest.raises(KeyError, match="no source named"):
        back.spx.source("zzz")
    # the dimension coordinates read straight from Zarr are xarray's own, decoded values
    plain = xr.open_zarr(path, zarr_format=3)
    for dim in ("source", "band_id", "channel"):
        assert back[dim].values.tolist() == plain[dim].values.tolist(), dim
    assert back["source"].dtype == object and back.indexes["source"].get_loc("b") == 1


def test_reading_one_source_starts_no_distributed_machinery(tmp_path):
    """Opening a cube and reading one source's rows reads them in this process: dask's look for a distributed
    Client (the import alone costs tenths of a second, more than the read) is never made."""
    ds = assemble_cube(np.array(["a", "b", "c"]), np.array([1.0, 2, 3]), np.array([4.0, 5, 6]), _measurements())
    path = write_cube(ds, tmp_path / "out.zarr")
    code = ("import sys, spxbatch; ds = spxbatch.open_cube(sys.argv[1]); df = ds.spx.dataframe('a');"
            "print(len(df), 'distributed' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["3", "False"]


def test_variability_statistics_separate_variable_from_constant_sources():
    from spxbatch.cube.variability import variability_statistics

    rng = np.random.default_rng(5)
    n = 400
    sidx = np.repeat([0, 1], n // 2)
    wav = rng.uniform(1.12, 1.6, n)  # band 2, several channels
    band = np.full(n, 2)
    spectrum = 100.0 * (wav / 1.3) ** -2  # a steep spectrum: a flat per-band model would call it variable
    mjd = rng.uniform(0, 100, n)
    true = spectrum * np.where(sidx == 1, 1 + 0.2 * np.sin(mjd / 5), 1.0)
    err = np.full(n, 1.0)
    flux = true + rng.normal(0, 1, n)
    good = np.ones(n, dtype=bool)
    spec, _, _ = combine_spectrum(sidx, wav, band, flux, err, good, 2)
    st = variability_statistics(sidx, band, wav, flux, err, good, spec)
    assert 0.7 < st["var_chi2_red"][0, 1] < 1.4  # constant source: chi2_red ~ 1 despite the slope
    assert st["var_chi2_red"][1, 1] > 20  # 20% variable
    assert st["var_amplitude"][0, 1] < 0.5
    assert 8 < st["var_amplitude"][1, 1] < 20  # ~ 0.2 * 100 / sqrt(2) in RMS
    assert st["var_ngood"][0, 1] == n // 2 and st["var_ngood"][0, 0] == 0
    assert np.isnan(st["var_mean_flux"][0, 0])


def test_requalify_changes_good_spectrum_and_keeps_measurements(tmp_path):
    from spxbatch.cube.requalify import requalify

    m = _measurements()
    m["snr"] = m["flux"] / m["flux_err"]
    m["condition"] = np.zeros(len(m), dtype=np.int64)
    m.loc[0, "flags"] = 1 << 10  # HOT
    m.loc[1, "flags"] = 1 << 26  # R7's BLOOM: a saturated core is not good, in qc as when measured
    m["good"] = True
    ds = assemble_cube(np.array(["a", "b", "c"]), np.zeros(3), np.zeros(3), m)
    path = write_cube(ds, tmp_path / "c.zarr")
    new = requalify(path, {"snr_threshold": 15.0})
    back = open_cube(path).load()
    assert back["good"].values.tolist() == new["good"].values.tolist()
    # snr: 20, 20, 10, 12 for the first four rows after ordering; the HOT one is bad by default
    flux_by_good = dict(zip(back["flux"].values.tolist(), back["good"].values.tolist(), strict=True))
    assert flux_by_good[10.0] is False  # HOT pixel
    assert flux_by_good[12.0] is False  # snr 12 < 15
    assert flux_by_good[2.0] is True  # snr 20
    assert flux_by_good[4.0] is False  # snr 20, but BLOOM
    np.testing.assert_array_equal(back["flux"].values, ds["flux"].values)
    assert int(back["spectrum_nobs"].values.sum()) == int(back["good"].values.sum())


def test_qc_keeps_the_measured_options_and_refuses_to_change_the_flux_source(tmp_path):
    """`qc` overrides the rules the cube was measured with; which measurement feeds flux is not a rule."""
    import json

    from spxbatch.cube.requalify import requalify
    from spxbatch.errors import ConfigError

    m = _measurements()
    m["snr"] = m["flux"] / m["flux_err"]
    m["condition"] = np.zeros(len(m), dtype=np.int64)
    m["good"] = True
    measured = {"photometry": {"snr_threshold": 7.0, "flux_source": "aperture"}}
    ds = assemble_cube(np.array(["a", "b", "c"]), np.zeros(3), np.zeros(3), m,
                       attrs={"config": json.dumps(measured)})
    path = write_cube(ds, tmp_path / "c.zarr")
    rules = json.loads(requalify(path, {"variance_repair_halfsize": 3}).attrs["quality_rules"])
    assert rules["snr_threshold"] == 7.0 and rules["variance_repair_halfsize"] == 3  # kept, and overridden
    with pytest.raises(ConfigError, match="flux_source is chosen when measuring"):
        requalify(path, {"flux_source": "psf"})
