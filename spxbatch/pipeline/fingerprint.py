"""The fingerprint of a catalog's rows that a run's plan and parts depend on: names, positions and, when the
catalog has them, proper motions and epochs, in catalog order (parts refer to sources by row). A run
directory keeps it beside its config, so a rerun after the catalog changed is refused, never mixed."""

from __future__ import annotations

import hashlib

import numpy as np

from spxbatch.plan.catalog import Catalog

#: The catalog roles whose values a run depends on (proper motions and epoch only when the catalog has them).
ROLES = ("name", "ra", "dec", "pmra", "pmdec", "epoch")


def catalog_fingerprint(catalog: Catalog) -> dict[str, object]:
    """{'sha256': digest of the rows that matter, 'rows': count, 'roles': the roles hashed}."""
    h = hashlib.sha256()
    roles = []
    for role in ROLES:
        values = getattr(catalog, role)
        if values is None:
            continue
        roles.append(role)
        h.update(f"{role}:{len(values)}:".encode())
        h.update(_bytes(np.asarray(values)))
    return {"sha256": h.hexdigest(), "rows": len(catalog), "roles": roles}


def _bytes(values: np.ndarray) -> bytes:
    """Column values as bytes: numbers as little-endian float64, fixed-width text as its UCS-4 code points
    (with the width), anything else as NUL-separated text."""
    if values.dtype.kind in "iuf":
        return values.astype("<f8").tobytes()
    if values.dtype.kind == "U":
        return f"U{values.dtype.itemsize // 4}:".encode() + values.astype(values.dtype.newbyteorder("<")).tobytes()
    return "\0".join(map(str, values)).encode()
