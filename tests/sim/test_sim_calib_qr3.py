"""QR3's calibration tree: IRSA's paths and tags, no average_psf, the ePSF files carry the level-2 files'
table (D3 delivered twice), the l3 factors, spectral WCS and solid-angle map are the truth's."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from astropy.io import fits

from spxbatch.sim import lvf
from spxbatch.sim.instrument import Detector

CAL_PATH = re.compile(
    r"^qr3/(?P<p>[a-z0-9_]+)/(?P<tag>cal-[a-z]+-v\d+-\d{4}-\d{3})/(?P<d>\d)/(?P=p)_D(?P=d)_spx_(?P=tag)\.fits$"
)


def test_tree_and_tags(sim_archive_qr3):
    info = sim_archive_qr3
    cal = pd.read_csv(info.truth["calibration"])
    assert sorted(cal.relpath) == sorted(info.calibration_files)
    assert set(cal.release) == {"qr3"}
    for rel in info.calibration_files:
        assert CAL_PATH.match(rel), rel
        assert (info.root / rel).is_file()
    tags = {p: set(g.tag) for p, g in cal.groupby("product")}
    assert tags == {
        "epsf": {"cal-epsf-v1-2026-191", "cal-epsf-v2-2026-191"},
        "l3_flux_corrections": {"cal-flxc-v1-2026-191"},
        "spectral_wcs": {"cal-swcs-v5-2026-191"},
        "solid_angle_pixel_map": {"cal-sapm-v3-2026-191"},
    }
    current = cal[cal["current"]]
    assert not current.duplicated(["product", "detector"]).any() and len(current) == 4 * 6
    assert set(current.loc[current["product"] == "epsf"].set_index("detector").tag.items()) == {
        (d, "cal-epsf-v2-2026-191" if d == 3 else "cal-epsf-v1-2026-191") for d in range(1, 7)}
    assert not (info.root / "qr3" / "average_psf").exists() and not (info.root / "qr2").exists()


def test_epsf_files_carry_the_level2_table(sim_archive_qr3):
    info = sim_archive_qr3
    cal = pd.read_csv(info.truth["calibration"])
    epsf = cal[cal["product"] == "epsf"]
    level2 = {}
    for rel in info.files:
        with fits.open(info.root / rel) as hdul:
            level2.setdefault(hdul[0].header["DETECTOR"], hdul["EPSF"].data["EPSF"].copy())
    for r in epsf.itertuples():
        with fits.open(info.root / r.relpath) as hdul:
            assert [h.name for h in hdul] == ["PRIMARY", "EPSF", "EPSF_MOSAIC"]
            prim, table = hdul[0].header, hdul["EPSF"]
            nzx, nzy = prim["NBINX"], prim["NBINY"]
            assert prim["NBINS"] == len(table.data) == nzx * nzy and prim["PSFNX"] == prim["PSFNY"] == 33
            assert int(prim["VERSION"].split(".")[0]) == 7 and table.header["OVSMPX"] == 5
            mosaic = hdul["EPSF_MOSAIC"].data
            assert hdul["EPSF_MOSAIC"].header["GUTTER"] == 1
            assert mosaic.shape == (nzy * 34 - 1, nzx * 34 - 1) and mosaic.dtype.kind == "f"
            k = nzx + 1  # zone (1, 1)
            assert np.array_equal(mosaic[34:67, 34:67], table.data["EPSF"][k])
            if r.current:
                assert np.array_equal(table.data["EPSF"], level2[r.detector])
            else:
                assert r.detector == 3 and (nzx, nzy) == (21, 21)  # the first D3 delivery
                assert table.data["EPSF"].shape[0] != level2[3].shape[0]


def test_l3_spectral_wcs_and_solid_angle_are_the_truth(sim_archive_qr3):
    info = sim_archive_qr3
    cal = pd.read_csv(info.truth["calibration"]).set_index(["product", "detector"])
    for d in (1, 5):
        det = Detector(d, info.npix)
        l3 = fits.getdata(info.root / cal.loc[("l3_flux_corrections", d), "relpath"], "IMAGE")
        assert l3.shape == (info.npix, info.npix) and np.array_equal(l3, det.l3_factors)
        assert abs(np.median(l3) - {1: 0.970, 5: 1.007}[d]) < 0.01
        assert np.ptp(np.median(l3, axis=1)) > 0.02  # structured across rows
        with fits.open(info.root / cal.loc[("spectral_wcs", d), "relpath"]) as hdul:
            cwave, cband = hdul["CWAVE"].data, hdul["CBAND"].data
        yy, xx = np.mgrid[0 : info.npix, 0 : info.npix]
        assert np.allclose(cwave, lvf.wavelength_um(d, xx, yy, info.npix), rtol=1e-6)
        assert np.allclose(cband, lvf.bandwidth_um(d, cwave), rtol=1e-5)
        sapm = fits.getdata(info.root / cal.loc[("solid_angle_pixel_map", d), "relpath"], "IMAGE")
        assert np.allclose(sapm, det.solid_angle, rtol=1e-6)


def test_mixed_archive_has_both_trees(sim_archive_mixed):
    cal = pd.read_csv(sim_archive_mixed.truth["calibration"])
    assert set(cal.release) == {"qr2", "qr3"}
    assert set(cal.loc[cal.release == "qr2", "product"]) == {"solid_angle_pixel_map", "spectral_wcs", "average_psf"}
    assert all((sim_archive_mixed.root / r).is_file() for r in cal.relpath)
