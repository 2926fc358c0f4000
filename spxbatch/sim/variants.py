"""Archive variants for tests the package was not tuned to, applied to an archive `make_archive` wrote.

- `level2_only(info, dest)`: a mirror of the level-2 files alone, without any calibration tree (as many
  sites copy them), with the truth;
- `damage(info)`: files that cannot be read, one per kind in DAMAGE_KINDS (garbage bytes, an empty file,
  a truncated file, a file missing an extension, an unknown layout: a VERSION 7 file with a PSF image), in
  place; `truth/damaged.csv` says which images they are, and `truth/served_index.parquet` holds the index
  of the intact files, which the server takes (`serve_archive(root, index=...)`, `sim serve --index`) so
  that TAP lists the damaged files as IRSA lists a file whatever its bytes;
- `extra_cards(info)`: unexpected header cards (long HIERARCH keywords, unknown keys, a long string with
  CONTINUE, COMMENT/HISTORY, blank cards) in every HDU of a few files, data untouched; such files must
  measure exactly as before (`truth/extra_cards.csv` names them).
Files are chosen deterministically among the newest processings, spread over the archive.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits

from spxbatch.plan.index import index_directory
from spxbatch.sim.instrument import Detector
from spxbatch.sim.make import ArchiveInfo
from spxbatch.sim.r7 import VERSION as R7_VERSION
from spxbatch.sim.rng import rng_for

#: Damage kinds and the reason a reader should give (in substance) for refusing such a file.
DAMAGE_KINDS = {
    "garbage": "not a FITS file",
    "empty": "empty file",
    "truncated": "file ends inside a data unit",
    "missing_extension": "the VARIANCE extension is missing",
    "unknown_layout": "VERSION 7 with a PSF image and no EPSF table: neither QR2 nor R7",
}


def _newest(info: ArchiveInfo, count: int) -> list[str]:
    """`count` distinct newest-processing files, spread evenly over the archive's file list, none of them
    already altered by another variant."""
    files = pd.read_csv(info.truth["files"])
    altered = set()
    for name in ("damaged", "extra_cards"):
        if name in info.truth:
            altered |= set(pd.read_csv(info.truth[name])["relpath"])
    rels = sorted(set(files.loc[files["present"] & ~files["superseded"], "relpath"]) - altered)
    if len(rels) < count:
        raise ValueError(f"the archive has {len(rels)} newest files left to alter, {count} needed")
    picks = np.linspace(0, len(rels) - 1, count).round().astype(int)
    return [rels[i] for i in picks]


def level2_only(info: ArchiveInfo, dest: str | os.PathLike) -> ArchiveInfo:
    """Hard-link (or copy) the level-2 files and the truth into `dest`: no calibration products at all."""
    dest = Path(dest)
    for rel in [*info.files, *(p.relative_to(info.root).as_posix() for p in info.truth.values())]:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(info.root / rel, target)
        except OSError:
            shutil.copy2(info.root / rel, target)
    truth = {k: dest / p.relative_to(info.root) for k, p in info.truth.items()}
    return replace(info, root=dest, calibration_files=[], catalog=truth["catalog"], truth=truth)


def damage(info: ArchiveInfo, kinds: tuple[str, ...] = tuple(DAMAGE_KINDS)) -> pd.DataFrame:
    """Damage one newest file per kind in place (see the module doc); returns truth/damaged.csv's rows."""
    unknown = set(kinds) - set(DAMAGE_KINDS)
    if unknown:
        raise ValueError(f"unknown damage kinds {sorted(unknown)}; known: {sorted(DAMAGE_KINDS)}")
    served = index_directory(info.root, use_cache=False)
    served.to_parquet(info.truth["files"].with_name("served_index.parquet"), index=False)
    rows = []
    for kind, rel in zip(kinds, _newest(info, len(kinds)), strict=True):
        path = info.root / rel
        _DAMAGERS[kind](path, info)
        row = served.loc[served["relpath"] == rel].iloc[0]
        rows.append({"relpath": rel, "obs_id": row["obs_id"], "detector": int(row["detector"]), "kind": kind,
                     "reason": DAMAGE_KINDS[kind], "size_bytes": path.stat().st_size})
    out = pd.DataFrame(rows)
    out.to_csv(info.truth["files"].with_name("damaged.csv"), index=False)
    info.truth["damaged"] = info.truth["files"].with_name("damaged.csv")
    info.truth["served_index"] = info.truth["files"].with_name("served_index.parquet")
    return out


