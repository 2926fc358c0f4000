"""The time window an update looks at (pure): `--since DATE` or `--time-range MJD_MIN MJD_MAX`, inside the
cube's own time range. Images outside it are not looked at: the cube's rows of them are kept as they are."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from spxbatch.errors import ConfigError

#: MJD 0.
MJD_ZERO = datetime(1858, 11, 17, tzinfo=UTC)
#: The open end of a window given by its start only (MJD 10^6 is the year 4596).
OPEN_END_MJD = 1.0e6


def mjd_of_date(text: str) -> float:
    """The MJD of an ISO 8601 date or date-time ('2026-07-20', '2026-07-20T12:00'; UTC unless it says);
    ConfigError naming --since for anything else."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"--since takes an ISO date such as 2026-07-20 (or a date-time), not {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - MJD_ZERO).total_seconds() / 86400.0


def look_window(configured: Sequence[float] | None, since: str | None,
                time_range: Sequence[float] | None) -> list[float] | None:
    """[mjd_min, mjd_max] to plan (the cube's `configured` range narrowed by `since` or `time_range`), or None
    when neither is given (the whole range is looked at). ConfigError for both at once, a reversed range, or a
    window outside the cube's range."""
    if since is not None and time_range is not None:
        raise ConfigError("give --since or --time-range, not both")
    if since is None and time_range is None:
        return None
    lo, hi = (mjd_of_date(since), OPEN_END_MJD) if since is not None else (float(time_range[0]), float(time_range[1]))
    if lo > hi:
        raise ConfigError(f"--time-range {lo} {hi}: the first MJD must not be after the second")
    if configured:
        lo, hi = max(lo, float(configured[0])), min(hi, float(configured[1]))
        if lo > hi:
            raise ConfigError(f"the window lies outside the cube's time range {list(configured)} (MJD): nothing "
                              "to look at")
    return [lo, hi]
