"""The HDU offset table of a FITS file read with few range requests: headers parsed from 2880-byte blocks.

`scan_fits` reads the file's head and tail, then, once the first image HDU's data size is known, guesses
where the following headers lie (equal-sized planes with similar headers follow each other in a Level-2
file) and reads windows at all those places in one concurrent round; it reads further only when a guess
missed or a header is longer than its window. A file like one scanned before (same layout and band) is
read in one round: the spans the earlier scan needed (`header_spans`) go out with the head and tail, and
the parse checks every header, reading on only where the hint fell short. The result, a `FitsMap`, gives
each HDU's header and the byte span of its data, and keeps the data of small HDUs (WCS-WAVE) that came along
for free and the tile tables of compressed images (R7's FLAGS), which place each image row's bytes in the heap.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from astropy.io import fits

BLOCK = 2880
CARD = 80
_END_CARD = b"END" + b" " * 77
#: Bytes read at the head (PRIMARY + IMAGE header), at the tail (WCS-WAVE), at least per guessed header,
#: and for the last guess (the PSF header).
HEAD_BYTES = 16 * BLOCK
TAIL_BYTES = 8 * BLOCK
WINDOW_BYTES = 6 * BLOCK
LAST_WINDOW_BYTES = 20 * BLOCK
#: How far the headers behind a compressed image may have moved in a file like the hint's (`header_spans`).
HINT_SLACK = 3 * BLOCK
#: How many following headers to guess at once.
SPECULATE = 4
#: HDUs whose data is at most this big keep their bytes in the map when the scan read them.
SMALL_DATA = 64 * 1024

#: A function that reads byte ranges [start, end) of the file, concurrently, and returns their bytes.
RangeReader = Callable[[Sequence[tuple[int, int]]], list[bytes]]


class FitsStructureError(ValueError):
    """The bytes are not the FITS file we expected (no END card, data past the end, wrong HDUs)."""


def is_compressed(header: fits.Header) -> bool:
    """Whether a raw header is a tile-compressed image's (a binary table with ZIMAGE = T)."""
    return str(header.get("XTENSION", "")).strip() == "BINTABLE" and bool(header.get("ZIMAGE", False))


