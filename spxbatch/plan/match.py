"""Catalog sources matched to image footprints, vectorised, a chunk of catalog rows at a time, into the
plan's partitioned pairs (`spxbatch.plan.pairs`): the client holds one chunk's pairs and one partition's,
never all of them.

Two passes. First, each chunk of catalog rows is matched against every footprint and its pairs (sorted by
footprint, then source, as `Footprints.match` returns them) are spilled to a file, while the pair counts per
footprint add up. Then the image ids follow (footprints holding a pair, in (mjd, obs_id, detector) order),
the partition bounds follow from the counts, and each partition gathers its slice of every chunk's spill:
a contiguous one, since a spill is sorted by footprint and the ids increase with the footprint's row.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spxbatch.plan.footprint import Footprints
from spxbatch.plan.pairs import new_pairs_dir, partition_bounds, write_partition
from spxbatch.plan.tap import empty_images

#: Catalog rows matched at once (their pairs are held together: ~16 bytes a pair).
MATCH_SOURCES = 50_000


def match(images: pd.DataFrame, ra: np.ndarray, dec: np.ndarray, margin: float, plan_folder: Path, *,
          chunk_sources: int | None = None, max_pairs: int | None = None,
          ) -> tuple[pd.DataFrame, str, list[dict[str, Any]]]:
    """The images holding at least one source (image_id 0..n-1 in (mjd, obs_id, detector) order, with their
    `mjd`), and the partitions of the (source_index, image_id) pairs written into a new folder of
    `plan_folder`: that folder's name and the partition summaries (see the module docstring). Catalog rows
    are matched `chunk_sources` (default MATCH_SOURCES) at a time, into partitions of at most `max_pairs`
    (default PARTITION_PAIRS) pairs."""
    chunk = max(1, chunk_sources or MATCH_SOURCES)
    folder = new_pairs_dir(plan_folder)
    if images.empty:
        out = empty_images()
        out.insert(0, "image_id", pd.Series(dtype=np.int64))
        out["mjd"] = pd.Series(dtype=float)
        return out, folder.name, []
    # order first: image_id then follows the row order
    images = images.sort_values(["mjd_start", "obs_id", "detector", "relpath"], kind="stable")
    images = images.reset_index(drop=True)
    fp = Footprints.from_corners(images["poly_ra"].tolist(), images["poly_dec"].tolist())
    spill = folder / ".spill"
    spill.mkdir()
    counts = np.zeros(len(images), dtype=np.int64)
    chunks = []
    for k, lo in enumerate(range(0, len(ra), chunk)):
        hi = min(len(ra), lo + chunk)
        poly, point = fp.match(ra[lo:hi], dec[lo:hi], margin)
        counts += np.bincount(poly, minlength=len(images))
        chunks.append(spill / f"chunk_{k:05d}.npy")
        np.save(chunks[-1], np.stack([poly, point + lo]))
    used = np.flatnonzero(counts)
    new_id = np.full(len(images), -1, dtype=np.int64)
    new_id[used] = np.arange(len(used))
    df = images.iloc[used].reset_index(drop=True)
    df.insert(0, "image_id", np.arange(len(df), dtype=np.int64))
    df["mjd"] = 0.5 * (df["mjd_start"].to_numpy(float) + df["mjd_end"].to_numpy(float))
    bounds = partition_bounds(counts[used], max_pairs)
    first_poly = np.append(used, len(images))[bounds]  # the footprint row each partition starts at
    cuts = [np.searchsorted(np.load(p, mmap_mode="r")[0], first_poly) for p in chunks]
    summaries = []
    for k in range(len(bounds) - 1):
        poly, src = np.concatenate([_slice(p, c[k], c[k + 1]) for p, c in zip(chunks, cuts, strict=True)], axis=1)
        img = new_id[poly]
        order = np.lexsort((src, img))
        part = pd.DataFrame({"source_index": src[order], "image_id": img[order]})
        summaries.append(write_partition(folder, k, part, bounds[k], bounds[k + 1]))
    shutil.rmtree(spill)
    return df, folder.name, summaries


def _slice(path: Path, start: int, stop: int) -> np.ndarray:
    """Columns start..stop of a spill file, copied out of a map closed again (so the pages read do not stay
    mapped, counted in the client's RSS, for the rest of the plan)."""
    spilled = np.load(path, mmap_mode="r")
    out = np.array(spilled[:, start:stop])
    del spilled
    return out
