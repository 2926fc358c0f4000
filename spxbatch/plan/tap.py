"""The TAP client of the plan: ADQL for a sky region, queries run concurrently with retries, results cached.

Queries select the same IRSA columns SPXQuery reads (artifact joined to plane) plus the footprint polygon
and the file size, for every image whose footprint INTERSECTS a circle. Each result is normalised into one
DataFrame layout (`IMAGE_COLUMNS`) shared with the local-mirror index, and cached as Parquet under a key
made from the TAP URL and the exact query text, so a rerun sends nothing.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import requests

from spxbatch.archive.errors import ArchiveUnreachable
from spxbatch.archive.location import relative_to_root
from spxbatch.archive.retry import (
    Decision,
    Failure,
    RetryPolicy,
    call_blocking_with_retries,
    retry_after_seconds,
    retryable_status,
)
from spxbatch.files import atomic_path
from spxbatch.level2.constants import BANDS
from spxbatch.level2.naming import IBE_ROOT, exposure_of_name, parse_did, processing_tag

log = logging.getLogger(__name__)

#: The columns every image table of the plan has before matching (from TAP or the local index).
IMAGE_COLUMNS = ("relpath", "obs_id", "detector", "band_name", "version", "release", "collection",
                 "mjd_start", "mjd_end", "energy_lo_um", "energy_hi_um", "poly_ra", "poly_dec", "size_bytes")

#: What the query selects (IRSA names; `contentlength` is CAOM's artifact size).
SELECT = ("a.uri", "a.contentlength", "p.obs_publisher_did", "p.time_bounds_lower", "p.time_bounds_upper",
          "p.energy_bandpassname", "p.energy_bounds_lower", "p.energy_bounds_upper", "p.poly")
#: Selected columns the plan can do without: a service that rejects one (IRSA's artifact column names are
#: not documented) is asked again without it, and the value is left empty (the fetch layer then asks
#: the file server for the size).
OPTIONAL = ("a.contentlength",)
FROM = "artifact AS a JOIN plane AS p ON a.planeid = p.planeid"

_COLLECTION_RE = re.compile(r"/([^/?]+)\?")
_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


class TapOverflow(RuntimeError):
    """A query hit the service's row limit (MAXREC): the region must be split."""


# ----------------------------------------------------------------------------------------------------------
# ADQL


def _num(x: float) -> str:
    return f"{float(x):.10g}"


def _filters(bands: Sequence[int] | None, time_range: tuple[float, float] | None,
             releases: Sequence[str] | None) -> list[str]:
    where = []
    if bands:
        where.append("p.energy_bandpassname IN (" +
                     ", ".join(f"'{BANDS[b].name}'" for b in sorted(set(bands))) + ")")
    if time_range is not None:
        where.append(f"p.time_bounds_lower <= {_num(time_range[1])}")
        where.append(f"p.time_bounds_upper >= {_num(time_range[0])}")
    if releases:
        where.append("(" + " OR ".join(f"a.uri LIKE '%{IBE_ROOT}/{_quote(r)}/%'"
                                       for r in sorted(set(releases))) + ")")
    return where


def _quote(text: str) -> str:
    return text.replace("'", "''")


def region_query(ra: float, dec: float, radius_deg: float, *, bands: Sequence[int] | None = None,
                 time_range: tuple[float, float] | None = None,
                 releases: Sequence[str] | None = None) -> str:
    """ADQL for every image whose footprint intersects the circle (ra, dec, radius) in degrees."""
    where = [f"INTERSECTS(p.poly, CIRCLE('ICRS', {_num(ra)}, {_num(dec)}, {_num(min(radius_deg, 180.0))}))"
             " = 1", *_filters(bands, time_range, releases)]
    return f"SELECT {', '.join(SELECT)} FROM {FROM} WHERE " + " AND ".join(where)