def padded(n: int) -> int:
    """`n` rounded up to whole 2880-byte blocks."""
    return -(-n // BLOCK) * BLOCK


def data_size(header: fits.Header) -> int:
    """Bytes of an HDU's data (heap included, padding excluded): |BITPIX|/8 * GCOUNT * (PCOUNT + prod NAXISn)."""
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    n = int(np.prod([int(header[f"NAXIS{i}"]) for i in range(1, naxis + 1)], dtype=np.int64))
    return abs(int(header["BITPIX"])) // 8 * int(header.get("GCOUNT", 1)) * (int(header.get("PCOUNT", 0)) + n)


@dataclass
class HDUEntry:
    """One HDU: its header and where its header and data lie in the file. What the header says of the data
    (compressed, shape, dtype) is read from its cards once: a box read asks it for every row of every box, and
    parsing the cards each time cost a 6,600-source image seconds of CPU."""

    index: int
    name: str
    header_offset: int
    data_offset: int
    data_size: int
    header: fits.Header

    @property
    def end(self) -> int:
        """Offset just after this HDU's padded data (the next header's offset)."""
        return self.data_offset + padded(self.data_size)

    @cached_property
    def compressed(self) -> bool:
        """Whether this HDU is a tile-compressed image (a binary table with ZIMAGE = T)."""
        return is_compressed(self.header)

    @cached_property
    def shape(self) -> tuple[int, ...]:
        """Numpy shape of an image HDU's pixels (NAXISn reversed; ZNAXISn for a compressed image)."""
        z = "Z" if self.compressed else ""
        naxis = int(self.header.get(f"{z}NAXIS", 0))
        return tuple(int(self.header[f"{z}NAXIS{i}"]) for i in range(naxis, 0, -1))

    @cached_property
    def dtype(self) -> np.dtype:
        """Big-endian dtype of an image HDU's pixels, from BITPIX (ZBITPIX for a compressed image)."""
        codes = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
        return np.dtype(codes[int(self.header["ZBITPIX" if self.compressed else "BITPIX"])])

    @property
    def table_size(self) -> int:
        """Bytes of a binary table's rows (NAXIS1 x NAXIS2), the heap excluded."""
        return int(self.header.get("NAXIS1", 0)) * int(self.header.get("NAXIS2", 0))


@dataclass
class FitsMap:
    """The HDU table of one file (by URL/path), plus the raw data of small HDUs read during the scan and the
    tile tables (descriptor rows, no heap) of compressed images, which say where each row's bytes lie."""

    url: str
    size: int
    hdus: list[HDUEntry]
    small: dict[int, bytes] = field(default_factory=dict)
    tiles: dict[int, bytes] = field(default_factory=dict)

    def __getitem__(self, name: str) -> HDUEntry:
        for h in self.hdus:
            if h.name == name.upper():
                return h
        raise KeyError(f"{self.url}: no HDU named {name}")

    def __contains__(self, name: str) -> bool:
        return any(h.name == name.upper() for h in self.hdus)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hdus)

    def row_range(self, name: str, y0: int, y1: int) -> tuple[int, int]:
        """Byte span [start, end) of rows y0..y1-1 (0-based) of a 2-D image HDU."""
        h = self[name]
        if h.compressed:
            raise FitsStructureError(f"{self.url}: {name} is tile-compressed: its rows are not one byte span")
        ny, nx = h.shape
        if not 0 <= y0 <= y1 <= ny:
            raise ValueError(f"rows {y0}:{y1} outside {name} of {ny} rows")
        row = nx * h.dtype.itemsize
        return h.data_offset + y0 * row, h.data_offset + y1 * row

    def box_ranges(self, name: str, x0: int, x1: int, y0: int, y1: int) -> list[tuple[int, int]]:
        """Byte spans of the pixels [x0, x1) x [y0, y1) of a 2-D image HDU: one span when the box spans whole
        rows, else one per row."""
        start, end = self.row_range(name, y0, y1)
        h = self[name]
        nx, item = h.shape[1], h.dtype.itemsize
        if x1 - x0 == nx:
            return [(start, end)]
        row = nx * item
        return [(start + k * row + x0 * item, start + k * row + x1 * item) for k in range(y1 - y0)]

    def hdu_from_bytes(self, name: str, data: bytes) -> fits.hdu.base._BaseHDU:
        """An astropy HDU (e.g. the WCS-WAVE BinTableHDU) from this map's header and the data bytes."""
        h = self[name]
        raw = h.header.tostring().encode("ascii") + data + b"\0" * (padded(len(data)) - len(data))
        hdu = fits.hdu.base._BaseHDU.fromstring(raw)
        if isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.BinTableHDU):
            return hdu
        raise FitsStructureError(f"{self.url}: cannot rebuild HDU {name}")

    def to_json(self) -> str:
        """Serialise (headers as card text, small data base64) for an on-disk cache."""
        return json.dumps({
            "url": self.url,
            "size": self.size,
            "hdus": [
                {"index": h.index, "name": h.name, "header_offset": h.header_offset,
                 "data_offset": h.data_offset, "data_size": h.data_size, "header": h.header.tostring()}
                for h in self.hdus
            ],
            "small": {str(k): base64.b64encode(v).decode("ascii") for k, v in self.small.items()},
            "tiles": {str(k): base64.b64encode(v).decode("ascii") for k, v in self.tiles.items()},
        })

    @classmethod
    def from_json(cls, text: str) -> FitsMap:
        d = json.loads(text)
        hdus = [
            HDUEntry(h["index"], h["name"], h["header_offset"], h["data_offset"], h["data_size"],
                     fits.Header.fromstring(h["header"]))
            for h in d["hdus"]
        ]
        small = {int(k): base64.b64decode(v) for k, v in d["small"].items()}
        tiles = {int(k): base64.b64decode(v) for k, v in d.get("tiles", {}).items()}
        return cls(d["url"], d["size"], hdus, small, tiles)


