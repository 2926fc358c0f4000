"""Archive paths and dates derived from IRSA's naming (no clock: the same archive gives the same bytes)."""

from __future__ import annotations

from datetime import datetime, timedelta

from spxbatch.level2.naming import IBE_ROOT


def strip_ibe(relpath: str) -> str:
    """An IRSA relative path without its leading 'ibe/data/spherex/' (the path below the archive root)."""
    prefix = IBE_ROOT + "/"
    return relpath[len(prefix) :] if relpath.startswith(prefix) else relpath


def processing_date(version_tag: str) -> str:
    """ISO date of a processing tag ending in year and day of year, e.g. 'l2b-v20-2025-253' -> 2025-09-10."""
    year, doy = (int(p) for p in version_tag.split("-")[-2:])
    return (datetime(year, 1, 1, 12) + timedelta(days=doy - 1)).strftime("%Y-%m-%dT%H:%M:%S")
