"""astropy decodes sky positions and wavelengths of the truth from the simulated files' headers."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from spxbatch.level2.constants import BANDS
from spxbatch.level2.naming import calibration_relpath
from spxbatch.sim import make_archive, optics
from spxbatch.sim.paths import strip_ibe

warnings.simplefilter("ignore", FITSFixedWarning)


def _truth(info) -> pd.DataFrame:
    meas = pd.read_parquet(info.truth["measurements"])
    src = pd.read_csv(info.truth["sources"])
    return meas.merge(src[["name", "ra", "dec"]], on="name")


def _check_sky(info, max_files: int = 100) -> int:
    truth = _truth(info)
    n = 0
    for rel, rows in list(truth.groupby("relpath"))[:max_files]:
        with fits.open(info.root / rel) as hdul:
            w = WCS(hdul["IMAGE"].header)
            x, y = w.all_world2pix(rows.ra.to_numpy(), rows.dec.to_numpy(), 0, tolerance=1e-8)
            assert np.max(np.hypot(x - rows.x.to_numpy(), y - rows.y.to_numpy())) < 0.01
            ra, dec = w.all_pix2world(rows.x.to_numpy(), rows.y.to_numpy(), 0)
            dra = (ra - rows.ra.to_numpy() + 180) % 360 - 180
            assert np.max(np.abs(dra * np.cos(np.radians(dec)))) * 3600 < 0.01 * 6.15
            n += len(rows)
    return n


def test_sky_round_trip(sim_archive):
    assert _check_sky(sim_archive) > 50


def test_wavelength_from_wcs_wave(sim_archive):
    truth = _truth(sim_archive)
    for rel, rows in truth.groupby("relpath"):
        with fits.open(sim_archive.root / rel) as hdul:
            w = WCS(hdul["IMAGE"].header, fobj=hdul, key="W")
            w.sip = None
            lam, bw = w.pixel_to_world(rows.x.to_numpy(), rows.y.to_numpy())
        assert np.max(np.abs(lam.to_value("um") - rows.wavelength_um)) < 1e-3
        assert np.max(np.abs(bw.to_value("um") - rows.bandwidth_um)) < 1e-3
        band = BANDS[int(rows.detector.iloc[0])]
        assert np.all((rows.wavelength_um >= band.lo_um) & (rows.wavelength_um <= band.hi_um))
        assert np.allclose(rows.bandwidth_um, rows.wavelength_um / band.resolving_power)


def test_wavelength_table_within_1nm_everywhere(sim_archive):
    """The -TAB interpolation of the 11x11 table matches the true LVF (CWAVE) at every pixel."""
    by_detector = {int(r.split("/")[-2]): r for r in sim_archive.files}
    assert {1, 4, 5} <= set(by_detector)
    for d in (1, 4, 5):
        rel = by_detector[d]
        cal = sim_archive.root / strip_ibe(calibration_relpath("spectral_wcs", d))
        with fits.open(sim_archive.root / rel) as hdul, fits.open(cal) as c:
            w = WCS(hdul["IMAGE"].header, fobj=hdul, key="W")
            w.sip = None
            n = sim_archive.npix
            yy, xx = np.mgrid[0:n, 0:n]
            lam, bw = w.pixel_to_world(xx.ravel(), yy.ravel())
            assert np.max(np.abs(lam.to_value("um") - c["CWAVE"].data.ravel())) < 1e-3
            assert np.max(np.abs(bw.to_value("um") - c["CBAND"].data.ravel())) < 1e-3
            # Wavelength runs mainly along y, with some curvature along x.
            cw = c["CWAVE"].data.astype(float)
            assert abs(cw[-1, n // 2] - cw[0, n // 2]) > 0.8 * (BANDS[d].hi_um - BANDS[d].lo_um)
            assert abs(cw[n // 2, 0] - cw[n // 2, n // 2]) > 1e-4


def test_pixel_wcs_a_is_zero_based(sim_archive):
    with fits.open(sim_archive.root / sim_archive.files[0]) as hdul:
        w = WCS(hdul["IMAGE"].header, key="A")
        w.sip = None
        assert np.allclose(w.wcs_pix2world([[0, 0], [10, 20]], 0), [[0, 0], [10, 20]])


def _winding(header) -> float:
    """Signed area of the footprint polygon (pixel-order corners) on the local tangent plane."""
    w = WCS(header)
    n = header["NAXIS1"]
    c = np.array([[-0.5, -0.5], [n - 0.5, -0.5], [n - 0.5, n - 0.5], [-0.5, n - 0.5]])
    ra, dec = w.all_pix2world(c, 0).T
    x = ((ra - ra[0] + 180) % 360 - 180) * np.cos(np.radians(dec))
    return 0.5 * np.sum(x * np.roll(dec, -1) - np.roll(x, -1) * dec)


def test_parity_differs_between_detectors(sim_archive):
    signs = {}
    for rel in sim_archive.files:
        with fits.open(sim_archive.root / rel) as hdul:
            signs[hdul["IMAGE"].header["DETECTOR"]] = np.sign(_winding(hdul["IMAGE"].header))
    assert len(set(signs.values())) == 2


def test_solid_angle_map_matches_wcs(sim_archive):
    rel = sim_archive.files[0]
    with fits.open(sim_archive.root / rel) as hdul:
        hdr = hdul["IMAGE"].header
        d = hdr["DETECTOR"]
        w = WCS(hdr)
    cal = sim_archive.root / strip_ibe(calibration_relpath("solid_angle_pixel_map", d))
    with fits.open(cal) as c:
        omega = c["IMAGE"].data.astype(float)
    assert hdr["OMEGA_MEDIAN"] == pytest.approx(np.median(omega), rel=1e-4)
    # Area of a few pixels from their corners through the full SIP WCS.
    for px, py in ((0, 0), (60, 70), (127, 5)):
        corners = np.array([[px - 0.5, py - 0.5], [px + 0.5, py - 0.5], [px + 0.5, py + 0.5], [px - 0.5, py + 0.5]])
        ra, dec = w.all_pix2world(corners, 0).T
        x = ((ra - ra[0] + 180) % 360 - 180) * np.cos(np.radians(dec.mean())) * 3600
        y = dec * 3600
        area = 0.5 * abs(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))
        assert area == pytest.approx(omega[py, px], rel=2e-4)


@pytest.mark.parametrize(("ra", "dec"), [(359.95, 10.0), (42.0, 89.5)])
def test_wrap_and_polar_fields(tmp_path, ra, dec):
    info = make_archive(tmp_path, npix=96, seed=3, ra=ra, dec=dec, n_visits=3, n_sources=40, calibration=False)
    src = pd.read_csv(info.truth["sources"])
    assert src.ra.between(0, 360, inclusive="left").all()
    if ra > 359:
        assert (src.ra > 359).any() and (src.ra < 1).any()
    else:
        assert src.ra.max() - src.ra.min() > 90  # the polar field spans many hours of RA
    assert _check_sky(info) > 40


@pytest.mark.parametrize("detector", [1, 6])
def test_inverse_sip_inverts_forward_at_full_size(detector):
    opt = optics.optics(detector, 2040)
    w = optics.make_wcs(opt, 10.0, -30.0, 75.0)
    pix = np.random.default_rng(0).uniform(-0.5, 2039.5, (2000, 2))
    foc = w.sip_pix2foc(pix, 0)
    assert np.max(np.abs(w.sip_foc2pix(foc, 0) - pix)) < 0.005
    # The distortion itself is real: pixels at the corners move by more than a pixel.
    lin = pix + 1 - opt.crpix
    assert np.max(np.hypot(*(foc - lin).T)) > 1.0


def test_airglow_stripe_in_d1(sim_archive_noiseless):
    files = pd.read_csv(sim_archive_noiseless.truth["files"])
    row = files[(files.detector == 1) & files.present].iloc[0]
    cal = strip_ibe(calibration_relpath("spectral_wcs", 1))
    with fits.open(sim_archive_noiseless.root / row.relpath) as h, fits.open(sim_archive_noiseless.root / cal) as c:
        sky = np.median(h["IMAGE"].data - row.zodi_scale * h["ZODI"].data, axis=1)
        lam = c["CWAVE"].data[:, sim_archive_noiseless.npix // 2]
    near, far = sky[np.argmin(np.abs(lam - 1.083))], np.median(sky[np.abs(lam - 1.083) > 0.1])
    assert near - far == pytest.approx(row.airglow_mjysr, rel=0.3)
