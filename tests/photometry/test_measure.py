"""measure_region on small synthetic regions: exactness, region independence, and one test per option."""

from __future__ import annotations

import numpy as np
import pytest

from spxbatch.level2.constants import FLAG_BITS
from spxbatch.photometry import PhotometryConfig, good_verdict
from spxbatch.photometry.measure import measure_region
from spxbatch.photometry.quality import CONDITION_BITS, condition_names
from spxbatch.sim.regions import make_region, subregion

NPIX = 128


def bit(name: str) -> int:
    return 1 << CONDITION_BITS[name]


def conv(out, i=slice(None)):
    """uJy per (MJy/sr x px) of each row (the solid angle the engine used)."""
    return 23.5045 * out["pixel_solid_angle"][i]


@pytest.fixture(scope="module")
def field():
    """A noisy 128 px frame with 40 isolated stars, some near the edges, one off the frame."""
    rng = np.random.default_rng(5)
    gx, gy = np.meshgrid(np.arange(12, 120, 16.0), np.arange(12, 120, 18.0))
    x = gx.ravel()[:40] + rng.uniform(-0.5, 0.5, 40)
    y = gy.ravel()[:40] + rng.uniform(-0.5, 0.5, 40)
    x[0], y[0] = 1.2, 60.3  # aperture clipped by the frame edge
    flux = rng.uniform(0.5, 50, 40)
    region, ra, dec = make_region(NPIX, x, y, flux, noise=True, seed=3)
    return region, ra, dec, x, y, flux


def test_noiseless_flux_is_exact_with_aperture_correction():
    x = np.array([30.0, 60.37, 90.81, 64.5])
    y = np.array([40.0, 70.62, 30.14, 100.5])
    flux = np.array([10.0, 3.0, 50.0, 1.0])
    # sky == zodi: the background after zodi subtraction is exactly 0 (a residual gradient would bias
    # the annulus median by ~1e-4 of these fluxes, a real effect this test is not about)
    region, ra, dec = make_region(NPIX, x, y, flux, sky=0.25)
    out = measure_region(region, ra, dec, PhotometryConfig())
    np.testing.assert_allclose(out["x"], x, atol=1e-8)
    # 1e-4: the star's own light in the annulus is removed with its mean over the annulus pixels (right
    # for noisy data); the median of noiseless pixels differs from it by ~3e-5 of the flux
    np.testing.assert_allclose(out["flux"] / conv(out), flux, rtol=1e-4)
    off = measure_region(region, ra, dec, PhotometryConfig(aperture_correction=False))
    np.testing.assert_allclose(off["flux"], off["flux_aperture"])
    np.testing.assert_array_equal(off["flux_aperture"], out["flux_aperture"])
    # the on/off ratio is the enclosed fraction: the fraction of the true flux the aperture collected
    frac = off["flux"] / conv(off) / flux
    np.testing.assert_allclose(off["flux"] / out["flux"], 1.0 / out["aperture_correction"], rtol=1e-12)
    np.testing.assert_allclose(1.0 / out["aperture_correction"], frac, rtol=1e-4)
    assert np.all(frac < 0.99) and np.all(frac > 0.9)
    assert np.all(out["good"]) and np.all(out["condition"] == 0)
    assert set(out["status"]) == {"ok"}


def test_matches_photutils_exact_on_identical_inputs():
    photutils = pytest.importorskip("photutils.aperture")
    x = np.array([30.3, 60.8, 91.1])
    y = np.array([40.6, 70.2, 31.9])
    region, ra, dec = make_region(NPIX, x, y, np.array([10.0, 3.0, 1.0]), noise=True, seed=9)
    cfg = PhotometryConfig(aperture="fixed", fixed_radius=2.7, aperture_correction=False, zodi="none")
    out = measure_region(region, ra, dec, cfg)
    ap = photutils.CircularAperture(np.column_stack([out["x"], out["y"]]), r=2.7)
    tab = photutils.aperture_photometry(region.image.astype(float), ap, method="exact")
    expected = tab["aperture_sum"].value - out["background"] * ap.area
    np.testing.assert_allclose(out["flux_aperture"] / conv(out), expected, rtol=1e-6)
    # background 'none': the plain sum
    raw = measure_region(region, ra, dec, cfg.with_(background="none"))
    np.testing.assert_allclose(raw["flux_aperture"] / conv(raw), tab["aperture_sum"].value, rtol=1e-6)


