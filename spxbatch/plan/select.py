"""Which candidate images a plan keeps: the band, time, collection and release filters in their canonical
form (as recorded in the plan), checked against what the archive has (an unknown release or collection is a
typo to report, not an empty cube), and one row per exposure and detector (the newest processing version)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spxbatch.archive.io import ArchiveIO, IOStats
from spxbatch.archive.location import ArchiveLocation, fsspec_location
from spxbatch.archive.retry import RetryPolicy
from spxbatch.errors import ConfigError
from spxbatch.level2.constants import BANDS
from spxbatch.level2.naming import version_key

log = logging.getLogger(__name__)


def _band_number(b: int | str) -> int:
    text = str(b).strip().upper().replace("SPHEREX-", "")
    n = int(text[1:]) if text.startswith("D") else int(text)
    if n not in BANDS:
        raise ValueError(f"band {b!r} is not one of 1..6 or D1..D6")
    return n


def plan_filters(bands, time_range, collections, releases) -> dict[str, Any]:
    """The filters in canonical form (sorted lists or None), as recorded in the plan."""
    if time_range is not None and len(time_range) == 0:
        time_range = None
    if time_range is not None:
        if len(time_range) != 2 or not float(time_range[0]) <= float(time_range[1]):
            raise ValueError(f"time_range must be (mjd_min, mjd_max) with min <= max, not {time_range!r}")
        time_range = [float(time_range[0]), float(time_range[1])]
    return {"bands": sorted({_band_number(b) for b in bands}) if bands else None,
            "time_range": time_range,
            "collections": sorted(set(collections)) if collections else None,
            "releases": sorted({r.lower() for r in releases}) if releases else None}


def check_releases(location: ArchiveLocation, releases: Sequence[str], retry: RetryPolicy | None = None) -> None:
    """Refuse (ConfigError) a release the archive has no folder for, naming the folders it has: one folder
    listing of the archive's root, before any work. A root that cannot be listed is not held against the run
    (logged; the plan's queries then say what is wrong)."""
    if not releases:
        return
    protocol, root = fsspec_location(location.file_root)
    try:
        names = ArchiveIO(protocol, retry).list_folder(root, IOStats())
        if protocol == "file":
            names = [n for n in names if (Path(root) / n).is_dir()]
        folders = {n.lower() for n in names if not n.startswith(".")}
    except OSError as exc:
        log.warning("cannot list the releases of %s (%s): --release not checked", location.file_root, exc)
        return
    unknown = sorted({r.lower() for r in releases} - folders)
    if unknown:
        raise ConfigError(f"--release {', '.join(unknown)}: {location.spec or location.file_root} has no such "
                          f"release folder (it has {', '.join(sorted(folders)) or 'none'})")


def check_collections(candidates: pd.DataFrame, collections: Sequence[str] | None) -> None:
    """Refuse (ConfigError) a collection that none of the candidate images (every image around the catalog's
    sources, before the filters) belongs to, naming theirs: a misspelt name would otherwise give an empty cube."""
    if not collections or candidates.empty:
        return
    present = set(candidates["collection"].astype(str))
    unknown = sorted(set(collections) - present)
    if unknown:
        raise ConfigError(f"--collection {', '.join(unknown)} matches none of the {len(candidates)} images the "
                          f"archive has around the catalog's sources (their collections: {', '.join(sorted(present))})")


def apply_filters(images: pd.DataFrame, filters: dict[str, Any]) -> pd.DataFrame:
    """Rows that pass the band, time, collection and release filters (also applied on the server)."""
    keep = np.ones(len(images), dtype=bool)
    if filters["bands"]:
        keep &= images["band_name"].isin([f"D{b}" for b in filters["bands"]]).to_numpy()
    if filters["time_range"]:
        t0, t1 = filters["time_range"]
        keep &= (images["mjd_end"].to_numpy(float) >= t0) & (images["mjd_start"].to_numpy(float) <= t1)
    if filters["collections"]:
        keep &= images["collection"].isin(filters["collections"]).to_numpy()
    if filters["releases"]:
        keep &= images["release"].str.lower().isin(filters["releases"]).to_numpy()
    return images[keep]


def dedupe(images: pd.DataFrame) -> pd.DataFrame:
    """One row per exposure (obs_id, detector): the same file returned twice (tiles overlap; wide and deep
    collections) is kept once, and of several processing versions the newest is kept."""
    if images.empty:
        return images.reset_index(drop=True)
    df = images.sort_values(["relpath", "collection"], kind="stable").drop_duplicates("relpath")
    df = df.assign(_v=[version_key(v) for v in df["version"]])
    df = df.sort_values(["obs_id", "detector", "_v", "release", "relpath"], kind="stable")
    return df.drop_duplicates(["obs_id", "detector"], keep="last").drop(columns="_v").reset_index(drop=True)
