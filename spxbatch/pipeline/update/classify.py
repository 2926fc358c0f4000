"""Which images an update measures (pure): the images a cube holds, each with the processing it was
measured from, set against a new plan of the same catalog.

A planned image (one per exposure and detector, its newest processing) is
- `new`: the cube holds no row of its (obs_id, band);
- `superseding`: the cube measured another processing of it (a reprocessing replaces the old numbers);
- `retry`: the cube recorded a failure of it that a rerun retries ('failed: ...');
- `new_sources`: the catalog grew and the image holds a new source: it is measured again whole, old sources
  included, because the joint PSF fits, the neighbour masks and the blend flags of the old sources depend on
  every catalog source on the image (so the cube stays equal to a fresh run of the whole catalog);
- `old`: none of these: its rows are carried over from the cube, never fetched again.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from spxbatch.level2.naming import processing_tag

#: The kinds of planned images, in the order the summary lists them; all but 'old' are measured.
KINDS = ("new", "superseding", "retry", "new_sources", "old")
#: The kinds that are measured (fetched) by an update.
MEASURED_KINDS = KINDS[:-1]


def measured_images(obs: pd.DataFrame, failures: pd.DataFrame) -> pd.DataFrame:
    """One row per (obs_id, band) the cube holds, with `processing` (the tag its measurements record, else the
    one in the URL of its recorded failure rows) and `failed` (some row recorded a failure a rerun retries).

    `obs` has the cube's obs_id, band and processing; `failures` its failure obs_id, band, url and reason."""
    rows = pd.concat([
        pd.DataFrame({"obs_id": obs["obs_id"].astype(str), "band": obs["band"].astype(np.int64),
                      "processing": obs["processing"].astype(str), "failed": False}),
        pd.DataFrame({"obs_id": failures["obs_id"].astype(str), "band": failures["band"].astype(np.int64),
                      "processing": [processing_tag(str(u)) for u in failures["url"]],
                      "failed": failures["reason"].astype(str).str.startswith("failed").to_numpy()}),
    ], ignore_index=True)  # measurements first: their processing wins over a URL's
    rows["processing"] = rows["processing"].where(rows["processing"] != "")
    grouped = rows.groupby(["obs_id", "band"], sort=True)
    out = pd.DataFrame({"processing": grouped["processing"].first(), "failed": grouped["failed"].any()})
    out["processing"] = out["processing"].fillna("")
    return out.reset_index()


def classify(images: pd.DataFrame, pairs: pd.DataFrame, held: pd.DataFrame, n_old_sources: int) -> pd.Series:
    """The kind (KINDS) of every planned image, indexed by image_id.

    `images`: the plan's image_id, obs_id, detector and version; `pairs`: its (source_index, image_id);
    `held`: `measured_images` of the cube; sources from `n_old_sources` on are new in the catalog."""
    keyed = images[["image_id", "obs_id", "detector", "version"]].assign(
        obs_id=images["obs_id"].astype(str), band=images["detector"].astype(np.int64))
    merged = keyed.merge(held, on=["obs_id", "band"], how="left", indicator=True)
    holds_new = merged["image_id"].isin(pairs.loc[pairs["source_index"] >= n_old_sources, "image_id"])
    kind = np.select(
        [merged["_merge"].to_numpy() == "left_only",
         merged["processing"].astype(str).to_numpy() != merged["version"].astype(str).to_numpy(),
         merged["failed"].fillna(False).to_numpy(bool),
         holds_new.to_numpy()],
        list(MEASURED_KINDS), default="old")
    return pd.Series(kind, index=merged["image_id"].to_numpy(np.int64), name="kind")


def not_planned(images: pd.DataFrame, held: pd.DataFrame) -> pd.DataFrame:
    """The rows of `held` whose (obs_id, band) the plan does not list: images outside the update's time window,
    or no longer listed by the archive. Their rows are carried over as they are."""
    planned = set(zip(images["obs_id"].astype(str), images["detector"].astype(np.int64), strict=True))
    keep = [(o, b) not in planned for o, b in zip(held["obs_id"], held["band"], strict=True)]
    return held[np.asarray(keep, dtype=bool)].reset_index(drop=True)


def summary(kinds: pd.Series) -> dict[str, int]:
    """How many planned images of each kind."""
    counts = kinds.value_counts()
    return {k: int(counts.get(k, 0)) for k in KINDS}
