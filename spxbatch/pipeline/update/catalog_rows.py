"""An update's catalog may add rows at its end, never change the rows the cube measured (pure): parts and the
cube refer to sources by row, so a changed row would put old numbers under a new name or position."""

from __future__ import annotations

from typing import Any

import numpy as np

from spxbatch.errors import ConfigError
from spxbatch.pipeline.fingerprint import catalog_fingerprint
from spxbatch.plan.catalog import Catalog


def added_rows(catalog: Catalog, names: np.ndarray, ra: np.ndarray, dec: np.ndarray,
               fingerprint: dict[str, Any] | None) -> int:
    """How many rows `catalog` adds after the cube's sources (`names`, `ra`, `dec`, in order; `fingerprint`: the
    cube's record of its catalog rows, proper motions included, when it has one). ConfigError naming the first
    changed row when the catalog's first rows are not the cube's sources, exactly."""
    n = len(names)
    where = f"catalog {catalog.path or ''}".strip()
    if len(catalog) < n:
        raise ConfigError(f"{where} has {len(catalog)} rows, fewer than the cube's {n} sources: an update can add "
                          "sources at the end of the catalog, not remove them")
    same = ((catalog.name[:n].astype(str) == np.asarray(names, dtype=str))
            & (catalog.ra[:n] == np.asarray(ra, float)) & (catalog.dec[:n] == np.asarray(dec, float)))
    if not same.all():
        i = int(np.flatnonzero(~same)[0])
        raise ConfigError(
            f"{where} row {i + 1} ({catalog.name[i]}, ra {catalog.ra[i]!r}, dec {catalog.dec[i]!r}) differs from the "
            f"cube's source {i + 1} ({names[i]}, ra {float(ra[i])!r}, dec {float(dec[i])!r}): an update only adds "
            "rows after the cube's sources; measure a changed catalog with a new run (another -o)")
    if fingerprint is not None and catalog_fingerprint(_head(catalog, n))["sha256"] != fingerprint.get("sha256"):
        raise ConfigError(f"{where}: the proper motions or epochs of the cube's {n} sources changed since the cube "
                          "was measured; measure a changed catalog with a new run (another -o)")
    return len(catalog) - n


def _head(catalog: Catalog, n: int) -> Catalog:
    """The catalog's first `n` rows, each column as the catalog of those rows alone would hold it."""
    def cut(values: np.ndarray) -> np.ndarray:
        return np.array(values[:n].tolist()) if values.dtype.kind == "U" else values[:n]

    return Catalog(cut(catalog.name), catalog.ra[:n], catalog.dec[:n],
                   {k: cut(v) for k, v in catalog.extra.items()}, catalog.path, dict(catalog.columns))
