"""A local mirror's layout and manifest: where staged files go below the mirror root (IRSA's tree below
'ibe/data/spherex/'), and `spxbatch-manifest.json`, which records per file its size, sha256 and kind
('image', 'cutout', 'calibration', or 'none' for a file that needs none) plus the plans the mirror serves.
Written by `spxbatch stage`, read when a mirror is planned and measured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spxbatch.archive.location import relative_to_root
from spxbatch.files import atomic_write_bytes, sha256_file
from spxbatch.level2.naming import IBE_ROOT

MANIFEST_NAME = "spxbatch-manifest.json"
MANIFEST_FORMAT = 1


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest of a mirror ('files': relpath below the root -> entry; 'plans': fingerprint -> record);
    empty when the directory has none."""
    path = Path(root) / MANIFEST_NAME
    if not path.exists():
        return {"format": MANIFEST_FORMAT, "files": {}, "plans": {}}
    return json.loads(path.read_text())


def write_manifest(root: str | Path, manifest: dict[str, Any]) -> None:
    """Save the manifest atomically (a killed run leaves the previous whole one)."""
    atomic_write_bytes(Path(root) / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True).encode())


def is_intact(root: Path, relpath: str, entry: dict[str, Any] | None) -> bool:
    """Whether a manifest entry's file is in the mirror with its recorded size and checksum (an entry of
    kind 'none', e.g. a cutout with no overlap or an absent calibration product, needs no file)."""
    if not entry:
        return False
    if entry.get("kind") == "none":
        return True
    path = root / relpath
    return path.is_file() and path.stat().st_size == entry.get("size") and sha256_file(path) == entry.get("sha256")


def cutout_relpath(image_relpath: str, k: int) -> str:
    """Where the k-th cutout of an image goes in the mirror: beside the image, '<stem>_cutNNN.fits'."""
    short = relative_to_root(image_relpath)
    stem = short[: -len(".fits")] if short.endswith(".fits") else short
    return f"{stem}_cut{k:03d}.fits"


def staged_cutouts(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Image relpath (below the root) -> {'cutouts': [relpaths], 'ny', 'nx'} of the cutouts a mirror holds."""
    out: dict[str, dict[str, Any]] = {}
    for relpath, entry in sorted(manifest["files"].items()):
        if entry.get("kind") == "cutout":
            ny, nx = entry["parent_shape"]
            rec = out.setdefault(entry["parent"], {"cutouts": [], "ny": int(ny), "nx": int(nx)})
            rec["cutouts"].append(f"{IBE_ROOT}/{relpath}")
    return out