def _same(a: dict, b: dict) -> None:
    for key in a:
        va, vb = np.asarray(a[key]), np.asarray(b[key])
        if va.dtype.kind == "f":
            np.testing.assert_array_equal(va, vb, err_msg=key)
        else:
            assert list(va) == list(vb), key


@pytest.mark.parametrize("background", ["annulus", "window"])
def test_region_independence_cutout_strip_frame(field, background):
    region, ra, dec, x, _y, _flux = field
    cfg = PhotometryConfig(background=background)
    sel = (x > 40) & (x < 90) & (_y > 40) & (_y < 90)
    whole = measure_region(region, ra[sel], dec[sel], cfg)
    from spxbatch.photometry import neighbourhood_halfsize

    def bounds(h):
        lo_x = max(int(np.floor(x[sel].min() + 0.5)) - h, 0)
        hi_x = min(int(np.floor(x[sel].max() + 0.5)) + h, NPIX - 1)
        lo_y = max(int(np.floor(_y[sel].min() + 0.5)) - h, 0)
        hi_y = min(int(np.floor(_y[sel].max() + 0.5)) + h, NPIX - 1)
        return lo_x, hi_x, lo_y, hi_y

    lo_x, hi_x, lo_y, hi_y = bounds(neighbourhood_halfsize(cfg))  # aperture and PSF fit
    cut = subregion(region, lo_x, lo_y, hi_x - lo_x + 1, hi_y - lo_y + 1, as_cutout=True)
    strip = subregion(region, 0, lo_y, NPIX, hi_y - lo_y + 1, as_cutout=False)
    for sub in (cut, strip):
        part = measure_region(sub, ra[sel], dec[sel], cfg, neighbours=(ra[sel], dec[sel]))
        ref = measure_region(region, ra[sel], dec[sel], cfg, neighbours=(ra[sel], dec[sel]))
        _same(ref, part)
    assert np.all(whole["measured"])
    # one pixel less than the aperture needs and the outermost sources are flagged REGION_CLIPPED, not
    # silently changed
    lo_x, hi_x, lo_y, hi_y = bounds(neighbourhood_halfsize(cfg.with_(photometry="aperture")))
    small = subregion(region, lo_x + 1, lo_y, hi_x - lo_x, hi_y - lo_y + 1)
    part = measure_region(small, ra[sel], dec[sel], cfg)
    assert np.any(part["condition"] & bit("REGION_CLIPPED"))
    assert not np.any(part["good"] & (part["condition"] & bit("REGION_CLIPPED") != 0))


def test_single_source_equals_batch(field):
    region, ra, dec, *_ = field
    cfg = PhotometryConfig()
    batch = measure_region(region, ra, dec, cfg)
    for i in (3, 17, 30):
        one = measure_region(region, ra[i : i + 1], dec[i : i + 1], cfg, neighbours=(ra, dec))
        for key in ("x", "y", "flux", "flux_err", "flux_aperture", "aperture_correction", "background",
                    "zodi_scale", "wavelength", "pixel_solid_angle"):
            assert one[key][0] == batch[key][i], key


def test_edge_and_off_frame(field):
    region, ra, dec, *_ = field
    out = measure_region(region, np.append(ra[:2], ra[1] + 1.0), np.append(dec[:2], dec[1]), PhotometryConfig())
    assert out["condition"][0] & bit("EDGE")
    assert out["measured"][0] and not out["good"][0]
    assert out["status"][2] == "off_frame" and not out["measured"][2]
    assert out["condition"][2] & bit("NOT_MEASURED")
    assert np.isnan(out["flux"][2])
    # SPXQuery-style edge margin: the clipped source is not measured at all
    drop = measure_region(region, ra[:1], dec[:1], PhotometryConfig(min_edge_distance=5.0))
    assert drop["status"][0] == "near_edge" and not drop["measured"][0]


