"""Test helpers for whole runs against the simulator's truth: the cube's measurements joined to the truth's
(source, image) rows, which of them are isolated, and robust pull statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from spxbatch.cube.export import measurements_table


def truth_with_positions(info) -> pd.DataFrame:
    """Every truth (source, file) row of an archive, with its source's catalog ra and dec."""
    m = pd.read_parquet(info.truth["measurements"])
    cat = pd.read_csv(info.truth["catalog"]).set_index("name")
    return m.join(cat[["ra", "dec"]], on="name")


def current_truth(archive_root: Path, min_px: float = 10.0) -> pd.DataFrame:
    """The truth's rows of the newest processings (the ones a correct run measures), with `isolated`: no
    other source within `min_px` on the same file, i.e. none in the background annulus."""
    truth = pd.read_parquet(archive_root / "truth" / "measurements.parquet")
    truth = truth[~truth["superseded"]].reset_index(drop=True)
    isolated = np.ones(len(truth), dtype=bool)
    for _, g in truth.groupby("relpath"):
        xy = g[["x", "y"]].to_numpy()
        d = np.hypot(xy[:, None, 0] - xy[None, :, 0], xy[:, None, 1] - xy[None, :, 1])
        np.fill_diagonal(d, np.inf)
        isolated[truth.index.get_indexer(g.index)] = d.min(axis=1) > min_px
    truth["isolated"] = isolated
    return truth


def truth_join(ds, archive_root: Path) -> pd.DataFrame:
    """The cube's measurements joined to the truth of the same (source, image), newest processings only;
    truth columns that clash with the cube's get the suffix `_true`."""
    return measurements_table(ds).merge(current_truth(archive_root), left_on=["source", "obs_id", "band"],
                                        right_on=["name", "obs_id", "detector"], suffixes=("", "_true"))


def robust(values) -> tuple[float, float]:
    """(median, 1.4826 * MAD): a pull distribution's centre and width, blind to the odd outlier."""
    v = np.asarray(values, dtype=float)
    med = float(np.median(v))
    return med, float(1.4826 * np.median(np.abs(v - med)))
