"""The vectorised building blocks: clipped statistics, pixel overlaps, wavelength table, solid angle."""

from __future__ import annotations

import warnings

import numpy as np
import sep
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.wcs import WCS
from overlap_reference import pixel_overlap

from spxbatch.level2.wcs import celestial_wcs
from spxbatch.photometry.background import clipped_stats
from spxbatch.photometry.units import wcs_pixel_solid_angle
from spxbatch.photometry.wavelength import wave_from_table
from spxbatch.sim.regions import image_header, wave_table


def test_clipped_stats_equal_astropy():
    rng = np.random.default_rng(0)
    v = rng.normal(5, 1, (500, 60))
    v[:, :4] += rng.uniform(0, 30, (500, 4))  # outliers to clip
    v[rng.random(v.shape) < 0.3] = np.nan
    v[7] = np.nan
    for iters in (1, 3, 5):
        med, std, n = clipped_stats(v, 3.0, iters)
        for i in range(0, 500, 7):
            row = v[i][np.isfinite(v[i])]
            if row.size == 0:
                assert np.isnan(med[i]) and n[i] == 0
                continue
            _, med_a, std_a = sigma_clipped_stats(row, sigma=3.0, maxiters=iters)
            assert abs(med_a - med[i]) < 1e-12 and abs(std_a - std[i]) < 1e-12
        mean, _, _ = clipped_stats(v, 3.0, iters, "mean")
        row = v[3][np.isfinite(v[3])]
        assert abs(sigma_clipped_stats(row, sigma=3.0, maxiters=iters)[0] - mean[3]) < 1e-12


def test_pixel_overlap_sums_to_sep_area_and_sum():
    rng = np.random.default_rng(1)
    off = np.arange(-6, 7)
    oy, ox = (a.ravel() for a in np.meshgrid(off, off, indexing="ij"))
    img = rng.normal(size=(13, 13))
    for r in (0.4, 1.5, 2.48, 4.2):
        x = rng.uniform(-0.5, 0.5, 40)
        y = rng.uniform(-0.5, 0.5, 40)
        w = pixel_overlap(ox[None] - x[:, None], oy[None] - y[:, None], np.full((40, 1), r))
        np.testing.assert_allclose(w.sum(1), np.pi * r * r, rtol=1e-12)
        s, _, _ = sep.sum_circle(img, 6 + x, 6 + y, r, subpix=0)
        np.testing.assert_allclose((w * img.ravel()).sum(1), s, rtol=1e-6, atol=1e-6)
        assert w.min() >= 0 and w.max() <= 1 + 1e-12


def _wave_hdul(npix: int) -> fits.HDUList:
    """IMAGE header with the W cards and a WCS-WAVE table astropy can decode."""
    hdr = image_header(npix)
    wt = wave_table(npix)
    ny, nx = wt.values.shape[:2]
    cols = [
        fits.Column(name="X", format=f"{nx}E", array=wt.x[None].astype(np.float32)),
        fits.Column(name="Y", format=f"{ny}E", array=wt.y[None].astype(np.float32)),
        fits.Column(name="VALUES", format=f"{2 * nx * ny}E", dim=f"(2,{nx},{ny})",
                    array=wt.values[None].astype(np.float32)),
    ]
    tab = fits.BinTableHDU.from_columns(cols, name="WCS-WAVE")
    return fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((npix, npix), np.float32), hdr, name="IMAGE"),
                         tab])


def test_wavelength_table_equals_astropy_w_wcs():
    from spxbatch.level2.read import read_wave_table

    npix = 512
    hdul = _wave_hdul(npix)
    wave = read_wave_table(hdul["WCS-WAVE"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = WCS(hdul["IMAGE"].header, fobj=hdul, key="W")
    w.sip = None
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.uniform(-0.5, npix - 0.5, 300), [0.0, npix - 1.0, 255.5]])
    y = np.concatenate([rng.uniform(-0.5, npix - 0.5, 300), [0.0, npix - 1.0, 0.0]])
    lam_a, dlam_a = w.wcs_pix2world(x, y, 0)
    lam, dlam = wave_from_table(wave, hdul["IMAGE"].header, x, y)
    np.testing.assert_allclose(lam, lam_a, atol=1e-6)
    np.testing.assert_allclose(dlam, dlam_a, atol=1e-6)
    # a cutout's shifted CRPIXnW, undone by parent_image_header, gives the same values
    from spxbatch.level2.region import parent_image_header

    cut = hdul["IMAGE"].header.copy()
    for s in ("", "A", "W"):
        cut[f"CRPIX1{s}"] = float(cut[f"CRPIX1{s}"]) - 100
        cut[f"CRPIX2{s}"] = float(cut[f"CRPIX2{s}"]) - 40
    lam_c, _ = wave_from_table(wave, parent_image_header(cut), x, y)
    np.testing.assert_array_equal(lam_c, lam)


def test_pixel_solid_angle_from_sip_wcs():
    w = celestial_wcs(image_header(2040))
    x = np.array([1019.5, 0.0, 2039.0])
    y = np.array([1019.5, 0.0, 2039.0])
    omega = wcs_pixel_solid_angle(w, x, y)
    assert abs(omega[0] / 6.15**2 - 1) < 1e-3  # the centre: the nominal scale
    assert np.all(np.abs(omega / 6.15**2 - 1) < 0.05)
    assert abs(omega[1] - omega[2]) > 1e-3  # SIP makes the corners differ