def test_hot_pixel_in_aperture_flags_and_psf_correction():
    x, y = np.array([40.2, 90.6]), np.array([50.7, 80.3])
    region, ra, dec = make_region(NPIX, x, y, np.array([20.0, 20.0]))
    clean = measure_region(region, ra, dec, PhotometryConfig())
    region.flags[51, 41] |= 1 << FLAG_BITS["HOT"]
    region.image[51, 41] = 1e4  # a hot pixel: must not leak into the flux
    out = measure_region(region, ra, dec, PhotometryConfig())
    assert out["flags"][0] & (1 << FLAG_BITS["HOT"])
    assert out["condition"][0] & bit("BAD_PIXEL") and out["condition"][0] & bit("MASK_CORRECTED")
    assert not out["good"][0] and out["good"][1]
    # 'psf': the missing pixel is restored from the PSF: still the true flux
    np.testing.assert_allclose(out["flux"][0], clean["flux"][0], rtol=2e-3)
    flag_only = measure_region(region, ra, dec, PhotometryConfig(masked_aperture="flag"))
    assert flag_only["flux"][0] < 0.97 * clean["flux"][0]
    assert flag_only["condition"][0] & bit("BAD_PIXEL")
    # a non-bad flag (SOURCE) in the aperture is reported but does not spoil `good`
    region.flags[81, 91] |= 1 << FLAG_BITS["SOURCE"]
    out = measure_region(region, ra, dec, PhotometryConfig())
    assert out["flags"][1] & (1 << FLAG_BITS["SOURCE"]) and out["good"][1]
    # bad flags are chosen by name
    out = measure_region(region, ra, dec, PhotometryConfig(bad_flags=("SOURCE",)))
    assert not out["good"][1] and out["good"][0] is not None


def test_nan_pixel_and_nan_variance():
    x, y = np.array([40.2, 90.6]), np.array([50.7, 80.3])
    region, ra, dec = make_region(NPIX, x, y, np.array([20.0, 20.0]), noise=True)
    region.image[50, 40] = np.nan
    region.variance[80, 91] = np.nan  # unflagged pixel: SPXQuery drops the observation; we repair
    out = measure_region(region, ra, dec, PhotometryConfig())
    assert np.isfinite(out["flux"]).all()
    assert out["condition"][0] & bit("BAD_PIXEL")
    assert out["condition"][1] & bit("VARIANCE_REPAIRED")
    assert out["good"][1]


def test_zodi_options():
    x, y = np.array([64.3]), np.array([60.6])
    region, ra, dec = make_region(NPIX, x, y, np.array([5.0]), sky=0.25, zodi=0.25)
    base = PhotometryConfig(background="none", aperture_correction=False)
    fit = measure_region(region, ra, dec, base)
    none = measure_region(region, ra, dec, base.with_(zodi="none"))
    fixed = measure_region(region, ra, dec, base.with_(zodi="fixed"))
    # sky == zodi exactly: fixed scale 1 recovers the star; no subtraction adds zodi x area
    area = np.pi * fixed["aperture_radius"][0] ** 2
    exact = measure_region(region, ra, dec, base.with_(zodi="fixed", aperture_correction=True))
    np.testing.assert_allclose(exact["flux"] / conv(exact), 5.0, rtol=1e-5)
    zsum = (none["flux"] - fixed["flux"])[0] / conv(none)[0]
    np.testing.assert_allclose(zsum, 0.25 * area, rtol=0.02)
    assert fixed["zodi_scale"][0] == 1.0 and none["zodi_scale"][0] == 0.0
    # the fitted scale sees the star in its box but stays near 1, and differs from the fixed one
    assert 1.0 < fit["zodi_scale"][0] < 1.2
    # with a SOURCE mask on the star the fit is exact
    yy, xx = np.mgrid[0:NPIX, 0:NPIX]
    region.flags[np.hypot(xx - 64.3, yy - 60.6) < 5] |= 1 << FLAG_BITS["SOURCE"]
    exact = measure_region(region, ra, dec, base)
    np.testing.assert_allclose(exact["zodi_scale"][0], 1.0, rtol=1e-5)
    # a sky that is 1.3 x zodi: the fit finds 1.3
    region.image += 0.3 * region.zodi
    scaled = measure_region(region, ra, dec, base)
    np.testing.assert_allclose(scaled["zodi_scale"][0], 1.3, rtol=1e-5)
    # scale beyond the bound falls back to 1 and says so
    capped = measure_region(region, ra, dec, base.with_(zodi_max_scale=1.2))
    assert capped["zodi_scale"][0] == 1.0 and capped["condition"][0] & bit("ZODI_FALLBACK")


