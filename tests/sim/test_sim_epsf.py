"""The EPSF table of R7 files is the pixel-convolved PSF, normalised as documented, and it is exactly the PSF
the stars were rendered with: a noiseless star's pixels are its flux x the file's ePSF at pixel centres
(photutils ImagePSF, the reference evaluator)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from photutils.psf import ImagePSF
from test_sim_psf import cube_pixel_fractions

from spxbatch.level2.constants import MJY_PER_SR_TO_UJY_PER_ARCSEC2
from spxbatch.sim import render, scene
from spxbatch.sim.instrument import Detector


def _epsf(hdul) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(arrays, x centres, y centres, table) of a file's EPSF table, arrays as [row, j, i]."""
    tab = hdul["EPSF"].data
    return tab["EPSF"].astype(float), np.unique(tab["XCENTER"]), np.unique(tab["YCENTER"]), tab


def test_arrays_normalised_to_oversampling_squared_and_centred(sim_archive_qr3):
    with fits.open(sim_archive_qr3.root / sim_archive_qr3.files[0]) as hdul:
        arrays, *_ = _epsf(hdul)
    assert np.allclose(arrays.sum(axis=(1, 2)), 25.0, rtol=1e-12)
    assert arrays.min() >= 0
    # The peak is the centre element (offset 0, 0): the core offsets are a few hundredths of a pixel.
    assert (arrays.reshape(len(arrays), -1).argmax(axis=1) == 16 * 33 + 16).all()
    # Evaluated on a pixel-centre grid, the ePSF sums to ~1 at any sub-pixel phase.
    k = np.arange(-4, 5)
    for dx, dy in ((0.0, 0.0), (0.3, -0.45), (0.5, 0.5)):
        model = ImagePSF(arrays[100], oversampling=5)
        total = model(*np.meshgrid(k + dx, k + dy)).sum()
        assert total == pytest.approx(1.0, abs=0.01)


def _neff(a: np.ndarray) -> float:
    """Effective area (pixels) of an x5 array on the pixel-centre grid through its centre: 1 / sum p^2."""
    return 1.0 / (a[1::5, 1::5] ** 2).sum()


def test_epsf_is_the_optical_psf_convolved_with_the_pixel():
    """Zone (10, 10) of the 21 x 21 grid has the centre of the QR2 cube's zone (5, 5), so the same optics.
    Integrating the cube's optical PSF over a native pixel centred at each ePSF offset gives the ePSF;
    point-sampling the optical PSF at the same offsets gives a narrower function."""
    det = Detector(1, 2040)
    table = det.epsf.arrays[10 * 21 + 10]
    plane = det.psf_cube[5 * 11 + 5].astype(float)
    off = (np.arange(33) - 16) / 5
    ox, oy = np.meshgrid(off, off)
    integrated = cube_pixel_fractions(plane, 0.0, 0.0, ox.ravel(), oy.ravel()).reshape(33, 33)
    integrated *= 25.0 / integrated.sum()
    assert np.abs(integrated - table).max() < 2e-3 * table.max()
    point = plane[18:83:2, 18:83:2]  # cube cells centred at offsets (i - 50) / 10 = the ePSF's offsets
    point = point * (25.0 / point.sum())
    assert 1.1 < _neff(table) / _neff(point) < 1.4


def test_noiseless_star_pixels_are_flux_times_epsf_at_pixel_centres(sim_archive_qr3_noiseless):
    info = sim_archive_qr3_noiseless
    meas = pd.read_parquet(info.truth["measurements"])
    checked = 0
    for rel, rows in meas.groupby("relpath"):
        with fits.open(info.root / rel) as hdul:
            img = hdul["IMAGE"].data.astype(float)
            hdr = hdul["IMAGE"].header
            arrays, xc, yc, tab = _epsf(hdul)
        det = Detector(hdr["DETECTOR"], info.npix)
        sky, _, _ = scene.sky(det.number, info.npix, info.seed, hdr["OBSID"], det.wave_images[0])
        src = (img - sky) * MJY_PER_SR_TO_UJY_PER_ARCSEC2 * det.solid_angle  # uJy per pixel
        xy = rows[["x", "y"]].to_numpy()
        sep = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
        np.fill_diagonal(sep, np.inf)
        for r, nearest in zip(rows.itertuples(), sep.min(axis=1), strict=True):
            if nearest < 12 or min(r.x, r.y) < 6 or max(r.x, r.y) > info.npix - 7:
                continue
            ix, iy = np.abs(xc - r.x).argmin(), np.abs(yc - r.y).argmin()  # the contract's zone rule
            zone = iy * len(xc) + ix
            assert (tab["BINX"][zone], tab["BINY"][zone]) == (ix, iy) and r.psf_zone == zone + 1
            model = ImagePSF(arrays[zone], oversampling=5, flux=r.flux_ujy, x_0=r.x, y_0=r.y)
            yy, xx = np.mgrid[round(r.y) - 5 : round(r.y) + 6, round(r.x) - 5 : round(r.x) + 6]
            expect = model(xx, yy)
            assert np.abs(src[yy, xx] - expect).max() < 2e-5 * expect.max()
            checked += 1
    assert checked > 50


def test_qr2_and_r7_renderings_of_a_star_carry_the_same_flux():
    """The same star drawn by both renderers (QR2: the model integrated over each pixel, on the 11 x 11
    zones; R7: the ePSF of the 21 x 21 zones): the same light, the same shape within 2 %, none beyond the
    ePSF's +-3.2 px."""
    det = Detector(4, 256)
    x, y, flux = np.array([120.3]), np.array([131.72]), np.array([1.0e4])
    qr2 = render.render_sources(det, x, y, flux) * MJY_PER_SR_TO_UJY_PER_ARCSEC2 * det.solid_angle
    r7 = render.render_sources(det, x, y, flux, r7=True) * MJY_PER_SR_TO_UJY_PER_ARCSEC2 * det.solid_angle
    assert qr2.sum() == pytest.approx(1.0e4, rel=1e-6)
    assert r7.sum() == pytest.approx(1.0e4, rel=0.01)
    core = np.s_[130:134, 118:123]  # within 2 px of the centre: nearly all of the light
    assert np.allclose(r7[core], qr2[core], rtol=0.02)
    assert (r7[np.hypot(*np.mgrid[-131:125, -120:136]) > 4.6] == 0).all()  # nothing beyond the ePSF's reach
