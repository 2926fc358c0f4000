"""The Level-2 layout checks: a scanned file or opened bytes is QR2 or R7, or a FitsStructureError says why not."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits
from fits_files import FileReader, write_mef

from spxbatch.level2.constants import HDU_NAMES, R7_FLAG_BITS
from spxbatch.level2.fitsmap import FitsStructureError, scan_fits
from spxbatch.level2.flags import flag_bits_from_header
from spxbatch.level2.layout import PLANES, QR2, R7, check_fitsmap, check_hdul, layout_of, pipeline_major
from spxbatch.level2.read import open_level2


def _scan(path):
    reader = FileReader(path)
    return scan_fits(reader, len(reader.data), str(path))


def _bytes(hdul: fits.HDUList) -> bytes:
    buf = io.BytesIO()
    hdul.writeto(buf)
    return buf.getvalue()


def test_qr2_layout_describes_the_file(tmp_path):
    path = tmp_path / "l2.fits"
    write_mef(path, n=64)
    assert QR2.hdu_names == HDU_NAMES and PLANES == ("IMAGE", "FLAGS", "VARIANCE", "ZODI")
    assert check_fitsmap(_scan(path)) is QR2
    with fits.open(path) as hdul:
        assert check_hdul(hdul, "x") is QR2
        assert flag_bits_from_header(hdul["FLAGS"].header) == {"TRANSIENT": 0}  # its MP_ card
        with open_level2(path.read_bytes(), "x") as again:
            assert np.array_equal(again["ZODI"].data, hdul["ZODI"].data)


def test_wrong_hdus_and_dtypes_are_refused(tmp_path):
    path = tmp_path / "l2.fits"
    write_mef(path, n=64)
    with fits.open(path) as hdul:
        six = fits.HDUList([h.copy() for h in hdul[:-1]])
        floaty = fits.HDUList([h.copy() for h in hdul])
        floaty["FLAGS"].data = floaty["FLAGS"].data.astype(">f4")
        thin = fits.HDUList([h.copy() for h in hdul])
        thin["VARIANCE"].data = thin["VARIANCE"].data[:32]
    with pytest.raises(FitsStructureError, match="expected"):
        layout_of([h.name for h in six], "six")
    with pytest.raises(FitsStructureError, match="HDUs"):
        open_level2(_bytes(six), "six.fits")
    (tmp_path / "floaty.fits").write_bytes(_bytes(floaty))
    with pytest.raises(FitsStructureError, match="FLAGS has BITPIX -32"):
        check_fitsmap(_scan(tmp_path / "floaty.fits"))
    (tmp_path / "thin.fits").write_bytes(_bytes(thin))
    with pytest.raises(FitsStructureError, match="shapes"):
        check_fitsmap(_scan(tmp_path / "thin.fits"))


def test_r7_layout_is_told_by_the_file_not_its_path(sim_archive_mixed, tmp_path):
    """An R7 reprocessing under qr2/ is R7 (VERSION 7.x, EPSF, compressed FLAGS with MSKN cards); a QR2
    file beside it stays QR2."""
    r7_rel = next(r for r in sim_archive_mixed.files if r.startswith("qr2/") and "v26-2026-196" in r)
    qr2_rel = next(r for r in sim_archive_mixed.files if r.startswith("qr2/") and "v26-2026" not in r)
    assert check_fitsmap(_scan(sim_archive_mixed.root / r7_rel)) is R7
    assert check_fitsmap(_scan(sim_archive_mixed.root / qr2_rel)) is QR2
    with fits.open(sim_archive_mixed.root / r7_rel) as hdul:
        assert check_hdul(hdul, r7_rel) is R7
        bits = flag_bits_from_header(hdul["FLAGS"].header)
        assert bits["BLOOM"] == 26 and bits["SATELLITE_HALO"] == 29 and bits["TRANSIENT"] == 0
        assert bits == R7_FLAG_BITS


def test_version_and_hdus_must_agree(sim_archive_mixed, tmp_path):
    r7_rel = next(r for r in sim_archive_mixed.files if r.startswith("qr3/"))
    with pytest.raises(FitsStructureError, match=r"VERSION 6\.5\.4"):
        layout_of(R7.hdu_names, "x", "6.5.4")
    with pytest.raises(FitsStructureError, match=r"VERSION 7\.0\.5"):
        layout_of(QR2.hdu_names, "x", "7.0.5")
    assert layout_of(R7.hdu_names, "x", "7.0.0b6.post2+g6b3a1a7") is R7
    assert layout_of(R7.hdu_names, "x", None) is R7
    with fits.open(sim_archive_mixed.root / r7_rel) as hdul:
        plain = fits.HDUList([h.copy() if not isinstance(h, fits.CompImageHDU)
                              else fits.ImageHDU(np.asarray(h.data), h.header, name="FLAGS") for h in hdul])
    (tmp_path / "plain.fits").write_bytes(_bytes(plain))
    with pytest.raises(FitsStructureError, match="FLAGS is not tile-compressed"):
        check_fitsmap(_scan(tmp_path / "plain.fits"))


def test_pipeline_major():
    assert [pipeline_major(v) for v in ("6.5.4+psffix1", "7.0.5", "v7.1.0", "", None, "x")] == [
        6, 7, 7, None, None, None]


def test_flag_names_from_both_kinds_of_card():
    header = fits.Header([("MSKN0026", "BLOOM"), ("MSKN0000", "TRANSIENT")])
    header["HIERARCH MP_HOT"] = 10
    assert flag_bits_from_header(header) == {"BLOOM": 26, "TRANSIENT": 0, "HOT": 10}
