"""The Level-2 layout checks: a scanned file or opened bytes is QR2, or a FitsStructureError says why not."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits
from fits_files import FileReader, write_mef

from spxbatch.level2.constants import HDU_NAMES
from spxbatch.level2.fitsmap import FitsStructureError, scan_fits
from spxbatch.level2.flags import flag_bits_from_header
from spxbatch.level2.layout import PLANES, QR2, check_fitsmap, check_hdul, layout_of
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
