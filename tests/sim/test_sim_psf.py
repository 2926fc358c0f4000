"""The PSF cube in each file is exactly the model the sources were rendered with; the erratum is present."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from scipy.interpolate import RectBivariateSpline

from spxbatch.level2.constants import MJY_PER_SR_TO_UJY_PER_ARCSEC2
from spxbatch.level2.naming import calibration_relpath
from spxbatch.sim import psf, scene
from spxbatch.sim.instrument import Detector
from spxbatch.sim.paths import strip_ibe


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
        wide = np.array([-40.0, 40.0])
        inside = np.linspace(-5.05, 5.05, 2)
        p = det.psf_params
        w, ins = (np.broadcast_to(a, (p.shape[0], a.size)) for a in (wide, inside))
        total = psf.integrate(p, w, w)[:, 0, 0]
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
    groups = list(iso.groupby("relpath"))
    variant = [g for g in groups if g[1].psf_variant.all()]
    assert variant  # the file shipping the variant PSF is rendered with its own cube
    checked = 0
    for rel, rows in variant + groups[:3]:
        src_img, cube, omega = _source_only(info, rel)
        for _, r in rows.iterrows():
            ix, iy = round(r.x), round(r.y)
            ys, xs = np.mgrid[iy - 6 : iy + 7, ix - 6 : ix + 7]
            got = src_img[ys, xs] * MJY_PER_SR_TO_UJY_PER_ARCSEC2 * omega[ys, xs]
            want = r.flux_ujy * cube_pixel_fractions(cube[r.psf_zone - 1], r.x, r.y, xs, ys)
            # Equal up to the cube normalisation (the model keeps > 99.9% of its light inside the cube).
            assert np.max(np.abs(got - want)) < 5e-4 * want.max()
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


def _zone_lookup(hdr: fits.Header, x: np.ndarray, y: np.ndarray, agnostic: bool) -> np.ndarray:
    """1-based plane of the nearest zone: naively from (XCTR_k, YCTR_k), or from sorted unique centres."""
    xc = np.array([hdr[f"XCTR_{k}"] for k in range(1, 122)])
    yc = np.array([hdr[f"YCTR_{k}"] for k in range(1, 122)])
    if not agnostic:
        d = (x[:, None] - xc[None, :]) ** 2 + (y[:, None] - yc[None, :]) ** 2
        return np.argmin(d, axis=1) + 1
    c = np.unique(np.round(xc, 6))
    ix = np.argmin(np.abs(x[:, None] - c[None, :]), axis=1)
    iy = np.argmin(np.abs(y[:, None] - c[None, :]), axis=1)
    return iy * 11 + ix + 1


def test_zone_cards_select_the_rendered_zone(sim_archive):
    meas = pd.read_parquet(sim_archive.truth["measurements"])
    naive_wrong = 0
    for rel, rows in meas.groupby("relpath"):
        with fits.open(sim_archive.root / rel) as hdul:
            hdr = hdul["PSF"].header
            erratum = hdul[0].header["VERSION"] == "6.5.4"
        x, y = rows.x.to_numpy(), rows.y.to_numpy()
        assert np.array_equal(_zone_lookup(hdr, x, y, agnostic=True), rows.psf_zone)
        naive = _zone_lookup(hdr, x, y, agnostic=False)
        if erratum:
            naive_wrong += np.sum(naive != rows.psf_zone)
        else:
            assert np.array_equal(naive, rows.psf_zone)
    assert naive_wrong > 0  # the erratum bites a naive lookup


def test_average_psf_product_equals_file_cube(sim_archive):
    rel = sim_archive.files[0]
    with fits.open(sim_archive.root / rel) as hdul:
        d = hdul["IMAGE"].header["DETECTOR"]
        cube = hdul["PSF"].data
    cal = sim_archive.root / strip_ibe(calibration_relpath("average_psf", d))
    with fits.open(cal) as c:
        assert np.array_equal(c["PSF"].data, cube)
        assert c["PSF"].header["XCTR_2"] == pytest.approx(psf.zone_centres(sim_archive.npix)[1])


def test_variant_psf_under_the_same_version(sim_archive):
    """One detector ships two different cubes under one version: a PSF cache must key on content."""
    files = pd.read_csv(sim_archive.truth["files"])
    files = files[files.present]
    var = files[files.psf_variant]
    assert len(var) >= 1
    v = var.iloc[0]
    same = files[(files.detector == v.detector) & (files.version == v.version) & ~files.psf_variant]
    assert len(same) >= 1
    with fits.open(sim_archive.root / v.relpath) as a, fits.open(sim_archive.root / same.relpath.iloc[0]) as b:
        assert a[0].header["VERSION"] == b[0].header["VERSION"]
        assert not np.array_equal(a["PSF"].data, b["PSF"].data)
        # the headers differ only in the DATASUM/CHECKSUM of the cube, so a cache keyed on the header is one
        # keyed on the content
        ha, hb = a["PSF"].header.copy(), b["PSF"].header.copy()
        assert ha["DATASUM"] != hb["DATASUM"]
        for h in (ha, hb):
            del h["DATASUM"], h["CHECKSUM"]
        assert ha.tostring() == hb.tostring()
        cal = sim_archive.root / strip_ibe(calibration_relpath("average_psf", int(v.detector)))
        with fits.open(cal) as c:
            assert np.array_equal(c["PSF"].data, b["PSF"].data)