def point_query(ra: float, dec: float, *, bands: Sequence[int] | None = None,
                time_range: tuple[float, float] | None = None, releases: Sequence[str] | None = None) -> str:
    """ADQL for every image containing one position: SPXQuery's per-source form (used to cross-check)."""
    where = [f"CONTAINS(POINT('ICRS', {_num(ra)}, {_num(dec)}), p.poly) = 1",
             *_filters(bands, time_range, releases)]
    return f"SELECT {', '.join(SELECT)} FROM {FROM} WHERE " + " AND ".join(where)


def check_adql(query: str) -> None:
    """Raise ValueError if `query` does not pass queryparser's ADQL 2.0 grammar.

    Used by the tests on every query form the plan sends; not at run time, where the Python ANTLR parser
    costs ~1 s per query.
    """
    from queryparser.adql import ADQLQueryTranslator

    try:
        ADQLQueryTranslator(query).to_postgresql()
    except Exception as exc:
        raise ValueError(f"not valid ADQL ({exc}): {query}") from exc


# ----------------------------------------------------------------------------------------------------------
# Results -> the plan's image columns


def parse_polygon(value) -> tuple[list[float], list[float]]:
    """(ra list, dec list) in degrees from a DALI polygon array [ra1, dec1, ...] or polygon text
    ('POLYGON ICRS ra dec ...', pgSphere '{(ra d, dec d), ...}' in degrees)."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        nums = [float(x) for x in _NUMBER_RE.findall(value)]
    else:
        nums = np.ma.filled(np.ma.asarray(value, dtype=float), np.nan).ravel().tolist()
    if len(nums) < 6 or len(nums) % 2 or not np.all(np.isfinite(nums)):
        raise ValueError(f"cannot read a footprint polygon from {value!r}")
    return [x % 360.0 for x in nums[0::2]], nums[1::2]


def path_parts(relpath: str) -> tuple[str, str]:
    """(release, version) from a relative path 'ibe/data/spherex/qr2/level2/<pp>/l2b-v20-.../...'."""
    rel = relative_to_root(relpath)
    return rel.split("/", 1)[0], processing_tag(rel)


def _exposure(did: str, relpath: str) -> tuple[str, int]:
    """(obs_id, detector) from the publisher DID, else from the file name (the DID format is uncertain)."""
    try:
        return parse_did(did)
    except ValueError:
        exposure = exposure_of_name(relpath)
        if exposure is None:
            raise ValueError(f"neither the DID {did!r} nor the path {relpath!r} names a SPHEREx exposure") from None
        return exposure


def normalise_tap(table) -> pd.DataFrame:
    """The plan's image columns from a TAP result (astropy Table of the `SELECT` columns)."""
    df = {name: table[name] for name in table.colnames}
    uri = [(u.decode() if isinstance(u, bytes) else str(u)) for u in df["uri"]]
    relpath = [f"{IBE_ROOT}/{relative_to_root(u)}" for u in uri]
    did = [(d.decode() if isinstance(d, bytes) else str(d)) for d in df["obs_publisher_did"]]
    parsed = [_exposure(d, r) for d, r in zip(did, relpath, strict=True)]
    polys = [parse_polygon(v) for v in df["poly"]]
    parts = [path_parts(r) for r in relpath]
    band = [str(b.decode() if isinstance(b, bytes) else b).split("-")[-1] for b in df["energy_bandpassname"]]
    size = _floats(df["contentlength"]) if "contentlength" in df else np.full(len(uri), np.nan)
    out = pd.DataFrame({
        "relpath": relpath,
        "obs_id": [p[0] for p in parsed],
        "detector": np.array([p[1] for p in parsed], dtype=np.int64),
        "band_name": band,
        "version": [p[1] for p in parts],
        "release": [p[0] for p in parts],
        "collection": [(m[1] if (m := _COLLECTION_RE.search(d)) else "") for d in did],
        "mjd_start": _floats(df["time_bounds_lower"]),
        "mjd_end": _floats(df["time_bounds_upper"]),
        "energy_lo_um": _floats(df["energy_bounds_lower"]) * 1e6,
        "energy_hi_um": _floats(df["energy_bounds_upper"]) * 1e6,
        "poly_ra": [p[0] for p in polys],
        "poly_dec": [p[1] for p in polys],
        "size_bytes": pd.array(size, dtype="Int64"),
    })
    return out[list(IMAGE_COLUMNS)]


