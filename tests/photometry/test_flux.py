"""Fluxes from the phases' results, units, wavelength, the output table, conditions and verdicts."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from spxbatch.level2.wcs import celestial_wcs
from spxbatch.photometry.aperture import ApertureSums, Footprint
from spxbatch.photometry.background import Background
from spxbatch.photometry.columns import COLUMNS, empty_table, image_columns
from spxbatch.photometry.conditions import CONDITION_BITS, condition_mask, condition_names, condition_word
from spxbatch.photometry.config import PhotometryConfig
from spxbatch.photometry.flux import source_fluxes
from spxbatch.photometry.measure import measure_region
from spxbatch.photometry.quality import verdicts
from spxbatch.photometry.units import source_solid_angle, wcs_pixel_solid_angle
from spxbatch.photometry.wavelength import source_wavelength, wave_from_table
from spxbatch.sim.regions import make_region


def test_flux_arithmetic_and_a_zero_fraction():
    sums = ApertureSums(np.array([10.0, 4.0]), np.array([2.0, 1.0]))
    bkg = Background(np.array([0.1, 0.0]), None, np.array([0.01, 0.0]), None, None, None, {})
    fp = Footprint(np.array([20.0, 5.0]), np.array([0.5, 0.25]), None, None, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fully masked aperture is not a warning
        f = source_fluxes(sums, np.array([1.5, 1.0]), bkg, fp, np.array([0.9, 0.0]), np.array([2.0, 2.0]))
    f_sb = 10.0 - 1.5 * 2.0 - 0.1 * 20.0
    e_sb = np.sqrt(0.5 + (0.01 * 20.0) ** 2)
    assert f.flux_aperture[0] == pytest.approx(2 * f_sb) and f.flux[0] == pytest.approx(2 * f_sb / 0.9)
    assert f.flux_err[0] == pytest.approx(2 * e_sb / 0.9) and f.snr[0] == pytest.approx(f_sb / e_sb)
    assert f.aperture_correction[0] == pytest.approx(1 / 0.9)
    assert f.flux_aperture[1] == 6.0 and not np.isfinite(f.flux[1]) and not np.isfinite(f.flux_err[1])


def test_solid_angle_and_wavelength_from_maps_or_the_wcs():
    region, _, _ = make_region(32, np.array([16.0]), np.array([16.0]))
    wcs = celestial_wcs(region.image_header)
    x, y = np.array([10.2, 20.7]), np.array([5.5, 25.0])
    np.testing.assert_array_equal(source_solid_angle(region, wcs, x, y, x, y), wcs_pixel_solid_angle(wcs, x, y))
    lam, dlam = source_wavelength(region, region.image_header, x, y, x, y)
    ref = wave_from_table(region.wave, region.image_header, x, y)
    np.testing.assert_array_equal(lam, ref[0])
    np.testing.assert_array_equal(dlam, ref[1])
    yy, xx = np.mgrid[0:32, 0:32]
    region.solid_angle = 30.0 + xx  # maps are sampled bilinearly at the local position
    region.cwave = 1.0 + 0.01 * yy
    region.cband = np.full((32, 32), 0.05)
    np.testing.assert_allclose(source_solid_angle(region, wcs, x, y, x, y), 30.0 + x)
    lam, dlam = source_wavelength(region, region.image_header, x, y, x, y)
    np.testing.assert_allclose(lam, 1.0 + 0.01 * y)
    np.testing.assert_allclose(dlam, 0.05)
    region.cband = None  # CWAVE alone is not enough: the table
    np.testing.assert_array_equal(source_wavelength(region, region.image_header, x, y, x, y)[0], ref[0])


def test_empty_table_follows_the_column_table():
    given = {"source_index": np.array([4, 9], dtype=np.int32), "x": [1.0, 2.0], "y": [3.0, 4.0],
             "status": np.array(["ok", "off_frame"]), "mjd": 60000.5, "band": 3, "obs_id": "X"}
    out = empty_table(2, given)
    assert list(out) == list(COLUMNS)
    assert out["source_index"].dtype == np.int32 and out["obs_id"].dtype == object and out["band"].dtype == np.int8
    assert list(out["status"]) == ["ok", "off_frame"] and out["status"].dtype == np.dtype("<U14")
    assert np.isnan(out["flux"]).all() and (out["psf_zone"] == -1).all() and not out["good"].any()
    with pytest.raises(KeyError, match="mjd"):
        empty_table(2, {k: v for k, v in given.items() if k != "mjd"})
    # measure_region gives exactly these columns and dtypes
    region, ra, dec = make_region(32, np.array([16.0]), np.array([16.0]))
    table = measure_region(region, ra, dec)
    assert list(table) == list(COLUMNS)
    assert all(table[k].dtype == out[k].dtype for k in COLUMNS if k != "source_index")


def test_image_columns_from_the_cards():
    region, _, _ = make_region(16, np.array([8.0]), np.array([8.0]))
    cols = image_columns(region)
    h = region.image_header
    assert cols == {"mjd": 0.5 * (h["MJD-BEG"] + h["MJD-END"]), "band": 3, "obs_id": "2025W18_2B_0001_1"}
    del h["MJD-BEG"]
    region.primary_header["MJD-AVG"] = 60001.0  # a PRIMARY card where IMAGE has none
    assert image_columns(region)["mjd"] == 60001.0
    del region.primary_header["MJD-AVG"]
    del h["DETECTOR"], h["OBSID"]
    assert np.isnan(image_columns(region)["mjd"]) and image_columns(region)["band"] == 0


def test_condition_word_and_names():
    word = condition_word(3, {"EDGE": np.array([True, False, True]), "NO_PSF": True, "BLENDED": False})
    assert condition_names(word[0]) == ["EDGE", "NO_PSF"] and condition_names(word[1]) == ["NO_PSF"]
    assert word.dtype == np.int64 and word[2] == condition_mask(["EDGE", "NO_PSF"])
    assert all(b >= 32 for b in CONDITION_BITS.values())  # above the 32 FLAGS bits
    assert not condition_word(0, {"EDGE": np.zeros(0, bool)}).size


def test_verdicts():
    table = {"measured": np.array([True, True, True, False]), "snr": np.array([6.0, 4.0, 9.0, np.nan]),
             "flags": np.array([0, 0, 1 << 10, 0]), "condition": np.zeros(4, dtype=np.int64)}
    detected, good = verdicts(table, PhotometryConfig())
    np.testing.assert_array_equal(detected, [True, False, True, False])
    np.testing.assert_array_equal(good, [True, False, False, False])  # bit 10 is HOT, a bad flag
