"""Per-process cache of what many images share: HDU offset tables, PSF cubes and calibration pixels.

Behind it, `store` (`fetch.store`, shared by runs and by the processes of a node) keeps the PSF and
calibration bytes across runs: what this process has not read yet is looked up there before the archive.

PSF cubes are stored by CONTENT (sha1 of the bytes): an index maps (detector, version, PSF-header digest)
to a content hash, so the 4.9 MB cube is read once per detector and processing version (and once more only
if a file's PSF header differs, e.g. a second cube shipped under the same version), and equal cubes share
one array. Range reads take only the planes of the zones their sources use (`PSFPlanes`, by the PSF header's
store key, whose DATASUM fixes the content). Calibration products (solid angle map, spectral_wcs CWAVE/CBAND)
are read lazily in row blocks and sliced to each region; an absent or empty product is remembered (with the
reason) and not asked again.
"""

from __future__ import annotations

import gzip
import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from spxbatch.fetch.store import ProductStore
from spxbatch.files import atomic_write_bytes
from spxbatch.level2.epsf import EPSFTable
from spxbatch.level2.fitsmap import FitsMap

#: Rows per calibration block read on demand (2040-px rows of float32: ~260 kB per block).
CALIB_BLOCK_ROWS = 32


def content_hash(data: bytes) -> str:
    """The cache key of a byte string (sha1 hex)."""
    return hashlib.sha1(data).hexdigest()


def header_digest(header: fits.Header) -> str:
    """A short digest of a header's text (tells two PSF cubes shipped under one version apart)."""
    return hashlib.sha1(header.tostring().encode("ascii")).hexdigest()[:16]