def _floats(column) -> np.ndarray:
    """Float64 values of a (possibly masked) table column, NaN where masked."""
    values = np.asarray(getattr(column, "data", column), dtype=float)
    mask = np.ma.getmaskarray(column) if np.ma.isMaskedArray(column) else np.zeros(len(values), bool)
    return np.where(mask, np.nan, values)


def read_images(path: str | Path) -> pd.DataFrame:
    """An image table saved as Parquet, with the footprint corners as lists again."""
    df = pd.read_parquet(path)
    for col in ("poly_ra", "poly_dec"):
        if col in df.columns:  # (a synthetic plan, e.g. a benchmark's, may have no footprints)
            df[col] = [list(v) for v in df[col]]
    return df


def empty_images() -> pd.DataFrame:
    """An image table with the plan's columns and no rows."""
    return pd.DataFrame({c: pd.Series(dtype="Int64" if c == "size_bytes" else object) for c in IMAGE_COLUMNS})


# ----------------------------------------------------------------------------------------------------------
# Running queries


class _TimeoutSession(requests.Session):
    """A requests session with a default timeout, so a stalled TAP service cannot hang the plan, that raises
    `requests.HTTPError` for a transient status (5xx, 429, ...): a TAP service answers those with an error
    document, which pyvo would read as a refused query (DALQueryError, the status lost) and so never retry."""

    def __init__(self, timeout_s: float):
        super().__init__()
        self._timeout_s = timeout_s

    def request(self, *args, **kwargs):
        kwargs.setdefault("timeout", self._timeout_s)
        response = super().request(*args, **kwargs)
        if retryable_status(response.status_code):
            response.raise_for_status()
        return response