class _Chunks:
    """Byte ranges read so far; `get` answers from any one chunk that covers the request. `pending` ranges
    go out with the next `fetch` (the tail, when the head came on its own)."""

    def __init__(self):
        self._chunks: list[tuple[int, bytes]] = []
        self.pending: list[tuple[int, int]] = []

    def fetch(self, read: RangeReader, ranges: Sequence[tuple[int, int]]) -> None:
        """Read `ranges` and the pending ones in one round."""
        ranges = merged_spans([*ranges, *self.pending])
        self.pending = []
        self.add(ranges, read(ranges))

    def add(self, ranges: Sequence[tuple[int, int]], blobs: Sequence[bytes]) -> None:
        for (start, _), blob in zip(ranges, blobs, strict=True):
            self._chunks.append((start, blob))

    def get(self, start: int, end: int) -> bytes | None:
        for s, blob in self._chunks:
            if s <= start and end <= s + len(blob):
                return blob[start - s:end - s]
        return None


def _end_card(block: bytes) -> int | None:
    """Index (in cards) of the END card in a 2880-byte block, or None."""
    for i in range(0, BLOCK, CARD):
        if block[i:i + CARD] == _END_CARD:
            return i // CARD
    return None


def scan_fits(read: RangeReader, size: int, url: str = "", hint: Sequence[tuple[int, int]] = (),
              head: bytes = b"") -> FitsMap:
    """Parse every header of a FITS file of `size` bytes through `read`, in as few rounds as it can.

    `hint`: byte spans read in the first round besides the head and tail, e.g. the `header_spans` of an
    earlier file of the same layout: when they cover every header, the scan is one round trip. Whatever
    the hint misses is read as without one (the headers are parsed from the bytes, never assumed), so a
    wrong hint costs bytes and at most the rounds a scan takes anyway. `head`: the file's first bytes when
    they are in hand (the GET that told the size): the tail then goes out with the next round needed."""
    chunks = _Chunks()
    tail = [(max(HEAD_BYTES, size - TAIL_BYTES), size)] if size > HEAD_BYTES else []
    if head:
        chunks.add([(0, len(head))], [head])
        chunks.pending = tail
        first = [(s, min(e, size)) for s, e in hint if s < min(e, size) and chunks.get(s, min(e, size)) is None]
    else:
        first = [(0, min(HEAD_BYTES, size)), *tail, *((s, min(e, size)) for s, e in hint if s < min(e, size))]
    if first:
        chunks.fetch(read, merged_spans(first))

    hdus: list[HDUEntry] = []
    tiles: dict[int, bytes] = {}
    pos = 0
    while pos < size:
        header_bytes = _read_header(read, chunks, pos, size, hdus, url)
        header = fits.Header.fromstring(header_bytes.decode("ascii", errors="replace"))
        name = str(header.get("EXTNAME", "PRIMARY" if not hdus else f"HDU{len(hdus)}")).strip().upper()
        entry = HDUEntry(len(hdus), name, pos, pos + len(header_bytes), data_size(header), header)
        hdus.append(entry)
        if entry.end > size:
            raise FitsStructureError(
                f"{url}: HDU {entry.index} ({name}) data ends at {entry.end}, past the file's {size} bytes")
        pos = entry.end
        if entry.compressed:
            tiles[entry.index] = _tile_table(read, chunks, entry, size, hdus)
    fmap = FitsMap(url, size, hdus, tiles=tiles)
    for h in hdus:
        if 0 < h.data_size <= SMALL_DATA:
            blob = chunks.get(h.data_offset, h.data_offset + h.data_size)
            if blob is not None:
                fmap.small[h.index] = blob
    return fmap