@dataclass
class CalibPlane:
    """One calibration image plane (extension `extname` of the product scanned as `fmap`), held in row blocks
    of CALIB_BLOCK_ROWS as they are read (`fetch.calibration` reads the missing ones)."""

    fmap: FitsMap
    extname: str
    blocks: dict[int, np.ndarray] = field(default_factory=dict)
    #: Estimated seconds spent reading this plane as boxes so far (`fetch.calibration_pixels`: rent until this
    #: reaches the price of reading the plane whole).
    rented_s: float = 0.0

    @property
    def shape(self) -> tuple[int, int]:
        return self.fmap[self.extname].shape

    def missing_blocks(self, y0: int, y1: int) -> list[int]:
        """The blocks of rows y0..y1-1 not held yet."""
        return [b for b in range(y0 // CALIB_BLOCK_ROWS, (y1 - 1) // CALIB_BLOCK_ROWS + 1) if b not in self.blocks]

    def box(self, x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
        """Pixels [x0, x1) x [y0, y1) (native float) from blocks already held: a new array of just those
        pixels (never a view that would keep whole blocks alive: an image may ask for 10^4 small boxes)."""
        first, last = y0 // CALIB_BLOCK_ROWS, (y1 - 1) // CALIB_BLOCK_ROWS
        stacked = np.concatenate([self.blocks[b][:, x0:x1] for b in range(first, last + 1)], axis=0)
        off = first * CALIB_BLOCK_ROWS
        return stacked[y0 - off:y1 - off].copy()


@dataclass
class PSFPlanes:
    """A QR2 PSF cube held plane by plane, as far as it has been read: `cube` (native byte order, zeros where
    not read) and the planes `held`. Range reads fetch only the zones an image's sources use; the planes
    gathered serve every later image of the same PSF content. `digest` names the content (its store key)."""

    cube: np.ndarray
    held: set[int]
    digest: str

    @classmethod
    def empty(cls, shape: tuple[int, ...], dtype: np.dtype, digest: str) -> PSFPlanes:
        """A cube of `shape` holding no plane yet."""
        return cls(np.zeros(shape, dtype=dtype.newbyteorder("=")), set(), digest)

    @property
    def plane_bytes(self) -> int:
        """Bytes of one plane."""
        return int(np.prod(self.cube.shape[1:])) * self.cube.dtype.itemsize

    def add(self, first: int, raw: bytes) -> None:
        """Hold the planes first, first + 1, ... that `raw` (the file's big-endian bytes) holds; a plane is
        marked held only once its values are in place (other threads read `held`)."""
        n = len(raw) // self.plane_bytes
        planes = np.frombuffer(raw, dtype=self.cube.dtype.newbyteorder(">")).reshape(n, *self.cube.shape[1:])
        self.cube[first:first + n] = planes
        self.held.update(range(first, first + n))


@dataclass
class FetchCache:
    """Everything the fetch layer keeps between images in one process (see `process_cache`).

    Offset tables are kept for the `max_fitsmaps` most recently used files (each holds its headers, ~0.5 MB
    as astropy objects); `disk_dir` (e.g. the run directory) also persists them, gzipped (~10 kB per file),
    across processes and runs.
    """

    disk_dir: str | None = None
    max_fitsmaps: int = 64
    fitsmaps: OrderedDict[str, FitsMap] = field(default_factory=OrderedDict)
    psf_cubes: dict[str, np.ndarray] = field(default_factory=dict)
    psf_index: dict[tuple, str] = field(default_factory=dict)
    #: QR2 PSF cubes read in part (range reads), by their persistent-store key (`store_keys.file_psf_key`).
    psf_planes: dict[str, PSFPlanes] = field(default_factory=dict)
    #: R7 ePSF tables by (source, detector, version, EPSF header digest).
    epsf_tables: dict[tuple, EPSFTable] = field(default_factory=dict)
    #: Calibration products by their location (archive root included, so two archives read in one process
    #: never share an entry): ('listing', folder) -> a folder's entries or why it is absent, ('where', ...) ->
    #: where a product lies, (path[, extension]) -> FitsMap / CalibPlane, or a string saying why it is
    #: unavailable.
    calib: dict[tuple, FitsMap | CalibPlane | str | tuple] = field(default_factory=dict)
    #: Byte spans a header scan of a file of each layout key (`execute.scan_headers`) needed: read with the
    #: next such file's head and tail, its headers in one round trip.
    header_hints: dict[tuple, list[tuple[int, int]]] = field(default_factory=dict)
    #: The persistent cache shared by runs (None: none).
    store: ProductStore | None = None
    #: How many reads fetched PSF bytes (a model, or planes of a cube), and how many cube planes were read (for
    #: tests and the benchmark).
    psf_reads: int = 0
    psf_planes_read: int = 0

    def get_fitsmap(self, url: str) -> FitsMap | None:
        """The cached offset table of `url`, from memory or the disk cache."""
        fmap = self.fitsmaps.get(url)
        if fmap is not None:
            self.fitsmaps.move_to_end(url)
        elif self.disk_dir:
            path = self._disk_path(url)
            if path.exists():
                fmap = FitsMap.from_json(gzip.decompress(path.read_bytes()).decode())
                self._remember(fmap)
        return fmap

    def put_fitsmap(self, fmap: FitsMap) -> None:
        """Remember an offset table (and write it atomically to the disk cache when there is one)."""
        self._remember(fmap)
        if self.disk_dir:
            path = self._disk_path(fmap.url)
            atomic_write_bytes(path, gzip.compress(fmap.to_json().encode(), compresslevel=6))

    def _remember(self, fmap: FitsMap) -> None:
        self.fitsmaps[fmap.url] = fmap
        self.fitsmaps.move_to_end(fmap.url)
        while len(self.fitsmaps) > self.max_fitsmaps:
            self.fitsmaps.popitem(last=False)

    def _disk_path(self, url: str) -> Path:
        return Path(self.disk_dir) / "fitsmaps" / f"{content_hash(url.encode())}.json.gz"

    def stored_bytes(self, store_key: str | None, read: Callable[[], bytes]) -> bytes:
        """Bytes runs share: from the persistent store under `store_key` when it holds them, else `read()`
        (from the archive) and stored; `store_key` None: not storable, always read."""
        data = self.store.get(store_key) if self.store is not None and store_key else None
        if data is None:
            data = read()
            if self.store is not None and store_key:
                self.store.put(store_key, data)
        return data

    def psf_cube(self, key: tuple, load: Callable[[], bytes], dtype: np.dtype,
                 shape: tuple[int, ...]) -> np.ndarray:
        """The PSF cube for `key`, loading its raw big-endian bytes with `load` only the first time."""
        digest = self.psf_index.get(key)
        if digest is None:
            digest = self.add_psf_bytes(load(), dtype, shape)
            self.psf_index[key] = digest
        return self.psf_cubes[digest]

    def epsf_table(self, key: tuple, load: Callable[[], EPSFTable]) -> EPSFTable:
        """The ePSF table for `key`, loaded with `load` only the first time (equal tables shared by content)."""
        table = self.epsf_tables.get(key)
        if table is None:
            table = load()
            table = next((t for t in self.epsf_tables.values() if t.digest == table.digest), table)
            self.epsf_tables[key] = table
        return table

    def add_psf_bytes(self, raw: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> str:
        """Store a cube by content (shared when already held) and return its hash."""
        digest = content_hash(raw)
        if digest not in self.psf_cubes:
            cube = np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
            cube.flags.writeable = False
            self.psf_cubes[digest] = cube
        return digest


_PROCESS_CACHE: FetchCache | None = None


def process_cache(disk_dir: str | None = None, store: ProductStore | None = None) -> FetchCache:
    """The module-level cache of this process (Dask workers each get their own); a new one when `disk_dir`
    or `store` (when given) differ from the held one's."""
    global _PROCESS_CACHE
    held = _PROCESS_CACHE.store if _PROCESS_CACHE is not None else None
    other_store = store is not None and (held is None or held.root != store.root)
    if _PROCESS_CACHE is None or (disk_dir and _PROCESS_CACHE.disk_dir != disk_dir) or other_store:
        _PROCESS_CACHE = FetchCache(disk_dir=disk_dir, store=store)
    return _PROCESS_CACHE
