"""Catalog sources matched to image footprints on the client, vectorised: the plan's images and pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spxbatch.plan.footprint import Footprints
from spxbatch.plan.tap import empty_images

PAIR_COLUMNS = ("source_index", "image_id")


def match(images: pd.DataFrame, ra: np.ndarray, dec: np.ndarray,
          margin: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Images holding at least one source (image_id 0..n-1 in (mjd, obs_id, detector) order) and the
    (source_index, image_id) pairs sorted by (image_id, source_index)."""
    if images.empty:
        out = empty_images()
        out.insert(0, "image_id", pd.Series(dtype=np.int64))
        out["mjd"] = pd.Series(dtype=float)
        return out, pd.DataFrame({c: pd.Series(dtype=np.int64) for c in PAIR_COLUMNS})
    # order first: image_id then follows the row order and the pairs come out sorted
    images = images.sort_values(["mjd_start", "obs_id", "detector", "relpath"], kind="stable")
    images = images.reset_index(drop=True)
    fp = Footprints.from_corners(images["poly_ra"].tolist(), images["poly_dec"].tolist())
    poly, point = fp.match(ra, dec, margin)
    used = poly[np.r_[True, poly[1:] != poly[:-1]]] if len(poly) else poly
    new_id = np.full(len(images), -1, dtype=np.int64)
    new_id[used] = np.arange(len(used))
    df = images.iloc[used].reset_index(drop=True)
    df.insert(0, "image_id", np.arange(len(df), dtype=np.int64))
    df["mjd"] = 0.5 * (df["mjd_start"].to_numpy(float) + df["mjd_end"].to_numpy(float))
    pairs = pd.DataFrame({"source_index": point, "image_id": new_id[poly]})
    return df, pairs