def header_spans(fmap: FitsMap) -> list[tuple[int, int]]:
    """The byte spans a scan of `fmap`'s file needed (every header and one block more for a slightly longer
    one, the small HDUs' data, the compressed images' tile tables), merged: the `hint` that lets
    `scan_fits` read a file of the same layout in one round trip. Headers behind a compressed image move
    with its heap's size (R7's FLAGS: a block or two from file to file): their spans are HINT_SLACK wider."""
    spans = []
    slack = 0
    for h in fmap.hdus:
        spans.append((max(0, h.header_offset - slack), h.data_offset + BLOCK + slack))
        slack = HINT_SLACK if h.compressed else slack
    spans += [(h.data_offset, h.data_offset + h.data_size) for h in fmap.hdus if h.index in fmap.small]
    spans += [(h.data_offset, h.data_offset + h.table_size) for h in fmap.hdus if h.index in fmap.tiles]
    return merged_spans([(s, min(e, fmap.size)) for s, e in spans])


def merged_spans(spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Byte spans sorted, with overlapping or touching ones joined."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _tile_table(read: RangeReader, chunks: _Chunks, entry: HDUEntry, size: int, hdus: list[HDUEntry]) -> bytes:
    """The tile table of a compressed image HDU (its rows, not the heap), read with the windows where the
    next headers would lie when the scan does not hold it yet."""
    span = (entry.data_offset, entry.data_offset + entry.table_size)
    blob = chunks.get(*span)
    if blob is None:
        ranges = [span]
        if entry.end + BLOCK <= size and chunks.get(entry.end, entry.end + BLOCK) is None:
            ranges += _guess_windows(entry.end, entry.end, size, hdus)
        chunks.fetch(read, ranges)
        blob = chunks.get(*span)
        if blob is None:
            raise FitsStructureError(f"{entry.name}: short read of its tile table")
    return blob


def _read_header(read: RangeReader, chunks: _Chunks, pos: int, size: int, hdus: list[HDUEntry],
                 url: str) -> bytes:
    """The header starting at `pos` (whole blocks up to its END card), reading what is missing."""
    blocks: list[bytes] = []
    at = pos
    while True:
        if at + BLOCK > size:
            raise FitsStructureError(f"{url}: header at byte {pos} runs past the end of the file")
        block = chunks.get(at, at + BLOCK)
        if block is None:
            ranges = _guess_windows(at, pos, size, hdus)
            chunks.fetch(read, ranges)
            block = chunks.get(at, at + BLOCK)
            if block is None:
                raise FitsStructureError(f"{url}: short read at byte {at}")
        if not blocks and not block.startswith((b"SIMPLE  ", b"XTENSION")):
            raise FitsStructureError(f"{url}: no FITS header at byte {at}")
        blocks.append(block)
        if _end_card(block) is not None:
            return b"".join(blocks)
        at += BLOCK


def _guess_windows(at: int, pos: int, size: int, hdus: list[HDUEntry]) -> list[tuple[int, int]]:
    """Windows to read when block `at` of the header at `pos` is missing.

    At the start of a header, also guess where the next SPECULATE-1 headers lie, assuming the HDUs ahead
    have data like the last one read (IMAGE, FLAGS, VARIANCE, ZODI are equal planes): window j runs from
    where header j would start were the headers before it one block each, to where it would end were they
    as long as the last one (plus two blocks); the last guess reaches further (the ~43 kB PSF header). A
    wrong guess only costs a further round. Inside a long header, read at least as much again as so far.
    """
    if at > pos:
        return [(at, min(size, at + max(WINDOW_BYTES, at - pos)))]
    if not hdus:
        return [(at, min(size, at + WINDOW_BYTES))]
    # the HDUs ahead are like the last plain one (a compressed FLAGS between the planes is not a guide)
    last = next((h for h in reversed(hdus) if not h.compressed), hdus[-1])
    step = padded(last.data_size)
    hlen = last.data_offset - last.header_offset
    ranges = [(at, min(size, at + max(WINDOW_BYTES, hlen + 2 * BLOCK)))]
    for j in range(1, SPECULATE if step else 1):
        start = at + j * (step + BLOCK)  # the headers before it are at least one block each
        if start + BLOCK > size:
            break
        end = at + j * (step + hlen) + (hlen + 2 * BLOCK if j < SPECULATE - 1 else LAST_WINDOW_BYTES)
        ranges.append((start, min(size, end)))
    return ranges
