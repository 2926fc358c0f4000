"""File names of per-source outputs (figures, light-curve CSVs): made of the source name, unique across a
cube's sources (case-insensitively too, for macOS and Windows disks) and bounded in length, with the
mapping written beside the files so that every file can be traced back to its source."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from spxbatch.errors import ConfigError
from spxbatch.files import atomic_write_bytes

#: Longest stem in UTF-8 bytes (the extension and atomic-write temporaries stay far below 255 bytes).
MAX_STEM_BYTES = 90
#: Hex digits of the name's digest appended to a stem that is not the name itself.
DIGEST_CHARS = 10
#: Characters that are not letters, digits (str.isalnum) or -_.+
_UNSAFE = re.compile(r"[^\w\-.+]")
#: The table of (source, file) written beside the files.
NAME_MAP = "sources.csv"


def safe_filename(name: str) -> str:
    """The source name with anything unsafe in a file name (all but letters, digits and -_.+) replaced by an
    underscore."""
    return _UNSAFE.sub("_", name)


def source_file_stems(names: Sequence[str]) -> dict[str, str]:
    """Source name -> file stem, for all the names of a cube. A name that is safe, short and unlike any
    other (ignoring case) is its own stem; any other name is made safe, cut, and given a digest of the
    name, so distinct names never share a file and a name's file does not depend on which are drawn."""
    plain = [safe_filename(n) == n and not n.startswith(".") and len(n.encode()) <= MAX_STEM_BYTES
             for n in names]
    folded = Counter(n.casefold() for n, p in zip(names, plain, strict=True) if p)
    shared = {f for f, count in folded.items() if count > 1}
    out = {n: n for n, p in zip(names, plain, strict=True) if p and n.casefold() not in shared}
    taken = {stem.casefold() for stem in out.values()}
    for name in names:
        if name not in out:
            stem = _digested(name)
            while stem.casefold() in taken:  # a plain name that looks like this digested stem keeps it
                stem = _digested(stem)
            taken.add(stem.casefold())
            out[name] = stem
    return out


def _digested(name: str) -> str:
    """The safe name cut to fit, then '-' and a digest of the whole name."""
    digest = hashlib.sha1(name.encode()).hexdigest()[:DIGEST_CHARS]
    head = safe_filename(name).lstrip(".")
    while len(head.encode()) > MAX_STEM_BYTES - DIGEST_CHARS - 1:
        head = head[:-1]
    return f"{head}-{digest}" if head else digest


def output_folder(path: str | Path, what: str) -> Path:
    """The folder per-source files go to, made if needed; a ConfigError (exit 2) when `path` is a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} go to a folder, and {path} is a file; give a folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def output_file(path: str | Path, what: str) -> Path:
    """The file a table is exported to, its folder made if needed; a ConfigError when `path` is a folder."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} is one file, and {path} is a folder; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_name_map(outdir: str | Path, files: Iterable[tuple[str, Path]]) -> Path:
    """Write the (source, file) table of the files just written into `outdir` (atomically)."""
    rows = [(name, Path(path).name) for name, path in files]
    path = Path(outdir) / NAME_MAP
    atomic_write_bytes(path, pd.DataFrame(rows, columns=["source", "file"]).to_csv(index=False).encode())
    return path
