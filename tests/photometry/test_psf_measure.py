"""measure_region's PSF phase: exact on QR2 and R7 regions, the same numbers on a cutout, a strip and the
frame, catalog neighbours fitted though not measured, a bright neighbour outside the aperture no longer
biasing a faint source, and the photometry / flux_source options."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from spxbatch.level2.epsf import read_epsf
from spxbatch.photometry.conditions import condition_names
from spxbatch.photometry.config import PhotometryConfig
from spxbatch.photometry.measure import measure_region
from spxbatch.sim.epsf import make_epsf, table_hdu
from spxbatch.sim.regions import make_region, subregion

UJY = 23.5045  # uJy per MJy/sr x arcsec^2
PSF_COLUMNS = ("flux_psf", "flux_psf_err", "psf_chi2", "psf_blendedness", "psf_unmasked_fraction", "psf_group_size")


def _field(r7: bool, noise: bool = False):
    """A 160 px frame: stars on a grid, every third with a companion 1.2-2 px away, a chain of three;
    QR2's cube (integrated over pixels) or D1's R7 ePSF (pixel centres)."""
    rng = np.random.default_rng(11)
    gx, gy = np.meshgrid(np.arange(14, 150, 16.0), np.arange(14, 150, 16.0))
    x = gx.ravel() + rng.uniform(-0.5, 0.5, gx.size)
    y = gy.ravel() + rng.uniform(-0.5, 0.5, gy.size)
    sep = rng.uniform(1.2, 2.0, x.size // 3)
    ang = rng.uniform(0, 2 * np.pi, sep.size)
    x = np.concatenate([x, x[::3][: sep.size] + sep * np.cos(ang), [70.0, 76.0, 82.0]])
    y = np.concatenate([y, y[::3][: sep.size] + sep * np.sin(ang), [77.0, 77.5, 78.0]])
    flux = rng.uniform(1, 50, x.size)
    if not r7:
        region, ra, dec = make_region(160, x, y, flux, noise=noise, seed=2)
        return region, ra, dec, x, y, flux
    sim = make_epsf(1, 160)
    region, ra, dec = make_region(160, x, y, np.zeros(x.size), noise=noise, seed=2)
    stamps, x0, y0 = sim.stamps(x, y)
    h = stamps.shape[1]
    for k in range(x.size):
        region.image[y0[k]: y0[k] + h, x0[k]: x0[k] + h] += (flux[k] * stamps[k]).astype(np.float32)
    return replace(region, psf=read_epsf(table_hdu(sim), "D1")), ra, dec, x, y, flux


@pytest.mark.parametrize("r7", [False, True], ids=["qr2", "r7"])
def test_noiseless_psf_fluxes_are_exact_for_isolated_and_blended_sources(r7):
    region, ra, dec, _, _, flux = _field(r7)
    out = measure_region(region, ra, dec, PhotometryConfig())
    truth = flux * UJY * out["pixel_solid_angle"]
    blended = out["psf_group_size"] > 1
    assert blended.sum() > 25 and (~blended).sum() > 30
    # float32 images; QR2 stars are drawn from the cube's own Gaussian cells, R7 stars from the ePSF
    np.testing.assert_allclose(out["flux_psf"], truth, rtol=5e-5)
    assert not np.any(out["condition"] & (3 << 44))  # no PSF_FAILED, PSF_CLIPPED
    assert np.all(out["psf_blendedness"][~blended] == 0) and np.median(out["psf_blendedness"][blended]) > 0.1
    # the aperture, which only flags the blends, reads their neighbour's light
    assert np.median(out["flux"][blended] / truth[blended]) > 1.2


@pytest.mark.parametrize("r7", [False, True], ids=["qr2", "r7"])
def test_cutout_strip_and_frame_give_identical_psf_numbers(r7):
    region, ra, dec, x, y, _ = _field(r7, noise=True)
    cfg = PhotometryConfig()
    sel = (x > 50) & (x < 100) & (y > 50) & (y < 100)
    ref = measure_region(region, ra[sel], dec[sel], cfg, neighbours=(ra, dec))
    assert ref["psf_group_size"].max() >= 3
    # every group member's box (and its variance repair) inside: the members lie within 50 .. 100 +- reach
    h = 24
    for sub in (subregion(region, 50 - h, 50 - h, 50 + 2 * h, 50 + 2 * h, as_cutout=True),
                subregion(region, 0, 50 - h, region.shape[1], 50 + 2 * h, as_cutout=False)):
        part = measure_region(sub, ra[sel], dec[sel], cfg, neighbours=(ra, dec))
        for key in PSF_COLUMNS:
            assert np.array_equal(part[key], ref[key], equal_nan=True), key
    # a region that cuts through a group flags it instead of measuring it otherwise
    tight = measure_region(subregion(region, 55, 55, 40, 40), ra[sel], dec[sel], cfg, neighbours=(ra, dec))
    clipped = (tight["condition"] >> 45 & 1).astype(bool)
    assert clipped.any()
    same = np.isclose(tight["flux_psf"], ref["flux_psf"], rtol=0, atol=0)
    assert np.all(same | clipped | (tight["status"] != "ok"))


def test_a_bright_neighbour_outside_the_aperture_no_longer_biases_a_faint_source():
    """As demo-00049: a faint star with a 100x brighter one 4.2-5 px away (outside its 2.5 px aperture,
    inside its annulus), 200 noisy copies; only the faint ones are measured, the bright ones are catalog
    neighbours."""
    rng = np.random.default_rng(5)
    g = np.arange(20, 500, 34.0)
    gx, gy = (a.ravel() for a in np.meshgrid(g, g))
    d, ang = rng.uniform(4.2, 5.0, gx.size), rng.uniform(0, 2 * np.pi, gx.size)
    bx, by = gx + d * np.cos(ang), gy + d * np.sin(ang)
    x, y = np.concatenate([gx, bx]), np.concatenate([gy, by])
    faint = 0.5
    region, ra, dec = make_region(512, x, y, np.r_[np.full(gx.size, faint), np.full(gx.size, 50.0)], noise=True,
                                  seed=9)
    n = gx.size
    out = measure_region(region, ra[:n], dec[:n], PhotometryConfig(), neighbours=(ra, dec))
    truth = faint * UJY * out["pixel_solid_angle"]
    pull_ap = (out["flux"] - truth) / out["flux_err"]
    pull_psf = (out["flux_psf"] - truth) / out["flux_psf_err"]
    assert np.median(pull_ap) > 3  # the aperture collects the neighbour's wing
    assert abs(np.median(pull_psf)) < 0.2 and 0.85 < 1.4826 * np.median(np.abs(pull_psf - np.median(pull_psf))) < 1.15
    assert abs(np.median(out["flux_psf"] / truth - 1)) < 0.02
    assert np.all(out["psf_group_size"] == 2)
    # without the neighbours in the catalog the fit cannot know them: biased like the aperture
    alone = measure_region(region, ra[:n], dec[:n], PhotometryConfig())
    assert abs(np.median((alone["flux_psf"] - truth) / alone["flux_psf_err"])) > 3


def test_flux_source_and_photometry_options():
    region, ra, dec, *_ = _field(r7=False, noise=True)
    both = measure_region(region, ra, dec, PhotometryConfig())
    psf_fed = measure_region(region, ra, dec, PhotometryConfig(flux_source="psf"))
    only_psf = measure_region(region, ra, dec, PhotometryConfig(photometry="psf", flux_source="psf"))
    only_ap = measure_region(region, ra, dec, PhotometryConfig(photometry="aperture"))
    assert np.array_equal(psf_fed["flux"], both["flux_psf"])
    assert np.array_equal(psf_fed["flux_err"], both["flux_psf_err"])
    assert np.array_equal(only_psf["flux"], both["flux_psf"]) and np.isnan(only_psf["flux_aperture"]).all()
    assert np.array_equal(only_ap["flux"], both["flux"]) and np.isnan(only_ap["flux_psf"]).all()
    for key in ("wavelength", "pixel_solid_angle", "flags", "psf_zone"):
        assert np.array_equal(only_psf[key], both[key]), key
    # the geometric BLENDED rule rejects the aperture's blends, not the PSF fit's
    blended = (both["condition"] >> 34 & 1).astype(bool)
    assert blended.sum() > 10 and not both["good"][blended].any()
    assert psf_fed["good"][blended].mean() > 0.8
    with pytest.raises(ValueError, match="flux_source"):
        PhotometryConfig(photometry="aperture", flux_source="psf")


def test_no_psf_no_psf_fit():
    region, ra, dec, *_ = _field(r7=False)
    out = measure_region(replace(region, psf=None), ra, dec, PhotometryConfig())
    assert np.isnan(out["flux_psf"]).all() and np.isfinite(out["flux"]).all()
    assert all("PSF_FAILED" in condition_names(c) for c in out["condition"])
    fed = measure_region(replace(region, psf=None), ra, dec, PhotometryConfig(flux_source="psf"))
    assert not fed["measured"].any() and np.all(fed["status"] == "psf_failed") and not fed["good"].any()


def test_good_for_psf_fluxes_reads_the_fit_and_ignores_the_apertures_conditions():
    from spxbatch.level2.constants import FLAG_BITS
    from spxbatch.photometry.conditions import condition_mask
    from spxbatch.photometry.quality import good_verdict

    n = 7
    table = {"flags": np.zeros(n, dtype=np.int32), "condition": np.zeros(n, dtype=np.int64),
             "snr": np.full(n, 50.0), "measured": np.ones(n, dtype=bool), "psf_chi2": np.ones(n),
             "psf_unmasked_fraction": np.ones(n)}
    table["psf_chi2"][1] = 3.5
    table["psf_unmasked_fraction"][2] = 0.7
    table["condition"][3] = condition_mask(("BLENDED", "BAD_PIXEL", "REGION_CLIPPED"))
    table["condition"][4] = condition_mask(("PSF_CLIPPED",))
    table["flags"][5] = 1 << FLAG_BITS["HOT"]  # a bad pixel: left out of the fit, vetoes only the aperture
    table["condition"][6] = condition_mask(("EDGE",))
    psf = good_verdict(table, PhotometryConfig(flux_source="psf"))
    aperture = good_verdict(table, PhotometryConfig())
    assert list(psf) == [True, False, False, True, False, True, False]
    assert list(aperture) == [True, True, True, False, True, False, False]
    # `spxbatch qc` thresholds: recomputable from the stored columns
    assert good_verdict(table, PhotometryConfig(flux_source="psf", psf_max_chi2=4.0))[1]