def test_window_vs_annulus_and_neighbour_masking():
    # target at (64, 64); a bright neighbour 6 px away lands in the annulus and the window
    x, y = np.array([64.0, 70.0]), np.array([64.0, 64.0])
    region, ra, dec = make_region(NPIX, x, y, np.array([5.0, 200.0]))
    cfg = PhotometryConfig(aperture_correction=False)
    alone = (ra[:1], dec[:1])
    unmasked = measure_region(region, ra[:1], dec[:1], cfg, neighbours=alone)
    masked = measure_region(region, ra[:1], dec[:1], cfg, neighbours=(ra, dec))
    # the neighbour's light in the annulus lifts the unmasked background; masking removes it
    assert masked["background_npix"][0] < unmasked["background_npix"][0]
    assert abs(masked["background"][0]) < 0.7 * abs(unmasked["background"][0])
    assert not masked["condition"][0] & bit("BLENDED")
    win = measure_region(region, ra[:1], dec[:1], cfg.with_(background="window"), neighbours=(ra, dec))
    assert win["background_npix"][0] > 5 * masked["background_npix"][0]
    assert win["background"][0] != masked["background"][0]
    # the default neighbours are the inputs themselves
    default = measure_region(region, ra, dec, cfg)
    assert default["background"][0] == masked["background"][0]


def test_blended_flag():
    x, y = np.array([60.0, 63.5, 100.0]), np.array([60.0, 61.0, 100.0])
    region, ra, dec = make_region(NPIX, x, y, np.array([5.0, 5.0, 5.0]))
    out = measure_region(region, ra, dec, PhotometryConfig())
    assert out["condition"][0] & bit("BLENDED") and out["condition"][1] & bit("BLENDED")
    assert not out["condition"][2] & bit("BLENDED")
    assert not out["good"][0] and out["good"][2]


def test_fixed_vs_fwhm_radius():
    region, ra, dec = make_region(NPIX, np.array([64.2]), np.array([64.7]), np.array([5.0]))
    fw = measure_region(region, ra, dec, PhotometryConfig())
    fx = measure_region(region, ra, dec, PhotometryConfig(aperture="fixed", fixed_radius=1.5))
    np.testing.assert_allclose(fw["fwhm"][0], 2.3548 * 0.85, rtol=0.03)
    np.testing.assert_allclose(fw["aperture_radius"][0], 1.25 * fw["fwhm"][0])
    assert fx["aperture_radius"][0] == 1.5
    assert fx["flux_aperture"][0] < 0.9 * fw["flux_aperture"][0]
    # both aperture-corrected to the same total flux
    np.testing.assert_allclose(fx["flux"][0], fw["flux"][0], rtol=1e-3)
    big = measure_region(region, ra, dec, PhotometryConfig(fwhm_multiplier=10.0))
    assert big["aperture_radius"][0] == PhotometryConfig().max_aperture_radius


def test_empty_annulus_for_one_source_leaves_others_measured():
    x, y = np.array([40.0, 90.0]), np.array([40.0, 90.0])
    region, ra, dec = make_region(NPIX, x, y, np.array([5.0, 5.0]))
    yy, xx = np.mgrid[0:NPIX, 0:NPIX]
    region.flags[np.hypot(xx - 40, yy - 40) < 13] |= 1 << FLAG_BITS["NONFUNC"]
    region.flags[40, 40] = 0  # keep the aperture centre alive
    out = measure_region(region, ra, dec, PhotometryConfig())
    assert out["status"][0] == "no_background" and not out["measured"][0]
    assert out["condition"][0] & bit("BACKGROUND_FAILED")
    assert out["measured"][1] and out["good"][1]


