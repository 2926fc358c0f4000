"""The persistent cache of what runs share: PSF cubes, ePSF tables and calibration pixels, by key, on disk.

A second run in the same field (a new output, another catalog) then fetches the image pixels and headers
only. Entries are plain files written atomically, so the worker processes of a node share one folder
safely; the folder is bounded in size (the least recently used entries go first). Keys are content-bound:
a PSF by its HDU header (whose DATASUM changes with the cube; without one, the file's URL is part of the
key) and a calibration block by the product's URL, size and extension header, so an edited or regenerated
archive never meets stale bytes. A cache that cannot be read or written is skipped, never an error.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from spxbatch.files import atomic_write_bytes

log = logging.getLogger(__name__)

#: The environment variable that overrides the default folder ('none' turns the cache off).
CACHE_ENV = "SPXBATCH_CACHE_DIR"
#: The value of `cache_dir` (or of CACHE_ENV) that turns the cache off.
NO_CACHE = "none"
#: An entry's folder and file stem: the sha256 of its key.
_ENTRY_NAME = re.compile(r"[0-9a-f]{64}")


def default_store_dir() -> str:
    """The folder `cache_dir = "auto"` means: $SPXBATCH_CACHE_DIR, else $XDG_CACHE_HOME/spxbatch/products,
    else ~/.cache/spxbatch/products ('none' when SPXBATCH_CACHE_DIR says so)."""
    given = os.environ.get(CACHE_ENV)
    if given:
        return given
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "spxbatch" / "products")


def resolve_store_dir(setting: str) -> str:
    """`cache_dir` as a folder: 'auto' -> `default_store_dir()`, '' or 'none' -> 'none', a path made absolute."""
    if setting == "auto":
        setting = default_store_dir()
    if setting.strip().lower() in ("", NO_CACHE):
        return NO_CACHE
    return str(Path(setting).expanduser().absolute())


class ProductStore:
    """Bytes by key in `root`, at most `max_bytes` in all (least recently used entries removed on write)."""

    def __init__(self, root: str | os.PathLike, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self._unchecked: int | None = None  # bytes written since the last trim (None: never trimmed)

    def _path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.root / digest[:2] / f"{digest[2:]}.bin"

    def get(self, key: str) -> bytes | None:
        """The bytes stored under `key` (their use time refreshed), or None."""
        path = self._path(key)
        try:
            data = path.read_bytes()
            os.utime(path)
        except OSError:
            return None
        return data

    def has(self, key: str) -> bool:
        """Whether an entry is stored under `key` (without reading it)."""
        return self._path(key).is_file()

    def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key` atomically, then trim the folder to its bound; failures are logged only."""
        if len(data) > self.max_bytes:
            return
        try:
            atomic_write_bytes(self._path(key), data)
            # trimming lists the folder: do it on the first write, then after each 5 % of the bound written
            self._unchecked = None if self._unchecked is None else self._unchecked + len(data)
            if self._unchecked is None or self._unchecked > self.max_bytes // 20:
                self._trim()
                self._unchecked = 0
        except OSError as exc:  # a full or read-only disk costs a re-read next run, nothing else
            log.debug("product cache %s not written: %s", self.root, exc)

    def size(self) -> int:
        """Bytes held now."""
        return sum(size for _, _, size in self._entries())

    def _entries(self) -> list[tuple[float, Path, int]]:
        """(last use, path, size) of every entry: files named as `_path` names them, so that nothing else in the
        folder is ever counted or removed."""
        out = []
        for path in self.root.glob("??/*.bin"):
            if not _ENTRY_NAME.fullmatch(f"{path.parent.name}{path.stem}"):
                continue
            try:
                st = path.stat()
            except OSError:  # removed by another process meanwhile
                continue
            out.append((st.st_mtime, path, st.st_size))
        return out

    def _trim(self) -> None:
        """Remove the least recently used entries until the folder holds at most `max_bytes`."""
        entries = self._entries()
        total = sum(size for _, _, size in entries)
        for _, path, size in sorted(entries, key=lambda e: e[0]):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size


def open_store(cache_dir: str, max_gb: float) -> ProductStore | None:
    """The store `cache_dir` names (`resolve_store_dir`) bounded to `max_gb` GB, or None when it is off."""
    root = resolve_store_dir(cache_dir)
    return None if root == NO_CACHE else ProductStore(root, int(max_gb * 1e9))
