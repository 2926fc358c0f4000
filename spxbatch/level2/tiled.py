"""Rows of a tile-compressed image HDU (R7's FLAGS) from a few byte ranges: the tile table's rows say where
their tiles' bytes lie in the heap; those bytes alone are read and decompressed by astropy's own code.

A compressed image is a binary table, one row per tile, each row holding descriptors (count, offset) into
the heap that follows the table. For tiles that span whole image rows (R7: one row per tile) rows y0..y1
are tiles t0..t1, whose heap bytes are one contiguous span in a file written tile by tile. `rows_from_heap`
rebuilds a small compressed HDU of just those tiles (same heap offsets, the bytes before the span zero)
and lets astropy decompress it, so no compression code lives here.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from astropy.io import fits

from spxbatch.level2.fitsmap import FitsMap, FitsStructureError, padded

#: Bytes per element of a variable-length array column, by its FITS type code.
_ELEMENT_BYTES = {"L": 1, "X": 1, "B": 1, "A": 1, "I": 2, "J": 4, "K": 8, "E": 4, "D": 8, "C": 8, "M": 16}
#: The cards that describe a compressed image's structure (the rest, WCS and flag names, do not matter here).
_STRUCTURE = re.compile(
    r"^(XTENSION|BITPIX|NAXIS\d*|PCOUNT|GCOUNT|TFIELDS|TTYPE\d+|TFORM\d+|THEAP|Z\w+|BSCALE|BZERO|BLANK)$")
#: A minimal primary HDU to put before a rebuilt extension.
_PRIMARY = fits.PrimaryHDU().header.tostring().encode("ascii")


@dataclass(frozen=True)
class TileTable:
    """The tile table of a compressed image HDU: its raw header, the table's bytes (NAXIS1 x NAXIS2, the
    descriptors) and where the table starts in the file."""

    header: fits.Header
    table: bytes
    data_offset: int

    @property
    def image_shape(self) -> tuple[int, int]:
        """(ny, nx) of the decompressed image."""
        return int(self.header["ZNAXIS2"]), int(self.header["ZNAXIS1"])

    @property
    def tile_rows(self) -> int:
        """Image rows per tile (ZTILE2; a 2-D image's default tile is one row)."""
        return int(self.header.get("ZTILE2", 1))

    @property
    def rows_tiled(self) -> bool:
        """Whether each tile spans whole image rows (ZTILE1 = ZNAXIS1), so a row strip is a run of tiles."""
        return int(self.header.get("ZTILE1", self.image_shape[1])) == self.image_shape[1]

    @property
    def heap_offset(self) -> int:
        """File offset of the heap (THEAP bytes after the table's start; right after the table by default)."""
        return self.data_offset + int(self.header.get("THEAP", len(self.table)))

    def tiles_for_rows(self, y0: int, y1: int) -> tuple[int, int]:
        """The tiles [t0, t1) holding image rows [y0, y1)."""
        ny = self.image_shape[0]
        if not 0 <= y0 < y1 <= ny:
            raise ValueError(f"rows {y0}:{y1} outside a compressed image of {ny} rows")
        return y0 // self.tile_rows, -(-y1 // self.tile_rows)

    def heap_span(self, t0: int, t1: int) -> tuple[int, int]:
        """File byte span [start, end) of every heap byte that tiles [t0, t1) point to."""
        start, end = self._relative_span(t0, t1)
        return self.heap_offset + start, self.heap_offset + end

    def _relative_span(self, t0: int, t1: int) -> tuple[int, int]:
        """The heap span of tiles [t0, t1) relative to the heap's start."""
        starts, ends = [], []
        records = self._records[t0:t1]
        for name, item in self._array_columns:
            count, offset = records[name][:, 0].astype(np.int64), records[name][:, 1].astype(np.int64)
            used = count > 0
            starts.append(offset[used])
            ends.append(offset[used] + count[used] * item)
        starts_all, ends_all = np.concatenate(starts), np.concatenate(ends)
        if not starts_all.size:
            return 0, 0
        return int(starts_all.min()), int(ends_all.max())

    def rows_from_heap(self, y0: int, y1: int, span: bytes) -> np.ndarray:
        """Image rows [y0, y1) (native byte order), from the heap bytes of `heap_span` of their tiles."""
        t0, t1 = self.tiles_for_rows(y0, y1)
        start, end = self._relative_span(t0, t1)
        if len(span) != end - start:
            raise FitsStructureError(f"heap span of {end - start} bytes expected, {len(span)} given")
        ny = self.image_shape[0]
        first_row, last_row = t0 * self.tile_rows, min(ny, t1 * self.tile_rows)
        row_bytes = int(self.header["NAXIS1"])
        header = self._structure.copy()
        header["NAXIS2"] = t1 - t0
        header["ZNAXIS2"] = last_row - first_row
        header["PCOUNT"] = end
        header["THEAP"] = row_bytes * (t1 - t0)
        data = self.table[t0 * row_bytes:t1 * row_bytes] + bytes(start) + span
        raw = header.tostring().encode("ascii") + data + bytes(padded(len(data)) - len(data))
        with fits.open(io.BytesIO(_PRIMARY + raw), memmap=False) as hdul:
            if not isinstance(hdul[1], fits.CompImageHDU):
                raise FitsStructureError("the rebuilt tiles are not a compressed image")
            rows = np.array(hdul[1].data[y0 - first_row:y1 - first_row])
        return rows if rows.dtype.isnative else rows.astype(rows.dtype.newbyteorder("="))

    @cached_property
    def _structure(self) -> fits.Header:
        """The header's structural cards only (rebuilding tiles then parses ~30 cards, not ~200)."""
        return fits.Header([card for card in self.header.cards if _STRUCTURE.match(card.keyword)
                            and card.keyword not in ("ZHECKSUM", "ZDATASUM")])

    @cached_property
    def _records(self) -> np.ndarray:
        """The table's rows as a structured array (descriptors as (count, offset) pairs)."""
        dtype = self._columns.dtype.newbyteorder(">")
        n = int(self.header["NAXIS2"])
        if dtype.itemsize != int(self.header["NAXIS1"]) or len(self.table) < n * dtype.itemsize:
            raise FitsStructureError("compressed image: tile table bytes do not match its header")
        return np.frombuffer(self.table, dtype=dtype, count=n)

    @cached_property
    def _array_columns(self) -> list[tuple[str, int]]:
        """(name, bytes per element) of each variable-length array column (TFORM 'P' or 'Q')."""
        return [(c.name, _ELEMENT_BYTES[c.format.p_format]) for c in self._columns if c.format.p_format]

    @cached_property
    def _columns(self) -> fits.ColDefs:
        """The table's columns as astropy reads them from its header (compression cards dropped, no rows)."""
        header = self._structure.copy()
        header["NAXIS2"] = 0
        header["PCOUNT"] = 0
        for key in ("ZIMAGE", "THEAP"):
            header.remove(key, ignore_missing=True)
        return fits.hdu.base._BaseHDU.fromstring(header.tostring().encode("ascii")).columns


def tile_table(fmap: FitsMap, name: str) -> TileTable:
    """The tile table of a scanned file's compressed image HDU `name` (the scan kept its rows)."""
    entry = fmap[name]
    if not entry.compressed or entry.index not in fmap.tiles:
        raise FitsStructureError(f"{fmap.url}: {name} is not a compressed image with a scanned tile table")
    return TileTable(entry.header, fmap.tiles[entry.index], entry.data_offset)
