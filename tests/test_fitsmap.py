"""The header scanner's HDU offset table against astropy's own, on Level-2-shaped files written by astropy."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from spxbatch.archive.fitsmap import BLOCK, FitsMap, FitsStructureError, scan_fits
from spxbatch.l2 import read_wave_table


def write_mef(path, n: int = 256, psf_cards: int = 121, seed: int = 0, obs_id: str = "2025W18_2B_0001_1",
              detector: int = 3) -> None:
    """A 7-HDU file shaped like Level 2: long IMAGE and PSF headers (the PSF one ~40 kB), a WCS-WAVE table,
    and the cards an archive index needs (OBSID, DETECTOR, MJD-BEG/END, a TAN WCS)."""
    rng = np.random.default_rng(seed)
    img = fits.ImageHDU(rng.normal(size=(n, n)).astype(">f4"), name="IMAGE")
    img.header.update({"OBSID": obs_id, "DETECTOR": detector, "MJD-BEG": 60800.0, "MJD-END": 60800.0013,
                       "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRPIX1": n / 2, "CRPIX2": n / 2,
                       "CRVAL1": 150.0, "CRVAL2": 2.0, "CD1_1": -6.15 / 3600, "CD1_2": 0.0, "CD2_1": 0.0,
                       "CD2_2": 6.15 / 3600, "CRPIX1A": 1.0, "CRPIX2A": 1.0})
    for i in range(90):
        img.header[f"FILL{i}"] = (i, "filler: a multi-block header")
    flags = fits.ImageHDU(rng.integers(0, 2**22, size=(n, n)).astype(">i4"), name="FLAGS")
    flags.header["HIERARCH MP_TRANSIENT"] = 0
    var = fits.ImageHDU(rng.uniform(1, 2, size=(n, n)).astype(">f4"), name="VARIANCE")
    zodi = fits.ImageHDU(rng.uniform(0, 1, size=(n, n)).astype(">f4"), name="ZODI")
    psf = fits.ImageHDU(rng.uniform(size=(121, 11, 11)).astype(">f4"), name="PSF")
    for k in range(1, psf_cards + 1):
        for key in ("XCTR", "YCTR", "XWID", "YWID"):
            psf.header[f"{key}_{k}"] = (float(k), f"Center of x zone ({k % 11}, {k // 11})")
    grid = np.linspace(1, n, 11)
    cols = [fits.Column("X", "11D", array=grid[None]), fits.Column("Y", "11D", array=grid[None]),
            fits.Column("VALUES", "242D", dim="(2,11,11)", array=rng.uniform(1, 2, size=(1, 11, 11, 2)))]
    wave = fits.BinTableHDU.from_columns(cols, name="WCS-WAVE")
    fits.HDUList([fits.PrimaryHDU(), img, flags, var, zodi, psf, wave]).writeto(path, overwrite=True)


class FileReader:
    """Range reads of a local file that count the rounds (calls) and ranges asked for."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.data = f.read()
        self.calls: list[list[tuple[int, int]]] = []

    def __call__(self, ranges):
        self.calls.append(list(ranges))
        return [self.data[s:e] for s, e in ranges]


@pytest.fixture(scope="module")
def mef(tmp_path_factory):
    path = tmp_path_factory.mktemp("fitsmap") / "l2.fits"
    write_mef(path)
    return path


def test_offsets_equal_astropy_fileinfo(mef):
    reader = FileReader(mef)
    fmap = scan_fits(reader, len(reader.data), str(mef))
    with fits.open(mef) as hdul:
        assert len(fmap.hdus) == len(hdul) == 7
        for i, entry in enumerate(fmap.hdus):
            info = hdul.fileinfo(i)
            assert entry.header_offset == info["hdrLoc"]
            assert entry.data_offset == info["datLoc"]
            assert entry.end - entry.data_offset == info["datSpan"]
            assert entry.name == hdul[i].name
        assert fmap["IMAGE"].shape == hdul["IMAGE"].data.shape
        assert fmap["PSF"].header["XCTR_121"] == hdul["PSF"].header["XCTR_121"]
        assert fmap["PSF"].header_offset + 40_000 < fmap["PSF"].data_offset  # the long header was parsed
        # the WCS-WAVE data came along with the tail read, and rebuilds the same table
        table = read_wave_table(fmap.hdu_from_bytes("WCS-WAVE", fmap.small[6]))
        assert np.array_equal(table.values, read_wave_table(hdul["WCS-WAVE"]).values)
        # row spans address the right bytes
        start, end = fmap.row_range("VARIANCE", 10, 13)
        rows = np.frombuffer(reader.data[start:end], dtype=">f4").reshape(3, -1)
        assert np.array_equal(rows, hdul["VARIANCE"].data[10:13])


def test_few_rounds(mef):
    """Head + tail, then one round of guessed windows (plus at most one for the long PSF header)."""
    reader = FileReader(mef)
    scan_fits(reader, len(reader.data))
    assert len(reader.calls) <= 3
    assert sum(len(c) for c in reader.calls) <= 8
    assert sum(e - s for c in reader.calls for s, e in c) < 0.3 * len(reader.data)


def test_json_round_trip(mef):
    reader = FileReader(mef)
    fmap = scan_fits(reader, len(reader.data), "u")
    back = FitsMap.from_json(fmap.to_json())
    assert [(h.name, h.header_offset, h.data_offset, h.data_size) for h in back.hdus] == [
        (h.name, h.header_offset, h.data_offset, h.data_size) for h in fmap.hdus]
    assert back.small == fmap.small
    assert back["IMAGE"].header == fmap["IMAGE"].header


def test_truncated_file_is_a_structure_error(mef):
    reader = FileReader(mef)
    reader.data = reader.data[: len(reader.data) - 3 * BLOCK]
    with pytest.raises(FitsStructureError, match="past"):
        scan_fits(reader, len(reader.data), "cut.fits")


def test_not_fits_is_a_structure_error():
    data = b"<html>" + b" " * (4 * BLOCK)
    with pytest.raises(FitsStructureError, match="no FITS header"):
        scan_fits(lambda ranges: [data[s:e] for s, e in ranges], len(data), "page.html")
