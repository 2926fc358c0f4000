"""The tables a region carries beside its pixels: the PSF model (read once per content, from the process
cache) and the WCS-WAVE table.

The PSF model is the file's own: QR2's PSF cube or R7's EPSF table, cached by (detector, version, PSF
header digest); with psf_source 'calibration' a QR2 file takes the detector's average_psf product (the
file's own when that is absent or of another shape). The bytes a cutout or a whole file carries anyway
fill the cache instead of a second read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

from spxbatch.fetch.cache import header_digest
from spxbatch.fetch.calibration import calibration_map
from spxbatch.fetch.calibration_files import known_calibration_file
from spxbatch.fetch.execute import FetchContext
from spxbatch.fetch.store_keys import file_psf_key, product_key
from spxbatch.fetch.target import ImageTarget
from spxbatch.level2.epsf import EPSFTable, read_epsf
from spxbatch.level2.fitsmap import FitsMap, HDUEntry
from spxbatch.level2.layout import R7, Layout, check_fitsmap
from spxbatch.level2.read import epsf_from_bytes, wave_table_from_bytes
from spxbatch.level2.region import PSFCube, WaveTable

#: The release whose calibration tree holds the R7 ePSF products used for QR2 images (psf_source 'epsf').
QR3_CALIBRATION = "qr3"


@dataclass(frozen=True)
class PSFChoice:
    """An image's PSF model, where it came from ('file', 'average_psf', 'qr3 epsf') and notes on why."""

    model: PSFCube | EPSFTable
    origin: str = "file"
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ImageTables:
    """One image's PSF and WCS-WAVE tables, read through `ctx` and kept in its cache; `psf_source` says
    where a QR2 file's PSF comes from: 'file' (its own PSF HDU), 'calibration' (the detector's average_psf)
    or 'epsf' (QR3's ePSF product); an R7 file always has its own EPSF table."""

    ctx: FetchContext
    target: ImageTarget
    psf_source: str = "file"
    #: Bytes of PSF HDUs read beside the pixels (`psf_span`), by byte span, until the PSF is decoded.
    prefetched: dict[tuple[int, int], bytes] = field(default_factory=dict)

    def psf_cached(self) -> bool:
        """Whether this process already holds a PSF model for this detector (and version, for file PSFs)."""
        cache, t = self.ctx.cache, self.target
        if self.psf_source == "calibration":
            path = known_calibration_file(self.ctx, t, "average_psf")
            if path is not None and ("average_psf", path) in cache.psf_index:
                return True
        return any(k[:3] == ("file", t.detector, t.version) for k in (*cache.psf_index, *cache.epsf_tables))

    def _holds_file_psf(self, header: fits.Header) -> bool:
        """Whether this process holds the model of a file PSF HDU with this header (the key decoding uses:
        files of one detector and version may ship different PSFs)."""
        key = ("file", self.target.detector, self.target.version, header_digest(header))
        return key in self.ctx.cache.psf_index or key in self.ctx.cache.epsf_tables

    def psf_span(self, fmap: FitsMap) -> tuple[int, int] | None:
        """The byte span of a scanned file's own PSF HDU when decoding its regions will read it: the PSF is
        the file's (not a calibration product's), this process holds none for it and the persistent store
        neither. Read together with the pixels (`prefetched`), it costs no round trip of its own; counted in
        `psf_reads` here."""
        layout = check_fitsmap(fmap)
        if (self.psf_source != "file" and layout is not R7) or self._holds_file_psf(fmap[layout.psf_hdu].header):
            return None
        store = self.ctx.cache.store
        if store is not None and store.has(file_psf_key(fmap.url, fmap[layout.psf_hdu].header)):
            return None
        self.ctx.cache.psf_reads += 1
        return _span(fmap[layout.psf_hdu])

    def _hdu_bytes(self, fmap: FitsMap, entry: HDUEntry, store_key: str | None) -> bytes:
        """The data bytes of HDU `entry` of a scanned file: from the persistent store under `store_key`, else
        those read beside the pixels, else one range read (counted in `psf_reads`)."""
        span = _span(entry)

        def read() -> bytes:
            if span in self.prefetched:
                return self.prefetched.pop(span)
            self.ctx.cache.psf_reads += 1
            return self.ctx.read_ranges(fmap.url, [span], fmap.size)[0]

        return self.ctx.cache.stored_bytes(store_key, read)

    def psf_for_fitsmap(self, fmap: FitsMap) -> PSFChoice:
        """The PSF of a scanned file (its PSF HDU read, or taken from the persistent store, only if this
        process holds no model for it)."""
        layout = check_fitsmap(fmap)
        entry = fmap[layout.psf_hdu]

        def own_bytes() -> bytes:
            return self._hdu_bytes(fmap, entry, file_psf_key(fmap.url, entry.header))

        if layout is R7:
            return PSFChoice(self._epsf(entry.header, lambda: epsf_from_bytes(fmap, own_bytes())))
        return self._psf(entry.header.copy(), entry.shape, entry.dtype, own_bytes, free=False)

    def psf_for_hdul(self, hdul: fits.HDUList, layout: Layout, what: str) -> PSFChoice:
        """The PSF of an opened whole file or cutout (its bytes came along: they fill the cache for free)."""
        hdu = hdul[layout.psf_hdu]
        if layout is R7:
            return PSFChoice(self._epsf(hdu.header, lambda: read_epsf(hdu, what)))
        big = np.dtype(hdu.data.dtype.newbyteorder(">"))
        return self._psf(hdu.header.copy(), hdu.data.shape, big, lambda: hdu.data.astype(big).tobytes(), free=True)

    def _epsf(self, header: fits.Header, load: Callable[[], EPSFTable]) -> EPSFTable:
        """The file's ePSF table from the cache, by (detector, version, EPSF header digest), loaded once."""
        key = ("file", self.target.detector, self.target.version, header_digest(header))
        return self.ctx.cache.epsf_table(key, load)

    def _psf(self, header: fits.Header, shape: tuple[int, ...], dtype: np.dtype, own_bytes: Callable[[], bytes],
             free: bool) -> PSFChoice:
        """A QR2 image's PSF: with psf_source 'epsf' QR3's ePSF product, with 'calibration' the average_psf
        cube (under the file's header), else (or when those are unavailable) the file's own cube from the
        cache (`own_bytes` gives its raw bytes; `free` says they are in hand, so using them costs no read)."""
        notes = []
        if self.psf_source == "epsf":  # a transient failure raises: the image fails, it is not measured otherwise
            table = self._qr3_epsf()
            if isinstance(table, EPSFTable):
                return PSFChoice(table, "qr3 epsf")
            notes.append(f"{table}; file PSF used")
        if self.psf_source == "calibration":
            cube = self._average_psf()
            if isinstance(cube, str):
                notes.append(cube)
            elif cube[0].shape == tuple(shape):
                return PSFChoice(PSFCube(cube=cube[0], header=header, digest=cube[1]), "average_psf", notes)
            else:
                notes.append(f"average_psf: shape {cube[0].shape} != the file's {tuple(shape)}; file PSF used")
        cache = self.ctx.cache
        key = ("file", self.target.detector, self.target.version, header_digest(header))
        if free and key not in cache.psf_index:
            cache.psf_index[key] = cache.add_psf_bytes(own_bytes(), dtype, shape)
        cube = cache.psf_cube(key, own_bytes, dtype, shape)
        return PSFChoice(PSFCube(cube=cube, header=header, digest=cache.psf_index[key]), "file", notes)

    def _qr3_epsf(self) -> EPSFTable | str:
        """QR3's ePSF calibration product of the target's detector (read once per process), or why not."""
        fmap = calibration_map(self.ctx, self.target, "epsf", QR3_CALIBRATION)
        if isinstance(fmap, str):
            return fmap
        if R7.psf_hdu not in fmap:
            return "epsf: no EPSF extension"
        entry = fmap[R7.psf_hdu]
        key = ("qr3 epsf", self.target.detector, fmap.url)
        return self.ctx.cache.epsf_table(
            key, lambda: epsf_from_bytes(fmap, self._hdu_bytes(fmap, entry, product_key(fmap, entry))))

    def _average_psf(self) -> tuple[np.ndarray, str] | str:
        """The average_psf cube of the target's detector and its content digest, or why it is unavailable."""
        fmap = calibration_map(self.ctx, self.target, "average_psf")
        if isinstance(fmap, str):
            return fmap
        entry = next((h for h in fmap.hdus if len(h.shape) == 3), None)
        if entry is None:
            return "average_psf: no 3-D PSF extension"
        key = ("average_psf", fmap.url)
        cube = self.ctx.cache.psf_cube(key, lambda: self._hdu_bytes(fmap, entry, product_key(fmap, entry)),
                                       entry.dtype, entry.shape)
        return cube, self.ctx.cache.psf_index[key]

    def wave_for_fitsmap(self, fmap: FitsMap) -> WaveTable:
        """The WCS-WAVE table of a scanned file, from the bytes the header scan kept or one small range read."""
        layout = check_fitsmap(fmap)
        entry = fmap[layout.wave_hdu]
        data = fmap.small.get(entry.index)
        if data is None:
            span = [(entry.data_offset, entry.data_offset + entry.data_size)]
            data = self.ctx.read_ranges(fmap.url, span, fmap.size)[0]
        return wave_table_from_bytes(fmap, layout, data)


def _span(entry: HDUEntry) -> tuple[int, int]:
    """The byte span of an HDU's data."""
    return entry.data_offset, entry.data_offset + entry.data_size
