"""The tables a region carries beside its pixels: the PSF model (read once per content, from the process
cache) and the WCS-WAVE table.

The PSF model is the file's own: QR2's PSF cube or R7's EPSF table, cached by (detector, version, PSF
header digest); with psf_source 'calibration' a QR2 file takes the detector's average_psf product (the
file's own when that is absent or of another shape). The bytes a cutout or a whole file carries anyway
fill the cache instead of a second read. Range reads over the network take only the planes of a QR2 cube
that the image's catalog sources use (`psf_zones.catalog_zones`, both lookup methods): ~41 kB a zone where
the cube is 4.9 MB; the planes gathered serve later images of the same PSF, and the persistent store keeps
each plane (a second run of the catalog reads none).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

from spxbatch.fetch.cache import PSFPlanes, content_hash, header_digest
from spxbatch.fetch.calibration import calibration_map
from spxbatch.fetch.execute import FetchContext
from spxbatch.fetch.store_keys import file_psf_key, product_key
from spxbatch.fetch.target import ImageTarget
from spxbatch.level2.epsf import EPSFTable, read_epsf
from spxbatch.level2.fitsmap import FitsMap, HDUEntry
from spxbatch.level2.layout import R7, Layout, check_fitsmap
from spxbatch.level2.psf_zones import catalog_zones
from spxbatch.level2.read import epsf_from_bytes, wave_table_from_bytes
from spxbatch.level2.region import PSFCube, WaveTable
from spxbatch.level2.wcs import sky_to_parent_pixel

#: The release whose calibration tree holds the R7 ePSF products used for QR2 images (psf_source 'epsf').
QR3_CALIBRATION = "qr3"
#: The zone lookups whose planes a cube read in part holds: photometry may be configured with either.
ZONE_METHODS = ("grid", "header")


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
    #: Bytes of PSF HDUs read beside the pixels (`psf_spans`), by byte span, until the PSF is decoded.
    prefetched: dict[tuple[int, int], bytes] = field(default_factory=dict)
    #: The PSF zones of the sources on each scanned file's frame (`_zones`), by URL.
    zones: dict[str, np.ndarray] = field(default_factory=dict)

    def _holds_file_psf(self, header: fits.Header) -> bool:
        """Whether this process holds the whole model of a file PSF HDU with this header (the key decoding
        uses: files of one detector and version may ship different PSFs)."""
        key = ("file", self.target.detector, self.target.version, header_digest(header))
        return key in self.ctx.cache.psf_index or key in self.ctx.cache.epsf_tables

    def psf_spans(self, fmap: FitsMap, ra: np.ndarray, dec: np.ndarray) -> tuple[tuple[int, int], ...]:
        """The byte spans of a scanned file's own PSF that decoding its regions for sources (ra, dec) will read
        and neither this process nor the persistent store holds: a QR2 cube's planes of the zones the sources
        use (`_planes`; consecutive planes one span), else the PSF HDU whole; none when the PSF is a
        calibration product's. Read together with the pixels (`add_prefetched`), they cost no round trip of
        their own."""
        layout = check_fitsmap(fmap)
        entry = fmap[layout.psf_hdu]
        key = file_psf_key(fmap.url, entry.header)
        if not self._reads_own_psf(layout, entry, key):
            return ()
        planes = self._planes(fmap, entry, key)
        if planes is None:
            return (_span(entry),)
        missing = self._missing_planes(planes, key, self._zones(fmap, ra, dec))
        return tuple(_plane_spans(entry, planes.plane_bytes, missing))

    def _reads_own_psf(self, layout: Layout, entry: HDUEntry, key: str) -> bool:
        """Whether decoding reads the file's own PSF HDU `entry` (store key `key`): the model is the file's
        (an R7 table, or psf_source 'file'), and neither this process holds it whole nor the persistent store."""
        store = self.ctx.cache.store
        return ((self.psf_source == "file" or layout is R7) and not self._holds_file_psf(entry.header)
                and not (store is not None and store.has(key)))

    def add_prefetched(self, fmap: FitsMap, spans: tuple[tuple[int, int], ...], blobs: tuple[bytes, ...]) -> None:
        """Keep the PSF bytes `psf_spans` named, read beside the pixels: a cube's planes join the process
        cache (and the store), a whole HDU waits for decoding; counted in `psf_reads`."""
        if not spans:
            return
        self.ctx.cache.psf_reads += 1
        entry = fmap[check_fitsmap(fmap).psf_hdu]
        key = file_psf_key(fmap.url, entry.header)
        planes = self.ctx.cache.psf_planes.get(key)
        for span, blob in zip(spans, blobs, strict=True):
            if planes is None or span == _span(entry):
                self.prefetched[span] = blob
            else:
                self._keep_planes(planes, key, (span[0] - entry.data_offset) // planes.plane_bytes, blob)

    def _planes(self, fmap: FitsMap, entry: HDUEntry, key: str) -> PSFPlanes | None:
        """The cube of a QR2 file read in part over the network (created empty when new), or None when its PSF
        is read whole: an R7 EPSF table, a local file (no latency to save), a PSF HDU that is not a plain
        3-D image."""
        plain = (len(entry.shape) == 3 and not entry.compressed
                 and entry.data_size == int(np.prod(entry.shape)) * entry.dtype.itemsize)
        if check_fitsmap(fmap) is R7 or self.ctx.io.protocol == "file" or not plain:
            return None
        planes = self.ctx.cache.psf_planes.get(key)
        if planes is None:
            digest = "planes|" + content_hash(key.encode())
            planes = self.ctx.cache.psf_planes.setdefault(key, PSFPlanes.empty(entry.shape, entry.dtype, digest))
        return planes

    def _zones(self, fmap: FitsMap, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """The PSF zones of the sources (ra, dec) on a scanned QR2 file's frame, by both lookup methods: the
        planes its measurements may use (computed once per file and call)."""
        if fmap.url not in self.zones:
            image = fmap["IMAGE"]
            x, y = sky_to_parent_pixel(image.header, ra, dec)
            version = str(fmap["PRIMARY"].header.get("VERSION", "")) or None
            self.zones[fmap.url] = catalog_zones(fmap[check_fitsmap(fmap).psf_hdu].header, x, y, image.shape,
                                                 version, ZONE_METHODS)
        return self.zones[fmap.url]

    def _missing_planes(self, planes: PSFPlanes, key: str, zones: np.ndarray) -> list[int]:
        """The planes of `zones` that `planes` lacks after taking those the persistent store holds."""
        store = self.ctx.cache.store
        missing = []
        for z in (int(z) for z in zones):
            if z in planes.held:
                continue
            raw = store.get(_plane_key(key, z)) if store is not None else None
            if raw is None:
                missing.append(z)
            else:
                planes.add(z, raw)
        return missing

    def _keep_planes(self, planes: PSFPlanes, key: str, first: int, raw: bytes) -> None:
        """Hold the planes first.. of `raw` (and store each plane for later runs)."""
        planes.add(first, raw)
        size = planes.plane_bytes
        self.ctx.cache.psf_planes_read += len(raw) // size
        if self.ctx.cache.store is not None:
            for k in range(len(raw) // size):
                self.ctx.cache.store.put(_plane_key(key, first + k), raw[k * size:(k + 1) * size])

    def _partial_cube(self, fmap: FitsMap, entry: HDUEntry, key: str, planes: PSFPlanes, ra: np.ndarray,
                      dec: np.ndarray) -> PSFCube:
        """The cube read in part, holding at least the planes of the sources' zones (those not read beside
        the pixels are read now, in one request)."""
        missing = self._missing_planes(planes, key, self._zones(fmap, ra, dec))
        if missing:
            self.ctx.cache.psf_reads += 1
            spans = _plane_spans(entry, planes.plane_bytes, missing)
            for span, blob in zip(spans, self.ctx.read_ranges(fmap.url, spans, fmap.size), strict=True):
                self._keep_planes(planes, key, (span[0] - entry.data_offset) // planes.plane_bytes, blob)
        return PSFCube(cube=planes.cube, header=entry.header.copy(), digest=planes.digest, held=planes.held)

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

    def psf_for_fitsmap(self, fmap: FitsMap, ra: np.ndarray, dec: np.ndarray) -> PSFChoice:
        """The PSF of a scanned file whose sources (ra, dec) are measured: its PSF HDU read (a QR2 cube over
        the network in part: the planes of their zones), or taken from the persistent store, only where this
        process holds no model for it."""
        layout = check_fitsmap(fmap)
        entry = fmap[layout.psf_hdu]
        key = file_psf_key(fmap.url, entry.header)

        def own_bytes() -> bytes:
            return self._hdu_bytes(fmap, entry, key)

        if layout is R7:
            return PSFChoice(self._epsf(entry.header, lambda: epsf_from_bytes(fmap, own_bytes())))
        planes = self._planes(fmap, entry, key) if self._reads_own_psf(layout, entry, key) else None
        if planes is not None:
            return PSFChoice(self._partial_cube(fmap, entry, key, planes, ra, dec))
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


def _plane_spans(entry: HDUEntry, plane_bytes: int, planes: list[int]) -> list[tuple[int, int]]:
    """The byte spans of the given planes of a plain 3-D image HDU, consecutive planes as one span."""
    spans: list[tuple[int, int]] = []
    for z in sorted(planes):
        start = entry.data_offset + z * plane_bytes
        if spans and spans[-1][1] == start:
            spans[-1] = (spans[-1][0], start + plane_bytes)
        else:
            spans.append((start, start + plane_bytes))
    return spans


def _plane_key(key: str, plane: int) -> str:
    """The persistent-store key of one plane of the cube stored as `key`."""
    return f"{key}|plane|{plane}"
