"""The two QR3 calibration options for QR2-processed images, on a mixed archive: l3_flux_corrections
(IMAGE x factor, VARIANCE x factor^2) undoes exactly the error the simulator put in those files and is
never applied to R7 files; psf_source 'epsf' measures QR2 images with QR3's newest R7 ePSF. What was
applied is in each measurement's columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from truth_match import truth_with_positions

from spxbatch.fetch.cache import FetchCache
from spxbatch.fetch.fetch import fetch_image
from spxbatch.fetch.options import FetchOptions
from spxbatch.level2.epsf import EPSFTable
from spxbatch.level2.naming import IBE_ROOT
from spxbatch.photometry import PhotometryConfig
from spxbatch.photometry.measure import measure_region

HALF = 12


@pytest.fixture(scope="module")
def truth(sim_archive_mixed):
    t = truth_with_positions(sim_archive_mixed)
    return t[~t.superseded]


def _measure(info, truth, relpath: str, **options) -> pd.DataFrame:
    t = truth[truth.relpath == relpath]
    row = {"url": "", "relpath": f"{IBE_ROOT}/{relpath}", "detector": int(relpath.split("/")[4])}
    result = fetch_image(row, t.ra.to_numpy(), t.dec.to_numpy(), halfsize=HALF, cache=FetchCache(),
                         options=FetchOptions(file_root=str(info.root), **options))
    assert result.error is None
    parts = []
    for region, idx in result.regions:
        out = pd.DataFrame(measure_region(region, t.ra.to_numpy()[idx], t.dec.to_numpy()[idx], PhotometryConfig()))
        out["truth"] = t.flux_ujy.to_numpy()[idx]
        out["l3"] = t.l3_flux_factor.to_numpy()[idx]
        out["psf_origin"] = region.psf_origin
        out["psf"] = [region.psf] * len(out)
        parts.append(out)
    return pd.concat(parts, ignore_index=True)


def _bright(d: pd.DataFrame) -> pd.DataFrame:
    return d[d.good & (d.snr > 50)]


def test_l3_corrections_undo_the_qr2_flux_error(sim_archive_mixed, truth):
    qr2 = truth[(truth.layout == "QR2") & (truth.l3_flux_factor < 0.99)]
    relpath = qr2.relpath.value_counts().index[0]
    plain = _bright(_measure(sim_archive_mixed, truth, relpath))
    fixed = _bright(_measure(sim_archive_mixed, truth, relpath, l3_flux_correction=True))
    assert len(fixed) >= 3 and (plain.flux_factor == 1).all()
    np.testing.assert_allclose(fixed.flux_factor, fixed.l3, rtol=2e-3)  # the factor at the source, recorded
    off = np.median(plain.flux / plain.truth - 1)
    assert abs(np.median(plain.flux / plain.truth * plain.l3 - 1)) < 0.005 and abs(off) > 0.01
    assert abs(np.median(fixed.flux / fixed.truth - 1)) < 0.005
    np.testing.assert_allclose(fixed.flux_err / plain.flux_err, fixed.flux_factor, rtol=0.02)  # VARIANCE x f^2


def test_r7_files_are_never_corrected(sim_archive_mixed, truth):
    relpath = truth[truth.layout == "R7"].relpath.value_counts().index[0]
    d = _measure(sim_archive_mixed, truth, relpath, l3_flux_correction=True)
    assert (d.flux_factor == 1).all()


def test_qr2_images_measured_with_the_qr3_epsf(sim_archive_mixed, truth):
    qr2 = truth[truth.layout == "QR2"]
    relpath = qr2.relpath.value_counts().index[0]
    detector = int(qr2.set_index("relpath").loc[relpath, "detector"].iloc[0])
    own = _measure(sim_archive_mixed, truth, relpath)
    d = _measure(sim_archive_mixed, truth, relpath, psf_source="epsf")
    assert set(d.psf_origin) == {"qr3 epsf"} and set(own.psf_origin) == {"file"}
    psf = d.psf.iloc[0]
    assert isinstance(psf, EPSFTable) and psf.nzones == (11 * 41 if detector == 3 else 21 * 21)
    ratio = _bright(d).flux / _bright(own).flux
    assert len(ratio) >= 3 and abs(np.median(ratio) - 1) < 0.02  # another model of the same PSF
