"""Simulated R7 files have the layout of R7-contract.md: HDUs, dtypes, cards, compressed FLAGS, grids, paths."""

from __future__ import annotations

import re

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS

from spxbatch.sim import COLLECTION_CARD, lvf
from spxbatch.sim.r7 import R7_FLAG_BITS, epsf_zones

R7_HDUS = ("PRIMARY", "IMAGE", "FLAGS", "VARIANCE", "ZODI", "EPSF", "WCS-WAVE")
QR3_PATH = re.compile(
    r"^qr3/level2/(?P<period>\d{4}W\d{2}_\d[A-Z])/(?P<tag>l2b-v\d+-\d{4}-\d{3})/(?P<d>\d)/"
    r"level2_(?P=period)_\d{4}_\dD(?P=d)_spx_(?P=tag)\.fits$"
)
EPSF_COLUMNS = {
    "BINX": "J", "BINY": "J", "XCENTER": "E", "YCENTER": "E", "XWIDTH": "E", "YWIDTH": "E", "NSTAR": "J",
    "NEFF_MEAN": "E", "CWAVE": "E", "CBAND": "E", "EPSF": "1089D",
}


def _raw_header(path, extname: str) -> dict[str, str]:
    """The cards of an extension exactly as stored in the file (not as astropy presents them)."""
    raw = path.read_bytes()
    for start in range(0, len(raw), 2880):
        if not raw.startswith(b"XTENSION= ", start):
            continue
        cards = []
        while not raw.startswith(b"END ", start):
            cards.append(raw[start : start + 80].decode("ascii"))
            start += 80
        parsed = {c[:8].strip(): c[10:].split("/")[0].strip().strip("'").strip() for c in cards if c[8:10] == "= "}
        if parsed.get("EXTNAME") == extname:
            return parsed
    raise KeyError(extname)


def test_every_file_has_the_r7_hdus_and_dtypes(sim_archive_qr3):
    info = sim_archive_qr3
    n = info.npix
    for rel in info.files:
        assert QR3_PATH.match(rel), rel
        with fits.open(info.root / rel) as hdul:
            assert tuple(h.name for h in hdul) == R7_HDUS
            assert isinstance(hdul["FLAGS"], fits.CompImageHDU)
            for name, kind in (("IMAGE", ">f4"), ("VARIANCE", ">f4"), ("ZODI", ">f4")):
                assert hdul[name].data.shape == (n, n) and hdul[name].data.dtype.str == kind
            assert hdul["FLAGS"].data.shape == (n, n) and hdul["FLAGS"].data.dtype.kind == "i"
            assert hdul["FLAGS"].data.dtype.itemsize == 4
            assert "PSF" not in hdul
            assert int(hdul[0].header["VERSION"].split(".")[0]) >= 7


def test_primary_and_image_cards(sim_archive_qr3):
    info = sim_archive_qr3
    with fits.open(info.root / info.files[0]) as hdul:
        prim, img = hdul[0].header, hdul["IMAGE"].header
        assert prim["VERSION"] == "7.0.5" and prim[COLLECTION_CARD] == "spherex_qr3"
        assert prim["PROCTAG"] in info.files[0] and prim["DETECTOR"] == img["DETECTOR"]
        assert img["BUNIT"] == "MJy / sr" and u.Unit(img["BUNIT"]) == u.MJy / u.sr
        assert img["DETCOORD"] == "sky" and img["L1DQAFLG"] == "Pass" and img["L2DQAFLG"] == "Pass"
        assert img["NON_SURVEY"] is False and "HIERARCH NON_SURVEY = F" in img.tostring()
        assert img["JACTIVE"] == img["KACTIVE"] == info.npix
        assert img["XPOSURE"] == pytest.approx(113.5826)
        assert img["CTYPE1"] == "RA---TAN-SIP" and img["A_ORDER"] == 3
        assert img["CRPIX1A"] == 1 and img["CTYPE1W"] == "WAVE-TAB"
        assert img["L2 N_BLOOM"] == np.count_nonzero(hdul["FLAGS"].data & (1 << R7_FLAG_BITS["BLOOM"]))