def _garbage(path: Path, info: ArchiveInfo) -> None:
    """Random bytes of the same length (an HTML error page or a broken transfer saved as .fits)."""
    size = path.stat().st_size
    path.write_bytes(rng_for(info.seed, "damage", path.name).integers(0, 256, size, dtype=np.uint8).tobytes())


def _empty(path: Path, info: ArchiveInfo) -> None:
    path.write_bytes(b"")


def _truncated(path: Path, info: ArchiveInfo) -> None:
    """Cut in the middle of the IMAGE data: every header before it intact, the planes after it gone."""
    with fits.open(path) as hdul:
        image = hdul.fileinfo(1)
        cut = image["datLoc"] + (hdul[1].data.nbytes // 2)
    with path.open("r+b") as fh:
        fh.truncate(cut)


def _rewrite(path: Path, hdus: list) -> None:
    """Write `hdus` over `path` (checksums fresh)."""
    out = fits.HDUList(hdus)
    for hdu in out:
        hdu.add_checksum(when="data unit checksum")
    tmp = path.with_name(path.name + ".tmp")
    out.writeto(tmp, overwrite=True)
    os.replace(tmp, path)


def _missing_extension(path: Path, info: ArchiveInfo) -> None:
    with fits.open(path) as hdul:
        _rewrite(path, [h.copy() for h in hdul if h.name != "VARIANCE"])


def _unknown_layout(path: Path, info: ArchiveInfo) -> None:
    """VERSION 7 in PRIMARY, a QR2 PSF image cube where R7 has its EPSF table."""
    with fits.open(path) as hdul:
        hdus = [h.copy() for h in hdul]
        det = Detector(int(hdul["IMAGE"].header["DETECTOR"]), int(hdul["IMAGE"].header["NAXIS1"]))
    hdus[0].header["VERSION"] = R7_VERSION
    psf = fits.ImageHDU(det.psf_cube, name="PSF")
    names = [h.name for h in hdus]
    if "EPSF" in names:
        hdus[names.index("EPSF")] = psf
    elif "PSF" not in names:
        hdus.insert(-1, psf)
    _rewrite(path, hdus)


_DAMAGERS = {
    "garbage": _garbage,
    "empty": _empty,
    "truncated": _truncated,
    "missing_extension": _missing_extension,
    "unknown_layout": _unknown_layout,
}

#: Cards added by `extra_cards`: long HIERARCH keys, unknown short keys, a CONTINUE string, commentary.
EXTRA_CARDS = [
    ("HIERARCH SIM UNEXPECTED KEYWORD", 42, "a HIERARCH card no reader knows"),
    ("XTRAKEY", "surprise", "an unknown 8-character keyword"),
    ("XTRAFLT", 1.5e-3, "an unknown float"),
    ("XTRALONG", "a long string value " * 8, "continues over CONTINUE cards"),
]


def extra_cards(info: ArchiveInfo, count: int = 3) -> list[str]:
    """Add EXTRA_CARDS, a COMMENT, a HISTORY and blank cards to every HDU of `count` newest files."""
    rels = _newest(info, count)
    for rel in rels:
        path = info.root / rel
        with fits.open(path) as hdul:
            hdus = [h.copy() for h in hdul]
        for hdu in hdus:
            for key, value, comment in EXTRA_CARDS:
                hdu.header.append(fits.Card(key, value, comment), end=True)
            hdu.header.add_comment("spxbatch.sim: unexpected cards follow the usual ones")
            hdu.header.add_history("spxbatch.sim: rewritten with extra cards")
            hdu.header.add_blank("", before="XTRAKEY")
        _rewrite(path, hdus)
    pd.DataFrame({"relpath": rels}).to_csv(info.truth["files"].with_name("extra_cards.csv"), index=False)
    info.truth["extra_cards"] = info.truth["files"].with_name("extra_cards.csv")
    return rels
