"""The plan's pairs on disk, partitioned by image block.

A partition is one parquet file holding every (source_index, image_id) pair of a contiguous range of image
ids, sorted by (image_id, source_index); plan.json lists the partitions (file, image range, counts) under
`partitions`, and names their folder (`pairs_dir`). Partitioned by image rather than by source because the
work is image-major (one job and one part per image): a partition is the unit jobs are built from, and no
stage needs all pairs at once.

A new set of partitions is written into a folder of its own (plan/pairs-<token>); writing plan.json, which
names it, is the commit, after which older folders are removed. A plan killed while its pairs are written
keeps the previous one whole.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spxbatch.files import atomic_path

PAIR_COLUMNS = ("source_index", "image_id")
#: Pairs per partition, at most (an image holding more is a partition by itself): ~16 bytes a pair, so a
#: partition read whole is ~16 MB.
PARTITION_PAIRS = 1_000_000
#: The prefix of the folders holding a plan's partitions.
PAIRS_PREFIX = "pairs-"


def empty_pairs() -> pd.DataFrame:
    """A pair table with no rows."""
    return pd.DataFrame({c: pd.Series(dtype=np.int64) for c in PAIR_COLUMNS})


def partition_bounds(per_image: np.ndarray, max_pairs: int | None = None) -> np.ndarray:
    """The first image id of each partition, then the end: contiguous image ranges holding at most
    `max_pairs` (default PARTITION_PAIRS) pairs each (`per_image`: the pair count of image 0..n-1), greedily."""
    limit = max(1, max_pairs or PARTITION_PAIRS)
    cum = np.cumsum(np.asarray(per_image, dtype=np.int64))
    bounds = [0]
    while bounds[-1] < len(cum):
        start = bounds[-1]
        done = int(cum[start - 1]) if start else 0
        bounds.append(max(start + 1, int(np.searchsorted(cum, done + limit, side="right"))))
    return np.asarray(bounds, dtype=np.int64)


def new_pairs_dir(plan_folder: Path) -> Path:
    """A fresh, empty folder for a new set of partitions in `plan_folder`."""
    folder = plan_folder / f"{PAIRS_PREFIX}{uuid.uuid4().hex[:12]}"
    folder.mkdir(parents=True)
    return folder


def write_partition(folder: Path, k: int, pairs: pd.DataFrame, first_image: int, end_image: int) -> dict[str, Any]:
    """Write partition `k` (pairs of image ids first_image..end_image-1, sorted) atomically; its summary."""
    name = f"part_{k:05d}.parquet"
    with atomic_path(folder / name) as tmp:
        pairs[list(PAIR_COLUMNS)].to_parquet(tmp, index=False)
    return {"file": name, "first_image": int(first_image), "end_image": int(end_image),
            "images": int(pairs["image_id"].nunique()), "pairs": len(pairs)}


def write_pairs(plan_folder: Path, pairs: pd.DataFrame, max_pairs: int | None = None,
                ) -> tuple[str, list[dict[str, Any]]]:
    """Partition a whole pair table (any order; `max_pairs` per partition, default PARTITION_PAIRS) into a
    new folder of `plan_folder`; its name and the partition summaries, for plan.json."""
    pairs = pairs.sort_values(["image_id", "source_index"], kind="stable", ignore_index=True)
    ids = pairs["image_id"].to_numpy(np.int64)
    n_images = int(ids[-1]) + 1 if len(ids) else 0
    bounds = partition_bounds(np.bincount(ids, minlength=n_images), max_pairs)
    folder = new_pairs_dir(plan_folder)
    cuts = np.searchsorted(ids, bounds)
    summaries = [write_partition(folder, k, pairs.iloc[cuts[k]:cuts[k + 1]], bounds[k], bounds[k + 1])
                 for k in range(len(bounds) - 1)]
    return folder.name, summaries


def drop_other_pairs(plan_folder: Path, keep: str) -> None:
    """Remove every partition folder of `plan_folder` but `keep` (and an older code's single pairs file)."""
    for p in plan_folder.glob(f"{PAIRS_PREFIX}*"):
        if p.name != keep and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
    (plan_folder / "pairs.parquet").unlink(missing_ok=True)


def iter_pairs(plan_folder: str | Path, meta: dict[str, Any],
               columns: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
    """The pairs of the plan in `plan_folder` (`meta`: its plan.json), one partition at a time, in image
    order."""
    folder = Path(plan_folder) / meta["pairs_dir"]
    for part in meta["partitions"]:
        yield pd.read_parquet(folder / part["file"], columns=list(columns) if columns else None)


def concat_pairs(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """One table of partitions' pairs (an empty one for none)."""
    frames = list(frames)
    return pd.concat(frames, ignore_index=True) if frames else empty_pairs()
