"""The PSF cube in each file is exactly the model the sources were rendered with; the erratum is present."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from scipy.interpolate import RectBivariateSpline

from spxbatch.sim import psf, scene
from spxbatch.sim.instrument import Detector
from spxbatch.spherex import MJY_PER_SR_TO_UJY_PER_ARCSEC2, calibration_relpath


def cube_pixel_fractions(plane: np.ndarray, x: float, y: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Fraction of a unit source at (x, y) falling in native pixels (xs, ys), integrated from a cube plane.

    The plane (101 x 101, OVERSAMP 10, centre cell 50) is integrated over each native pixel through a
    bicubic spline of its 2-D cumulative sum (a piecewise-constant reading would be off by ~0.3% of the peak).
    """
    n = plane.shape[0]
    cum = np.zeros((n + 1, n + 1))
    cum[1:, 1:] = plane.astype(float).cumsum(0).cumsum(1)
    spline = RectBivariateSpline(np.arange(n + 1), np.arange(n + 1), cum)

    def c(ox, oy):  # cumulative at native-pixel offsets from the declared centre
        return spline.ev(np.clip(oy * 10 + 50.5, 0, n), np.clip(ox * 10 + 50.5, 0, n))

    x0, x1, y0, y1 = xs - 0.5 - x, xs + 0.5 - x, ys - 0.5 - y, ys + 0.5 - y
    return c(x1, y1) - c(x0, y1) - c(x1, y0) + c(x0, y0)


def _isolated(info, min_sep: float = 14.0, margin: int = 10) -> pd.DataFrame:
    meas = pd.read_parquet(info.truth["measurements"])
    meas = meas[~meas.superseded]
    keep = []
    for _, rows in meas.groupby("relpath"):
        xy = rows[["x", "y"]].to_numpy()
        d = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
        np.fill_diagonal(d, np.inf)
        ok = (d.min(axis=1) > min_sep) & (xy.min(axis=1) > margin) & (xy.max(axis=1) < info.npix - 1 - margin)
        keep.append(rows[ok])
    return pd.concat(keep)


def _source_only(info, rel: str) -> tuple[np.ndarray, np.ndarray, fits.Header]:
    """The noiseless image minus its true sky (MJy/sr), and the solid-angle map."""
    with fits.open(info.root / rel) as hdul:
        img = hdul["IMAGE"].data.astype(float)
        hdr = hdul["IMAGE"].header
        plane_cube = hdul["PSF"].data.astype(float)
    det = Detector(hdr["DETECTOR"], info.npix)
    sky, _, _ = scene.sky(det.number, info.npix, info.seed, hdr["OBSID"], det.wave_images[0])
    return img - sky, plane_cube, det.solid_angle


def test_cube_planes_normalised_and_contained():
    for d in (1, 6):
        det = Detector(d, 2040)
        cube = det.psf_cube
        assert cube.shape == (121, 101, 101)
        assert np.allclose(cube.sum(axis=(1, 2)), 1.0, atol=1e-5)
        # Fraction of the model inside the cube's 10.1 x 10.1 px: > 99.9 %.
        wide = np.linspace(-40, 40, 801)
        inside = np.linspace(-5.05, 5.05, 2)
        p = det.psf_params
        w, ins = (np.broadcast_to(a, (p.shape[0], a.size)) for a in (wide, inside))
        total = psf.integrate(p, w, w).sum(axis=(1, 2))
        core = psf.integrate(p, ins, ins)[:, 0, 0]
        assert np.allclose(total, 1.0, atol=1e-9)
        assert core.min() > 0.999


def test_psf_shape_realism():
    det = Detector(3, 2040)
    cube = det.psf_cube.astype(float)
    g = (np.arange(101) - 50) / 10.0
    cx = (cube.sum(axis=1) * g).sum(axis=1)
    cy = (cube.sum(axis=2) * g).sum(axis=1)
    # Centroids off the declared centre by a few hundredths of a pixel, varying over the zones.
    assert 0.01 < np.median(np.hypot(cx, cy)) < 0.1 and np.ptp(cx) > 0.02
    # Asymmetric: the plane differs from its 180-degree rotation.
    assert np.abs(cube[60] - cube[60, ::-1, ::-1]).max() > 0.01 * cube[60].max()

    # FWHM ~ 2 native pixels, growing with wavelength (across bands).
    def fwhm(plane):
        prof = plane[50]
        above = np.flatnonzero(prof >= prof.max() / 2)
        return (above[-1] - above[0] + 1) / 10.0

    f1, f6 = fwhm(Detector(1, 2040).psf_cube[60]), fwhm(Detector(6, 2040).psf_cube[60])
    assert 1.5 < f1 < f6 < 2.8


def test_rendered_sources_match_cube(sim_archive_noiseless):
    info = sim_archive_noiseless
    iso = _isolated(info)
    checked = 0
    for rel, rows in list(iso.groupby("relpath"))[:4]:
        src_img, cube, omega = _source_only(info, rel)
        for _, r in rows.iterrows():
            ix, iy = round(r.x), round(r.y)
            ys, xs = np.mgrid[iy - 6 : iy + 7, ix - 6 : ix + 7]
            got = src_img[ys, xs] * MJY_PER_SR_TO_UJY_PER_ARCSEC2 * omega[ys, xs]
            want = r.flux_ujy * cube_pixel_fractions(cube[r.psf_zone - 1], r.x, r.y, xs, ys)
            assert np.max(np.abs(got - want)) < 1e-4 * want.max()
            # The wrong zone (or the zone from swapped cards) would not fit as well.
            other = r.flux_ujy * cube_pixel_fractions(cube[(r.psf_zone + 40) % 121], r.x, r.y, xs, ys)
            assert np.max(np.abs(got - other)) > np.max(np.abs(got - want))
            checked += 1
    assert checked >= 10


def test_zone_cards_and_erratum(sim_archive):
    c = psf.zone_centres(sim_archive.npix)
    seen = set()
    for rel in sim_archive.files:
        with fits.open(sim_archive.root / rel) as hdul:
            version = hdul[0].header["VERSION"]
            h = hdul["PSF"].header
        k = 3 * 11 + 7 + 1  # ix = 7, iy = 3
        if version == "6.5.4":
            assert (h[f"XCTR_{k}"], h[f"YCTR_{k}"]) == pytest.approx((c[3], c[7]), abs=1e-3)
        else:
            assert (h[f"XCTR_{k}"], h[f"YCTR_{k}"]) == pytest.approx((c[7], c[3]), abs=1e-3)
        seen.add(version)
    assert seen == {"6.5.4", "6.5.4+psffix1", "6.5.6"}


def test_average_psf_product_equals_file_cube(sim_archive):
    rel = sim_archive.files[0]
    with fits.open(sim_archive.root / rel) as hdul:
        d = hdul["IMAGE"].header["DETECTOR"]
        cube = hdul["PSF"].data
    cal = sim_archive.root / calibration_relpath("average_psf", d).split("spherex/", 1)[1]
    with fits.open(cal) as c:
        assert np.array_equal(c["PSF"].data, cube)
        assert c["PSF"].header["XCTR_2"] == pytest.approx(psf.zone_centres(sim_archive.npix)[1])
