"""The plan's candidate images of a local mirror, from the files' own headers (no server): whole files,
and for a mirror staged as cutouts one row per parent image carrying its cutout files and frame size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits

from spxbatch.archive.location import relative_to_root
from spxbatch.archive.mirror import read_manifest
from spxbatch.level2.constants import BANDS, DETECTOR_NPIX
from spxbatch.level2.headers import parent_corners
from spxbatch.level2.naming import IBE_ROOT, exposure_of_name, level2_relpath
from spxbatch.plan.index import index_directory
from spxbatch.plan.tap import IMAGE_COLUMNS, empty_images, path_parts


def local_images(root: str) -> pd.DataFrame:
    """The plan's image columns for every Level-2 file below a local mirror root, from their headers; files
    whose headers cannot be read are rows too (see `unreadable_rows`), so that they end as failures."""
    index = index_directory(root)
    images = _readable_images(index, root)
    unreadable, unplaced = unreadable_rows(index.attrs.get("failed", []), images)
    out = pd.concat([images, unreadable], ignore_index=True) if len(unreadable) else images
    out.attrs["unplaced"] = unplaced
    return out


def unreadable_rows(failed: list[tuple[str, str]], images: pd.DataFrame) -> tuple[pd.DataFrame, list]:
    """Plan rows for files whose headers could not be read, placed on the sky by a readable file of the same
    exposure (another processing of its detector, else its partner detector, which sees the same sky): their
    measurement then fails with the file's own error and is recorded. Files that no such file places, or
    whose name names no exposure, are returned as (relpath, reason) to be reported."""
    rows, unplaced = [], []
    by_exposure = {(o, int(d)): i for i, (o, d) in enumerate(zip(images["obs_id"], images["detector"],
                                                                  strict=True))}
    for relpath, error in failed:
        exposure = exposure_of_name(relpath)
        if exposure is None:
            unplaced.append((relpath, error))
            continue
        obs_id, detector = exposure
        stand_in = by_exposure.get((obs_id, detector), by_exposure.get((obs_id, BANDS[detector].partner)))
        if stand_in is None:
            unplaced.append((relpath, error))
            continue
        row = images.iloc[stand_in].to_dict()
        band = BANDS[detector]
        release, version = path_parts(relpath)
        row.update(relpath=f"{IBE_ROOT}/{relpath}", detector=detector, band_name=f"D{detector}", version=version,
                   release=release, energy_lo_um=band.lo_um, energy_hi_um=band.hi_um, size_bytes=pd.NA)
        if "cutouts" in row:  # the stand-in's cutouts are not this file's
            row["cutouts"] = []
        rows.append(row)
    return pd.DataFrame(rows, columns=images.columns), unplaced


def _readable_images(index: pd.DataFrame, root: str) -> pd.DataFrame:
    """The plan's image rows of the files whose headers were read."""
    known = read_manifest(root)["files"]
    if not index.empty:  # a cutout at the parent's corner has CRPIXnA = 1: only the manifest tells
        staged = [known.get(r, {}).get("kind") == "cutout" for r in index["relpath"]]
        index = index.assign(is_cutout=index["is_cutout"].to_numpy(bool) | np.asarray(staged, dtype=bool))
    if not index.empty and index["is_cutout"].any():
        return _with_cutout_parents(index, root, known)
    return normalise_index(index)


def _with_cutout_parents(index: pd.DataFrame, root: str, known: dict[str, dict]) -> pd.DataFrame:
    """The image rows of a mirror holding cutouts: whole files as usual, and one row per parent image for
    its cutout files (column `cutouts`), with the parent's footprint and frame size (`nx`, `ny`) so that
    sources are matched and measured exactly as on the parent. The parent's path and size come from the
    mirror's manifest (`known`, written by `spxbatch stage`), else from IRSA's layout and the full detector."""
    whole = normalise_index(index[~index["is_cutout"]])
    whole["nx"], whole["ny"] = index.loc[~index["is_cutout"], ["nx", "ny"]].to_numpy(np.int64).T
    whole["cutouts"] = [[] for _ in range(len(whole))]
    cuts = index[index["is_cutout"]].copy()
    parents, shapes = [], []
    for r in cuts.itertuples(index=False):
        entry = known.get(r.relpath, {})
        parents.append(entry.get("parent") or level2_relpath(r.obs_id, r.detector, r.version,
                                                                      r.release or "qr2"))
        shapes.append(tuple(entry.get("parent_shape") or (DETECTOR_NPIX, DETECTOR_NPIX)))
    cuts["parent"], cuts["parent_shape"] = parents, shapes
    have_whole = {relative_to_root(r) for r in whole["relpath"]}
    rows = []
    for parent, grp in cuts.groupby("parent", sort=True):
        if parent in have_whole:  # the whole file is in the mirror too: it serves every source
            continue
        first = grp.iloc[0]
        ny, nx = first["parent_shape"]
        with fits.open(Path(root) / first["relpath"], lazy_load_hdus=True) as hdul:
            ra, dec = parent_corners(hdul["IMAGE"].header, (ny, nx))
        row = normalise_index(grp.iloc[:1]).iloc[0].to_dict()
        row.update(relpath=f"{IBE_ROOT}/{parent}", poly_ra=ra.tolist(), poly_dec=dec.tolist(),
                   size_bytes=pd.NA, nx=int(nx), ny=int(ny),
                   cutouts=[f"{IBE_ROOT}/{c}" for c in sorted(grp["relpath"])])
        rows.append(row)
    out = pd.concat([whole, pd.DataFrame(rows, columns=whole.columns)], ignore_index=True)
    return out.astype({"size_bytes": "Int64", "nx": np.int64, "ny": np.int64})


def normalise_index(index: pd.DataFrame) -> pd.DataFrame:
    """The plan's image columns from `index_directory`'s table (relpath relative to the IBE root)."""
    if index.empty:
        return empty_images()
    relpath = [f"{IBE_ROOT}/{str(p).lstrip('/')}" for p in index["relpath"]]
    ra_c = index[[f"ra{i}" for i in range(1, 5)]].to_numpy(float) % 360.0
    dec_c = index[[f"dec{i}" for i in range(1, 5)]].to_numpy(float)
    out = pd.DataFrame({
        "relpath": relpath,
        "obs_id": index["obs_id"].astype(str).to_numpy(),
        "detector": index["detector"].to_numpy(np.int64),
        "band_name": [str(b).split("-")[-1] for b in index["band"]],
        "version": index["version"].astype(str).to_numpy(),
        "release": index["release"].astype(str).to_numpy(),
        "collection": index["collection"].astype(str).to_numpy(),
        "mjd_start": index["time_bounds_lower"].to_numpy(float),
        "mjd_end": index["time_bounds_upper"].to_numpy(float),
        "energy_lo_um": index["energy_bounds_lower"].to_numpy(float) * 1e6,
        "energy_hi_um": index["energy_bounds_upper"].to_numpy(float) * 1e6,
        "poly_ra": ra_c.tolist(),
        "poly_dec": dec_c.tolist(),
        "size_bytes": pd.array(index["size_bytes"], dtype="Int64"),
    })
    return out[list(IMAGE_COLUMNS)]
