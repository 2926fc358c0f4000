"""The image table of a directory of Level-2 files, built from the files' own headers (no TAP needed).

Used by the local-mirror mode of the pipeline and by the simulated archive (its TAP tables come from it).
Any layout works (IRSA's tree, or a flat folder of downloads and cutouts); only headers and the small
WCS-WAVE table are read. One row per file, columns:

- `relpath` (posix, relative to root), `size_bytes`, `mtime_ns`;
- `obs_id` (OBSID), `detector`, `band` ('SPHEREx-Dn'), `release` ('qr2' if the path has it, else ''),
  `version` (processing tag 'l2b-v20-2025-253' from the path or file name, else the PROCTAG card, else ''),
  `pipeline_version` (primary VERSION), `collection` (primary COLLECTN card, else 'spherex_qr2');
- `mjd_start`, `mjd_end` (MJD-BEG, MJD-END); `time_bounds_lower` = MJD-BEG and `time_bounds_upper` =
  MJD-BEG + 115.12 s, the span IRSA's TAP shows (MJD-END - MJD-BEG is the 113.58 s exposure);
- `energy_bounds_lower/upper` (metres): min of lambda - dlambda/2 and max of lambda + dlambda/2 over a
  grid of the file's own pixels through its WCS-WAVE; the band's TAP bounds if that cannot be evaluated;
- `ra1..ra4`, `dec1..dec4`: footprint corners at pixels (-0.5,-0.5), (nx-0.5,-0.5), (nx-0.5,ny-0.5),
  (-0.5,ny-0.5) through the full SIP WCS; `ra`, `dec` at the central pixel; `nx`, `ny`;
- `is_cutout` (CRPIX1A/2A != 1) and `x0`, `y0`, the 0-based parent origin (0, 0 for full frames).

Files that cannot be read are not rows: they are listed in `df.attrs["failed"]` as (relpath, message).
The result is cached in `.spxbatch-index.parquet` in the directory (or in `cache_dir` when given or when the
directory is read-only), keyed by (relpath, size, mtime): unchanged files are not opened again.
"""

from __future__ import annotations

import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits

from spxbatch.files import atomic_path
from spxbatch.level2.headers import image_record
from spxbatch.level2.naming import CALIBRATION_PRODUCTS, processing_tag

CACHE_NAME = ".spxbatch-index.parquet"
#: Bump when the columns or their meaning change (old caches are then ignored).
CACHE_VERSION = 2
FITS_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fts")
#: Folders of calibration products under an IRSA tree (QR2's, and QR3's new ones): not Level-2 images, not indexed.
CALIBRATION_DIRS = frozenset(folder for folder, _, _ in CALIBRATION_PRODUCTS.values()) | {"epsf", "l3_flux_corrections"}

#: Columns of the cached table (the returned one drops `error`).
COLUMNS = [
    "relpath", "size_bytes", "mtime_ns", "error", "obs_id", "detector", "band", "release", "version",
    "pipeline_version", "collection", "mjd_start", "mjd_end", "time_bounds_lower", "time_bounds_upper",
    "energy_bounds_lower", "energy_bounds_upper", "ra", "dec",
    *(f"{c}{i}" for i in range(1, 5) for c in ("ra", "dec")),
    "nx", "ny", "is_cutout", "x0", "y0",
]

_RELEASE_RE = re.compile(r"^(qr\d*|dr\d+)$")


def index_directory(
    root: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    workers: int = 4,
) -> pd.DataFrame:
    """One row per Level-2 file below `root` (see the module doc), sorted by relpath."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"not a directory: {root}")
    cache_path = _cache_path(root, cache_dir)
    cached = _read_cache(cache_path) if use_cache else None
    known = {} if cached is None else {
        (r.relpath, r.size_bytes, r.mtime_ns): i for i, r in enumerate(cached.itertuples(index=False))
    }
    keep, todo = [], []
    for key in _walk(root):
        if key in known:
            keep.append(known[key])
        else:
            todo.append(key)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        fresh = list(pool.map(lambda f: _row(root, *f), todo))
    parts = [cached.iloc[keep]] if keep else []
    if fresh:
        parts.append(pd.DataFrame(fresh))
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    table = table.reindex(columns=COLUMNS).sort_values("relpath", ignore_index=True)
    if use_cache and (todo or (cached is not None and len(cached) != len(table))):
        _write_cache(table, cache_path)
    failed = table["error"].notna() & (table["error"] != "")
    ok = table[~failed].drop(columns="error").reset_index(drop=True)
    ok = ok.astype({"size_bytes": np.int64, "mtime_ns": np.int64, "detector": np.int64, "nx": np.int64,
                    "ny": np.int64, "x0": np.int64, "y0": np.int64, "is_cutout": bool})
    ok.attrs["failed"] = list(zip(table.loc[failed, "relpath"], table.loc[failed, "error"], strict=True))
    return ok


def _walk(root: Path) -> list[tuple[str, int, int]]:
    """(relpath, size, mtime_ns) of every FITS file below root, calibration folders excepted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in CALIBRATION_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.lower().endswith(FITS_SUFFIXES):
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except OSError:  # e.g. a dangling symlink
                    continue
                out.append((path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return out


def _row(root: Path, relpath: str, size: int, mtime_ns: int) -> dict:
    row: dict = {"relpath": relpath, "size_bytes": size, "mtime_ns": mtime_ns, "error": None}
    try:
        row.update(read_headers(root / relpath))
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
    row.update(_path_tags(relpath, row.get("version") or ""))
    return row


def _path_tags(relpath: str, header_version: str) -> dict:
    parts = relpath.split("/")
    release = next((p for p in parts[:-1] if _RELEASE_RE.match(p)), "")
    return {"release": release, "version": processing_tag(relpath) or header_version}


def read_headers(path: str | os.PathLike) -> dict:
    """The index columns that come from one file's headers (reads headers and the WCS-WAVE table only)."""
    with fits.open(path, lazy_load_hdus=True, memmap=True) as hdul:
        return image_record(hdul)


def _cache_path(root: Path, cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is None and os.access(root, os.W_OK):
        return root / CACHE_NAME
    base = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "spxbatch" / "index"
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return base / f"{key}{CACHE_NAME}"


def _read_cache(path: Path) -> pd.DataFrame | None:
    try:
        table = pd.read_parquet(path)
    except Exception:
        return None
    if "cache_version" not in table.columns or not (table["cache_version"] == CACHE_VERSION).all():
        return None
    return table.drop(columns="cache_version")


def _write_cache(table: pd.DataFrame, path: Path) -> None:
    """Atomic write (temp file + rename); a failure to cache is not an error."""
    try:
        with atomic_path(path) as tmp:
            table.assign(cache_version=CACHE_VERSION).to_parquet(tmp, index=False)
    except OSError:
        pass