def test_flags_are_rice_tile_compressed_one_row_per_tile_with_mskn_cards(sim_archive_qr3):
    info = sim_archive_qr3
    path = info.root / info.files[0]
    raw = _raw_header(path, "FLAGS")
    assert raw["XTENSION"] == "BINTABLE" and raw["ZIMAGE"] == "T" and raw["ZCMPTYPE"] == "RICE_1"
    assert int(raw["ZTILE1"]) == info.npix and int(raw["ZTILE2"]) == 1
    assert int(raw["NAXIS2"]) == info.npix and int(raw["PCOUNT"]) > 0  # one table row per image row, heap after
    assert int(raw["ZBITPIX"]) == 32
    with fits.open(path) as hdul:
        hdr = hdul["FLAGS"].header
        names = {int(k[4:]): hdr[k] for k in hdr if k.startswith("MSKN")}
        assert names == {b: name for name, b in R7_FLAG_BITS.items()}
        assert all(re.fullmatch(r"MSKN\d{4}", k) for k in hdr if k.startswith("MSKN"))
        assert not [k for k in hdr if "MP_" in k]  # DECISION: R7 FLAGS carry MSKN cards only
    assert path.stat().st_size < 4 * 4 * info.npix**2 + 4.0e6  # FLAGS smaller than a plain int32 plane


def test_epsf_table_columns_header_and_zone_grid(sim_archive_qr3):
    info = sim_archive_qr3
    seen = set()
    for rel in info.files:
        with fits.open(info.root / rel) as hdul:
            d = hdul[0].header["DETECTOR"]
            if d in seen:
                continue
            seen.add(d)
            tab = hdul["EPSF"]
            hdr = tab.header
            assert {c.name: c.format for c in tab.columns} == EPSF_COLUMNS
            assert tab.columns["EPSF"].dim == "(33,33)" and tab.data["EPSF"].shape[1:] == (33, 33)
            assert hdr["OVSMPX"] == hdr["OVSMPY"] == 5 and hdr["ORDERING"] == "x-fast then y"
            assert hdr["DETCOORD"] == "sky" and hdr["DETECTOR"] == str(d)
            nzx, nzy = epsf_zones(d)
            assert len(tab.data) == nzx * nzy == (451 if d == 3 else 441)
            assert np.array_equal(tab.data["BINX"], np.tile(np.arange(nzx), nzy))  # x fastest
            assert np.array_equal(tab.data["BINY"], np.repeat(np.arange(nzy), nzx))
            xc = np.unique(tab.data["XCENTER"])
            yc = np.unique(tab.data["YCENTER"])
            assert xc.size == nzx and yc.size == nzy
            width = info.npix / nzx
            assert np.allclose(xc, (np.arange(nzx) + 0.5) * width - 0.5, atol=1e-4)
            assert np.allclose(tab.data["XWIDTH"], width) and np.allclose(tab.data["YWIDTH"], info.npix / nzy)
            lam = lvf.wavelength_um(d, tab.data["XCENTER"], tab.data["YCENTER"], info.npix)
            assert np.allclose(tab.data["CWAVE"], lam, rtol=1e-6)
            assert np.allclose(tab.data["CBAND"], lvf.bandwidth_um(d, lam), rtol=1e-6)
            assert (tab.data["NSTAR"] > 0).all() and (tab.data["NEFF_MEAN"] > 3).all()
    assert seen == {1, 2, 3, 4, 5, 6}


def test_wcs_wave_is_9x9_and_gives_the_true_wavelength(sim_archive_qr3):
    info = sim_archive_qr3
    n = info.npix
    for rel in info.files[:6]:
        with fits.open(info.root / rel) as hdul:
            row = hdul["WCS-WAVE"].data[0]
            assert row["X"].shape == (9,) and row["Y"].shape == (9,) and row["VALUES"].shape == (9, 9, 2)
            assert np.allclose(np.diff(row["X"]), (n - 1) / 8)
            hdr = hdul["IMAGE"].header
            w = WCS(hdr, fobj=hdul, key="W")
            w.sip = None
            d = hdr["DETECTOR"]
            yy, xx = np.mgrid[0 : n : 7, 0 : n : 7].astype(float)
            lam, dlam = w.pixel_to_world_values(xx.ravel(), yy.ravel())
            true = lvf.wavelength_um(d, xx.ravel(), yy.ravel(), n)
            assert np.abs(lam - true).max() < 1e-3  # within 1 nm everywhere
            assert np.allclose(dlam, lvf.bandwidth_um(d, lam), rtol=1e-3)
