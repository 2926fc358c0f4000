"""The header scanner's HDU offset table against astropy's own, on Level-2-shaped files written by astropy."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from fits_files import FileReader, write_mef

from spxbatch.level2.fitsmap import BLOCK, HEAD_BYTES, FitsMap, FitsStructureError, header_spans, scan_fits
from spxbatch.level2.read import read_wave_table


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


def _layout(fmap: FitsMap) -> list[tuple]:
    return [(h.name, h.header_offset, h.data_offset, h.data_size, h.header.tostring()) for h in fmap.hdus]


def test_a_like_file_is_scanned_in_one_round(mef, tmp_path):
    """The spans the first file's scan needed, read with a like file's head and tail: one round, the same map
    as a scan without the hint, and no more bytes than that scan read."""
    first = scan_fits(FileReader(mef), len(FileReader(mef).data), str(mef))
    other = tmp_path / "other.fits"
    write_mef(other, seed=1, obs_id="2025W18_2B_0002_1")
    unhinted = FileReader(other)
    plain = scan_fits(unhinted, len(unhinted.data))
    reader = FileReader(other)
    fmap = scan_fits(reader, len(reader.data), hint=header_spans(first))
    assert len(reader.calls) == 1 < len(unhinted.calls)
    assert _layout(fmap) == _layout(plain) and fmap.small == plain.small
    assert sum(e - s for s, e in reader.calls[0]) <= sum(e - s for c in unhinted.calls for s, e in c)


@pytest.mark.parametrize("psf_cards", [60, 160])
def test_a_wrong_hint_is_never_believed(mef, tmp_path, psf_cards):
    """A file whose PSF header is shorter or longer than the hint's: the map is still the file's own, at
    worst one round more than the hint promised."""
    hint = header_spans(scan_fits(FileReader(mef), len(FileReader(mef).data)))
    other = tmp_path / "other.fits"
    write_mef(other, psf_cards=psf_cards)
    plain = scan_fits(FileReader(other), len(FileReader(other).data))
    reader = FileReader(other)
    fmap = scan_fits(reader, len(reader.data), hint=hint)
    assert _layout(fmap) == _layout(plain) and 6 in fmap.small  # the WCS-WAVE table came with the tail
    for h in fmap.hdus:  # whatever data came along is the file's own
        assert fmap.small.get(h.index, reader.data[h.data_offset:h.data_offset + h.data_size]) == \
            reader.data[h.data_offset:h.data_offset + h.data_size]
    assert len(reader.calls) <= 2


def test_a_head_in_hand_saves_the_first_round(mef):
    """The first bytes given (they came with the size): the tail goes out with the first guessed windows,
    one round fewer than a scan from nothing, and the same map."""
    unhinted = FileReader(mef)
    plain = scan_fits(unhinted, len(unhinted.data))
    reader = FileReader(mef)
    fmap = scan_fits(reader, len(reader.data), head=reader.data[:HEAD_BYTES])
    assert _layout(fmap) == _layout(plain) and fmap.small[6] == plain.small[6]  # WCS-WAVE, with the tail
    assert len(reader.calls) == len(unhinted.calls) - 1
    assert reader.calls[0][-1][1] == len(reader.data)  # the tail, with the windows


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
