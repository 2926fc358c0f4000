"""The cube's rows of the images an update does not measure again, as run-directory parts (pure): each
image's measurements and recorded failure rows, keyed to the new plan's image id, so that the normal
assembly builds the new cube from carried and freshly measured parts alike.

A part's measured rows hold every measurement column the cube keeps; its unmeasured rows hold what the
cube's failure table keeps (source, obs_id, band, reason): exactly what the assembly reads back."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import xarray as xr

from spxbatch.pipeline.rundir import PART_COLUMNS

#: The cube's failure variables and the part columns they come from.
FAILURE_COLUMNS = {"failure_source_index": "source_index", "failure_obs_id": "obs_id", "failure_band": "band",
                   "failure_url": "url", "failure_reason": "reason"}


def cube_rows(ds: xr.Dataset) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cube's measurements (every obs variable) and failure rows (as FAILURE_COLUMNS), loaded."""
    obs = pd.DataFrame({v: ds[v].values for v in ds.data_vars if ds[v].dims == ("obs",)})
    failures = pd.DataFrame({col: ds[var].values for var, col in FAILURE_COLUMNS.items()})
    return obs, failures


def carried_parts(obs: pd.DataFrame, failures: pd.DataFrame, image_ids: dict[tuple[str, int], int],
                  created: str) -> Iterator[tuple[int, pd.DataFrame]]:
    """(image_id, part table) for every (obs_id, band) in `image_ids`, from the cube's `obs` rows (its obs
    variables) and `failures` rows (its failure variables, renamed as FAILURE_COLUMNS); a measurement without
    `date_added` (a cube made before it existed) gets the cube's `created` time. Failure rows keep their order,
    which is the order the assembly lists them in."""
    measured = obs[[c for c in obs.columns if c in PART_COLUMNS]].assign(measured=True, status="ok")
    if "date_added" not in measured.columns:
        measured["date_added"] = created
    measured["date_added"] = measured["date_added"].where(measured["date_added"].astype(str) != "", created)
    unmeasured = failures[["source_index", "obs_id", "band", "reason"]].rename(columns={"reason": "status"})
    unmeasured["measured"] = False
    by_image = {key: rows for key, rows in _groups(measured)}
    failed_by_image = {key: rows for key, rows in _groups(unmeasured)}
    for key, image_id in sorted(image_ids.items(), key=lambda kv: kv[1]):
        tables = [t for t in (by_image.get(key), failed_by_image.get(key)) if t is not None]
        table = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0].reset_index(drop=True)
        yield image_id, table.assign(image_id=np.int64(image_id))


def _groups(rows: pd.DataFrame) -> Iterator[tuple[tuple[str, int], pd.DataFrame]]:
    """Rows grouped by (obs_id, band), each group in its original order."""
    keys = rows["obs_id"].astype(str), rows["band"].astype(np.int64)
    for (obs_id, band), group in rows.groupby(list(keys), sort=False):
        yield (str(obs_id), int(band)), group
