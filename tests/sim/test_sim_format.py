"""The simulated Level-2 files have IRSA's format: HDUs, dtypes, byte order, cards, flags, variance rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy import units as u
from astropy.io import fits

from spxbatch.level2.constants import FLAG_BITS, HDU_NAMES
from spxbatch.level2.flags import flag_bits_from_header
from spxbatch.level2.naming import obs_id_parts
from spxbatch.level2.read import region_from_hdul
from spxbatch.sim import COLLECTION_CARD


@pytest.fixture(scope="module")
def first_file(sim_archive):
    return sim_archive.root / sim_archive.files[0]


def test_hdu_layout_and_dtypes(sim_archive):
    for rel in sim_archive.files:
        with fits.open(sim_archive.root / rel) as hdul:
            assert tuple(h.name for h in hdul) == HDU_NAMES
            n = sim_archive.npix
            for name, kind in (("IMAGE", "f4"), ("FLAGS", "i4"), ("VARIANCE", "f4"), ("ZODI", "f4")):
                data = hdul[name].data
                assert data.shape == (n, n)
                assert data.dtype.str == ">" + kind  # big-endian, as in the archive
            assert hdul["PSF"].data.shape == (121, 101, 101)
            assert hdul["PSF"].data.dtype.str == ">f4"
            assert isinstance(hdul["WCS-WAVE"], fits.BinTableHDU)
            assert len(hdul["WCS-WAVE"].data) == 1


def test_required_cards(first_file):
    with fits.open(first_file) as hdul:
        prim, img = hdul[0].header, hdul["IMAGE"].header
        assert prim["VERSION"] in ("6.5.4+psffix1", "6.5.4", "6.5.6")
        assert prim[COLLECTION_CARD] in ("spherex_qr2", "spherex_qr2_deep")
        assert u.Unit(img["BUNIT"]) == u.MJy / u.sr
        assert u.Unit(hdul["VARIANCE"].header["BUNIT"]) == (u.MJy / u.sr) ** 2
        for key in (
            "DETECTOR",
            "OBSID",
            "EXPIDN",
            "PSF_FWHM",
            "MJD-BEG",
            "MJD-END",
            "MJD-AVG",
            "MJD-OBS",
            "DATE-AVG",
            "XPOSURE",
            "WCSNAME",
            "WCSNAMEA",
            "WCSNAMEW",
            "OMEGA_MEDIAN",
            "DATE",
        ):
            assert key in img, key
        assert img["CTYPE1"] == "RA---TAN-SIP" and img["CTYPE2"] == "DEC--TAN-SIP"
        assert img["A_ORDER"] == 3 and img["AP_ORDER"] == 3
        assert img["CRPIX1A"] == 1 and img["CRPIX2A"] == 1
        assert img["XPOSURE"] == pytest.approx(113.5826)
        assert (img["MJD-END"] - img["MJD-BEG"]) * 86400 == pytest.approx(115.12, abs=1e-3)
        assert img["MJD-AVG"] == pytest.approx(0.5 * (img["MJD-BEG"] + img["MJD-END"]))
        obs_id_parts(img["OBSID"])
        assert 30 < img["OMEGA_MEDIAN"] < 45
        psf = hdul["PSF"].header
        assert psf["OVERSAMP"] == 10
        assert all(f"{c}_{k}" in psf for c in ("XCTR", "YCTR", "XWID", "YWID") for k in range(1, 122))


def test_flag_cards_are_hierarch_and_complete(first_file):
    with fits.open(first_file) as hdul:
        hdr = hdul["FLAGS"].header
        assert flag_bits_from_header(hdr) == FLAG_BITS
        raw = hdr.tostring()
        assert "HIERARCH MP_TRANSIENT = " in raw and "HIERARCH MP_HOT = " in raw


def test_region_reader_accepts_files(sim_archive):
    with fits.open(sim_archive.root / sim_archive.files[0]) as hdul:
        region = region_from_hdul(hdul)
    assert (region.x0, region.y0) == (0, 0)
    assert region.wave.values.shape == (11, 11, 2)
    assert region.image.dtype.isnative


def test_variance_nan_only_on_flagged_pixels(sim_archive):
    n_nan = 0
    for rel in sim_archive.files:
        with fits.open(sim_archive.root / rel) as hdul:
            var, flags, img = hdul["VARIANCE"].data, hdul["FLAGS"].data, hdul["IMAGE"].data
            bad = ~np.isfinite(var)
            n_nan += bad.sum()
            assert np.all(flags[bad] != 0)
            assert np.all(flags[~np.isfinite(img)] != 0)
            assert np.any(np.isfinite(var) & (var > 0))
            assert np.nanmin(var) > 0
            # VARIANCE = floor + photon term of the observed rate: it rises with the observed pixel value.
            good = (flags == 0) & np.isfinite(var)
            assert np.corrcoef(img[good], var[good])[0, 1] > 0.99
    assert n_nan > 0


def test_source_flag_covers_pixels_near_sources(sim_archive):
    meas = pd.read_parquet(sim_archive.truth["measurements"])
    rel = sim_archive.files[0]
    rows = meas[meas.relpath == rel]
    with fits.open(sim_archive.root / rel) as hdul:
        flags = hdul["FLAGS"].data
    src = 1 << FLAG_BITS["SOURCE"]
    ix, iy = np.rint(rows.x).astype(int), np.rint(rows.y).astype(int)
    assert np.mean((flags[iy, ix] & src) != 0) > 0.95
    assert 0.01 < np.mean((flags & src) != 0) < 0.9


def test_bright_stars_overflow_and_nonlinear(sim_archive):
    names = {"OVERFLOW": 0, "NONLINEAR": 0}
    for rel in sim_archive.files:
        with fits.open(sim_archive.root / rel) as hdul:
            flags = hdul["FLAGS"].data
            img = hdul["IMAGE"].data
            for name in names:
                hit = (flags & (1 << FLAG_BITS[name])) != 0
                names[name] += hit.sum()
                if hit.any():
                    assert np.nanmin(img[hit]) > 50  # only on bright-star cores
    assert names["OVERFLOW"] > 0 and names["NONLINEAR"] > names["OVERFLOW"]
