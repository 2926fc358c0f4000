"""Rows of a tile-compressed image from its tile table and a heap span: equal to astropy's decompression of
the whole HDU, for one-row tiles (R7), multi-row tiles, any rows; tiles that do not span rows are said so."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits
from fits_files import FileReader

from spxbatch.level2.fitsmap import FitsStructureError, scan_fits
from spxbatch.level2.tiled import tile_table


def _compressed_file(tmp_path, data, tile_shape, ctype="RICE_1"):
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, name="FLAGS", compression_type=ctype,
                                                               tile_shape=tile_shape),
                         fits.ImageHDU(np.zeros((4, 4), np.float32), name="AFTER")])
    buf = io.BytesIO()
    hdul.writeto(buf)
    path = tmp_path / "c.fits"
    path.write_bytes(buf.getvalue())
    reader = FileReader(path)
    return reader, scan_fits(reader, len(reader.data), str(path))


@pytest.fixture
def flags():
    rng = np.random.default_rng(5)
    return np.where(rng.random((50, 37)) < 0.1, rng.integers(0, 2**30, (50, 37)), 0).astype(np.int32)


@pytest.mark.parametrize("tile_rows", [1, 4])
@pytest.mark.parametrize("ctype", ["RICE_1", "GZIP_1"])
@pytest.mark.parametrize("rows", [(0, 1), (3, 11), (45, 50), (0, 50)])
def test_rows_equal_astropys_whole_read(tmp_path, flags, tile_rows, ctype, rows):
    reader, fmap = _compressed_file(tmp_path, flags, (tile_rows, 37), ctype)
    tiles = tile_table(fmap, "FLAGS")
    assert tiles.rows_tiled and tiles.tile_rows == tile_rows and tiles.image_shape == (50, 37)
    y0, y1 = rows
    start, end = tiles.heap_span(*tiles.tiles_for_rows(y0, y1))
    got = tiles.rows_from_heap(y0, y1, reader([(start, end)])[0])
    assert got.dtype == np.int32 and got.dtype.isnative
    assert np.array_equal(got, flags[y0:y1])
    if rows != (0, 50):  # a few rows cost a part of the heap
        assert end - start < fmap["FLAGS"].data_size - fmap["FLAGS"].table_size
    assert fmap["AFTER"].shape == (4, 4)  # the HDU after it is placed by the compressed HDU's true size


def test_tiles_that_do_not_span_rows_are_said_so(tmp_path, flags):
    _, fmap = _compressed_file(tmp_path, flags, (5, 10))
    assert not tile_table(fmap, "FLAGS").rows_tiled


def test_a_short_span_or_a_plain_hdu_is_refused(tmp_path, flags):
    reader, fmap = _compressed_file(tmp_path, flags, (1, 37))
    tiles = tile_table(fmap, "FLAGS")
    start, end = tiles.heap_span(2, 4)
    with pytest.raises(FitsStructureError, match="heap span"):
        tiles.rows_from_heap(2, 4, reader([(start, end - 1)])[0])
    with pytest.raises(FitsStructureError, match="not a compressed image"):
        tile_table(fmap, "AFTER")
    with pytest.raises(ValueError, match="outside"):
        tiles.tiles_for_rows(40, 51)
