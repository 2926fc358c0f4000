"""The images a cube holds that an update's plan does not list (outside its time window, or no longer listed
by the archive), added to the plan (pure) so that the assembly takes their carried-over rows too: one row each,
marked CARRIED_ONLY, numbered after the planned images, with the pairs of its sources."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spxbatch.plan.plan import Plan

#: The plan column marking the images added to an update's plan because only the cube holds them.
CARRIED_ONLY = "carried_only"


def carried_only(images: pd.DataFrame) -> np.ndarray:
    """Which rows of a plan's images were added by `with_unplanned` (none in a plan made by `make_plan`)."""
    if CARRIED_ONLY not in images.columns:
        return np.zeros(len(images), dtype=bool)
    return images[CARRIED_ONLY].fillna(False).to_numpy(bool)


def with_unplanned(plan: Plan, unplanned: pd.DataFrame, obs: pd.DataFrame, failures: pd.DataFrame) -> Plan:
    """`plan` plus a row per `unplanned` image (its obs_id, band and processing, from `classify.not_planned`) and
    a pair per source the cube's `obs` or `failures` rows hold on it; an image's URL is that of its failure rows
    (the only use the assembly makes of it), '' when it has none."""
    first = int(plan.images["image_id"].max()) + 1 if len(plan.images) else 0
    ids = pd.Series(np.arange(first, first + len(unplanned), dtype=np.int64),
                    index=pd.MultiIndex.from_frame(unplanned[["obs_id", "band"]]), name="image_id")
    rows = pd.concat([obs[["source_index", "obs_id", "band"]], failures[["source_index", "obs_id", "band"]]])
    rows = rows.assign(obs_id=rows["obs_id"].astype(str), band=rows["band"].astype(np.int64))
    rows = rows.join(ids, on=["obs_id", "band"], how="inner")
    pairs = rows[["source_index", "image_id"]].drop_duplicates().sort_values(["image_id", "source_index"])
    urls = failures.assign(band=failures["band"].astype(np.int64)).drop_duplicates(["obs_id", "band"])
    urls = urls.set_index(["obs_id", "band"])["url"]
    n = len(unplanned)
    images = pd.DataFrame({"image_id": ids.to_numpy(), "obs_id": unplanned["obs_id"].to_numpy(),
                           "detector": unplanned["band"].to_numpy(), "version": unplanned["processing"].to_numpy(),
                           "url": [urls.get(k, "") for k in ids.index], "poly_ra": [[]] * n, "poly_dec": [[]] * n,
                           CARRIED_ONLY: True})
    return Plan(pd.concat([plan.images.assign(**{CARRIED_ONLY: False}), images], ignore_index=True),
                pd.concat([plan.pairs, pairs], ignore_index=True), {**plan.meta, "carried_only_images": n})