class TapClient:
    """Runs ADQL queries against one TAP service: sync or async (UWS), retried under a RetryPolicy, cached."""

    def __init__(self, url: str, *, cache_dir: str | Path | None = None, mode: str = "sync",
                 retry: RetryPolicy | None = None, maxrec: int | None = None):
        import pyvo

        if mode not in ("sync", "async"):
            raise ValueError(f"TAP mode must be 'sync' or 'async', not {mode!r}")
        self.url, self.mode, self.maxrec = url.rstrip("/"), mode, maxrec
        #: Attempts, backoff and the timeout of one request (a stalled service cannot hang the plan).
        self.retry = retry or RetryPolicy()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.service = pyvo.dal.TAPService(self.url, session=_TimeoutSession(self.retry.attempt_timeout_s))
        #: Queries actually sent (cache hits excluded) and attempts that failed, for the record.
        self.sent = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._rng = random.Random()

    def cache_path(self, query: str) -> Path | None:
        """Where the result of `query` is cached (None without a cache directory)."""
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(f"{self.url}\n{query}".encode()).hexdigest()[:24]
        return self.cache_dir / f"{key}.parquet"

    def query(self, query: str) -> pd.DataFrame:
        """The normalised image rows of one query, from the cache or the service."""
        path = self.cache_path(query)
        if path is not None and path.exists():
            return read_images(path)
        df = normalise_tap(self._run(query))
        if path is not None:
            with atomic_path(path) as tmp:
                df.to_parquet(tmp, index=False)
        return df

    def query_many(self, queries: Sequence[str], *, max_concurrency: int = 4) -> list[pd.DataFrame | Exception]:
        """Run queries concurrently; each slot holds the DataFrame or the exception that query ended with."""
        done = [0]
        step = max(10, len(queries) // 10)

        def one(i: int) -> pd.DataFrame | Exception:
            try:
                return self.query(queries[i])
            except Exception as exc:  # returned, so the caller can split overflowing regions
                return exc
            finally:
                with self._lock:
                    done[0] += 1
                    if done[0] % step == 0:
                        log.info("TAP queries: %d of %d done", done[0], len(queries))

        if len(queries) <= 1 or max_concurrency <= 1:
            return [one(i) for i in range(len(queries))]
        with ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="tap") as pool:
            return list(pool.map(one, range(len(queries))))

    def _run(self, query: str):
        """The result table of one query, retried under the policy; ArchiveUnreachable when it keeps failing."""
        from pyvo.dal.exceptions import DALQueryError

        sent = [query]  # the query as last sent: a rejected optional column stays dropped on later attempts

        def attempt():
            while True:
                try:
                    return self._request(sent[0])
                except DALQueryError as exc:  # the service understood the request and refused the query
                    column = next((c for c in OPTIONAL if c in sent[0] and c.split(".")[-1] in str(exc).lower()),
                                  None)
                    if column is None:
                        raise
                    log.warning("the TAP service rejected %s (%s): querying without it", column, exc)
                    sent[0] = sent[0].replace(f"{column}, ", "")

        def failed(failure: Failure, decision: Decision, attempt: int) -> None:
            self.failures.append(failure.reason)
            if decision.retry:
                log.warning("TAP query failed (%s); retry %d/%d in %.1f s", failure.reason, attempt,
                            self.retry.max_attempts - 1, decision.wait_s)

        def give_up(failure: Failure, attempts: int, reason: str) -> Exception:
            return ArchiveUnreachable(f"TAP query to {self.url} failed after {attempts} attempt(s): {reason}; "
                                      "nothing was planned: rerun the same command once the service answers")

        return call_blocking_with_retries(attempt, self.retry, self._classify, give_up, rng=self._rng,
                                          on_failure=failed)

    def _request(self, query: str):
        """One request to the service: the result as an astropy Table; TapOverflow at the row limit."""
        from pyvo.dal.exceptions import DALOverflowWarning, DALQueryError

        with self._lock:
            self.sent += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DALOverflowWarning)
                run = self.service.run_async if self.mode == "async" else self.service.run_sync
                result = run(query, maxrec=self.maxrec)
        except DALQueryError as exc:
            if "overflow" in str(exc).lower():
                raise TapOverflow(str(exc)) from exc
            raise
        if str(result.status[0]).lower() == "overflow":
            raise TapOverflow(f"{self.url}: the query returned the row limit ({len(result)} rows)")
        return result.to_table()

    def _classify(self, exc: Exception) -> Failure | None:
        """A failed attempt for the retry policy; None for TapOverflow (the caller splits the region)."""
        from pyvo.dal.exceptions import DALFormatError, DALQueryError, DALServiceError

        if isinstance(exc, DALFormatError) and isinstance(exc.cause, requests.HTTPError):
            exc = exc.cause  # pyvo wraps what the session raised for a transient status
        if isinstance(exc, DALQueryError):  # a refused query is final, except a UWS job that may succeed again
            return Failure(self.mode == "async", f"query error: {exc}")
        if isinstance(exc, DALServiceError):
            code = exc.code or 0
            response = getattr(exc.cause, "response", None)
            wait = retry_after_seconds(response.headers.get("Retry-After")) if response is not None else None
            return Failure(code == 0 or retryable_status(code), f"HTTP {code}: {exc}" if code else f"{exc}",
                           code or None, wait)
        if isinstance(exc, requests.HTTPError) and exc.response is not None:  # a transient status (the session)
            code, headers = exc.response.status_code, exc.response.headers
            return Failure(True, f"HTTP {code}: {exc}", code, retry_after_seconds(headers.get("Retry-After")))
        if isinstance(exc, DALFormatError | requests.RequestException | OSError):
            return Failure(True, f"{type(exc).__name__}: {exc}")
        return None
