"""Part rows into the cube's two tables: measurements and failures (one definition, for the in-memory path and
for each shuffled batch)."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: The failure table's columns (cube.assemble.FAILURE_COLUMNS' sources).
FAILURE_TABLE_COLUMNS = ("source_index", "obs_id", "band", "url", "reason")


def split_parts(parts: pd.DataFrame, urls: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(measurements, failures) of part rows in part order: the measured rows without their `measured` and
    `status` columns, and one failure row per unmeasured (source, image), with the image's URL from `urls`
    (indexed by image_id) and the row's status as its reason."""
    if parts.empty:
        parts = pd.DataFrame({"source_index": [], "measured": [], "status": [], "image_id": [],
                              "obs_id": [], "band": []})
    measured = parts["measured"].astype(bool)
    m = parts[measured].drop(columns=["measured", "status"], errors="ignore")
    failed = parts[~measured]
    failures = pd.DataFrame({
        "source_index": failed["source_index"].astype(np.int64),
        "obs_id": failed["obs_id"].astype(str),
        "band": failed["band"].astype(np.int8),
        "url": urls.loc[failed["image_id"].astype(np.int64)].astype(str).to_numpy()
        if len(failed) else np.array([], dtype=str),
        "reason": failed["status"].astype(str),
    })
    return m, failures


def empty_failures() -> pd.DataFrame:
    """A failure table without rows."""
    return pd.DataFrame({"source_index": np.array([], dtype=np.int64), "obs_id": np.array([], dtype=object),
                         "band": np.array([], dtype=np.int8), "url": np.array([], dtype=object),
                         "reason": np.array([], dtype=object)})