def test_annulus_widening_and_spxquery_preset():
    x, y = np.array([64.0]), np.array([64.0])
    region, ra, dec = make_region(NPIX, x, y, np.array([5.0]))
    sq = PhotometryConfig.spxquery(aperture="fixed", fixed_radius=4.0)  # r_in 5.4 > cap 5: widened
    out = measure_region(region, ra, dec, sq)
    assert out["measured"][0] and out["condition"][0] & bit("BACKGROUND_WIDENED")
    # SOURCE-avoidance then relaxation
    yy, xx = np.mgrid[0:NPIX, 0:NPIX]
    region.flags[np.hypot(xx - 64, yy - 64) < 12] |= 1 << FLAG_BITS["SOURCE"]
    out = measure_region(region, ra, dec, PhotometryConfig.spxquery())
    assert out["measured"][0] and out["condition"][0] & bit("BACKGROUND_RELAXED")
    ours = measure_region(region, ra, dec, PhotometryConfig())
    assert not ours["condition"][0] & bit("BACKGROUND_RELAXED")
    assert sq.aperture_correction is False and out["aperture_correction"][0] == 1.0


def test_background_statistic_and_error_factor(field):
    region, ra, dec, *_ = field
    med = measure_region(region, ra, dec, PhotometryConfig())
    mean = measure_region(region, ra, dec, PhotometryConfig(background_statistic="mean"))
    ok = med["measured"] & mean["measured"]
    assert np.all(med["background"][ok] != mean["background"][ok])
    np.testing.assert_allclose(med["background_err"][ok] / mean["background_err"][ok], 1.2533141373155003,
                               rtol=1e-6)


def test_global_background_runs(field):
    region, ra, dec, *_ = field
    out = measure_region(region, ra, dec, PhotometryConfig(background="global"))
    loc = measure_region(region, ra, dec, PhotometryConfig())
    ok = out["measured"] & loc["measured"]
    assert ok.sum() > 30
    np.testing.assert_allclose(out["background"][ok], loc["background"][ok], atol=0.01)


def test_no_psf_falls_back():
    region, ra, dec = make_region(NPIX, np.array([64.2]), np.array([64.7]), np.array([5.0]), with_psf=False)
    out = measure_region(region, ra, dec, PhotometryConfig())
    assert out["condition"][0] & bit("NO_PSF")
    assert out["aperture_correction"][0] == 1.0 and out["aperture_radius"][0] == 2.5
    assert out["good"][0]  # NO_PSF is informative, not disqualifying by default


def test_good_verdict_recomputes_from_table(field):
    import pandas as pd

    region, ra, dec, *_ = field
    cfg = PhotometryConfig()
    out = measure_region(region, ra, dec, cfg)
    df = pd.DataFrame({k: v for k, v in out.items()})
    np.testing.assert_array_equal(good_verdict(df, cfg), out["good"])
    strict = cfg.with_(snr_threshold=50.0)
    again = good_verdict(out, strict)
    assert again.sum() < out["good"].sum()
    np.testing.assert_array_equal(again, measure_region(region, ra, dec, strict)["good"])
    loose = cfg.with_(disqualifying_conditions=())
    assert good_verdict(out, loose).sum() > out["good"].sum()  # the EDGE source becomes good
    assert "EDGE" in condition_names(out["condition"][0])
    assert out["detected"].sum() >= out["good"].sum()


def test_negative_fluxes_are_kept():
    x = np.array([30.0, 60.0, 90.0, 30.0, 60.0, 90.0])
    y = np.array([30.0, 30.0, 30.0, 90.0, 90.0, 90.0])
    region, ra, dec = make_region(NPIX, x, y, np.zeros(6), noise=True, seed=11)
    out = measure_region(region, ra, dec, PhotometryConfig())
    assert np.all(out["measured"]) and np.any(out["flux"] < 0)
    assert not np.any(out["detected"] & (out["flux"] < 0))


def test_solid_angle_and_wavelength_maps_are_used():
    region, ra, dec = make_region(NPIX, np.array([64.2]), np.array([64.7]), np.array([5.0]))
    ref = measure_region(region, ra, dec, PhotometryConfig())
    region.solid_angle = np.full(region.shape, 2 * 37.8)
    region.cwave = np.full(region.shape, 2.0)
    region.cband = np.full(region.shape, 0.05)
    out = measure_region(region, ra, dec, PhotometryConfig())
    assert out["pixel_solid_angle"][0] == 2 * 37.8
    np.testing.assert_allclose(out["flux"][0] / ref["flux"][0], 2 * 37.8 / ref["pixel_solid_angle"][0])
    assert out["wavelength"][0] == 2.0 and out["bandwidth"][0] == 0.05


def test_crops_give_the_same_numbers_as_the_whole_region(monkeypatch):
    import spxbatch.photometry.crops as crops

    rng = np.random.default_rng(4)
    x = rng.uniform(20, 1004, 12)
    y = rng.uniform(20, 1004, 12)
    region, ra, dec = make_region(1024, x, y, rng.uniform(1, 30, 12), noise=True, seed=2)
    region.flags[int(y[0]) + 1, int(x[0])] |= 1 << FLAG_BITS["HOT"]
    monkeypatch.setattr(crops, "CROP_COST_S", 1e-4)  # cheap crops: the 12 sources are measured on crops
    from spxbatch.photometry import neighbourhood_halfsize

    halfsize = neighbourhood_halfsize(PhotometryConfig(), region.psf)
    assert len(list(crops.region_crops(region, x, y, halfsize, whole=False))) > 1
    cropped = measure_region(region, ra, dec, PhotometryConfig())
    monkeypatch.setattr(crops, "CROP_COST_S", 1e9)  # crops now cost more than the whole region
    whole = measure_region(region, ra, dec, PhotometryConfig())
    _same(whole, cropped)
    assert cropped["condition"][0] & bit("BAD_PIXEL")


def test_zodi_scale_gather_and_summed_area_paths_agree():
    from spxbatch.photometry.zodi import zodi_scale

    rng = np.random.default_rng(8)
    image = rng.normal(1.0, 0.1, (200, 200))
    zodi = 0.8 + rng.normal(0, 0.01, (200, 200))
    variance = rng.uniform(0.5, 2, (200, 200))
    qualifies = rng.random((200, 200)) > 0.3
    ix = rng.integers(0, 200, 5)
    iy = rng.integers(0, 200, 5)
    args = (image, zodi, variance, qualifies)
    sparse = zodi_scale(*args, ix, iy, 10, np.full(5, 441), 0.5, 0.0, 10.0)
    dense = zodi_scale(*args, np.repeat(ix, 100), np.repeat(iy, 100), 10, np.full(500, 441), 0.5, 0.0, 10.0)
    np.testing.assert_array_equal(np.repeat(sparse[0], 100), dense[0])


def test_empty_inputs_and_all_nan_variance():
    region, ra, dec = make_region(64, np.array([30.2]), np.array([31.7]), np.array([5.0]), noise=True)
    out = measure_region(region, np.array([]), np.array([]), PhotometryConfig())
    assert all(len(v) == 0 for v in out.values())
    out = measure_region(region, ra, dec, PhotometryConfig(), neighbours=(np.array([]), np.array([])))
    assert out["measured"][0]
    region.variance[:] = np.nan  # no usable variance at all: masked everywhere, nothing measured, no crash
    out = measure_region(region, ra, dec, PhotometryConfig())
    assert not out["measured"][0] and out["condition"][0] & bit("BAD_PIXEL")


def test_every_pixel_masked_measures_nothing_and_says_why():
    region, ra, dec = make_region(64, np.array([30.2, 1.0]), np.array([31.7, 40.0]), np.array([5.0, 5.0]))
    region.flags[:] |= 1 << FLAG_BITS["NONFUNC"]
    for background in ("annulus", "window", "none"):
        out = measure_region(region, ra, dec, PhotometryConfig(background=background))
        assert not out["measured"].any() and np.isnan(out["flux"]).all(), background
        assert np.all(out["condition"] & bit("NOT_MEASURED")) and np.all(out["condition"] & bit("BAD_PIXEL"))
        expect = "no_pixels" if background == "none" else "no_background"
        assert set(out["status"]) == {expect}, background
