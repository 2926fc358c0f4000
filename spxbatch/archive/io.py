"""Retrying byte access to the archive through fsspec: HTTP(S) (aiohttp), anonymous S3 (s3fs), local files.

Every remote byte the fetch layer reads goes through `ArchiveIO.read_ranges` / `read_whole` / `read_many`:
concurrent requests on fsspec's event loop and aiohttp session (over HTTP, the ranges of one call packed
into multi-range requests when the server takes them), each retried under the run's `RetryPolicy`
(`archive/retry.py`: backoff with jitter, Retry-After honoured, bounded attempts) on 5xx/429, connection
errors, timeouts, stalls and truncated bodies. A read that still fails raises `ReadError` (URL, status,
attempts), which the fetch entry point turns into a recorded error; `IOStats` counts the requests made and
the bytes received.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import random
import re
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import fsspec
from fsspec.asyn import sync

from spxbatch.archive.retry import (
    Decision,
    Failure,
    RetryPolicy,
    call_with_retries,
    retry_after_seconds,
    retryable_status,
)


@dataclass
class IOStats:
    """Requests made (every attempt counts) and bytes received in successful responses."""

    requests: int = 0
    bytes_read: int = 0
    retries: int = 0
    #: (url, reason) of every failed attempt, for the record.
    failures: list[tuple[str, str]] = field(default_factory=list)


class ReadError(OSError):
    """A read that failed for good: the URL, the last HTTP status (or None), the attempts made, why."""

    def __init__(self, url: str, status: int | None, attempts: int, reason: str):
        self.url, self.status, self.attempts, self.reason = url, status, attempts, reason
        super().__init__(f"{url}: {reason} (status {status}, {attempts} attempt(s))")

    def __reduce__(self):
        return ReadError, (self.url, self.status, self.attempts, self.reason)


class TruncatedBody(OSError):
    """A response body shorter (or longer) than the byte count it promised."""


def _classify(exc: Exception) -> Failure | None:
    """A failed attempt classified for the retry policy (None: not a failed request, re-raised as is)."""
    if isinstance(exc, MultiRangeUnsupported):
        return None
    if isinstance(exc, aiohttp.ClientResponseError):
        retry_after = retry_after_seconds((exc.headers or {}).get("Retry-After"))
        return Failure(retryable_status(exc.status), f"HTTP {exc.status} {exc.message}".strip(), exc.status,
                       retry_after)
    if isinstance(exc, FileNotFoundError) and isinstance(exc.__cause__, Exception):
        # fsspec's HTTP size probe turns any failed HEAD-then-GET (a 503, a stall) into FileNotFoundError,
        # chaining what really happened: classify that, so a transient failure is not taken for a 404
        return _classify(exc.__cause__)
    if isinstance(exc, FileNotFoundError | PermissionError):
        return Failure(False, type(exc).__name__, 404 if isinstance(exc, FileNotFoundError) else 403)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return Failure(True, "timeout (stalled or slow transfer)")
    if isinstance(exc, aiohttp.ClientError | TruncatedBody | OSError):
        return Failure(True, f"{type(exc).__name__}: {exc}")
    return Failure(False, f"{type(exc).__name__}: {exc}")


def maybe_gunzip(data: bytes) -> bytes:
    """The bytes, decompressed when they are a gzip stream (IRSA cutouts are gzipped by default)."""
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


_FILESYSTEMS: dict[tuple, fsspec.AbstractFileSystem] = {}


def filesystem(protocol: str, policy: RetryPolicy) -> fsspec.AbstractFileSystem:
    """The process-wide fsspec filesystem for a protocol ('http'/'https', 's3', 'file')."""
    key = (protocol, policy.stall_timeout_s)
    fs = _FILESYSTEMS.get(key)
    if fs is None:
        if protocol in ("http", "https"):
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=policy.stall_timeout_s,
                                            sock_read=policy.stall_timeout_s)
            # skip_instance_cache: our own per-process cache, and a ClientTimeout is not tokenizable.
            fs = fsspec.filesystem("http", client_kwargs={"timeout": timeout}, skip_instance_cache=True)
        elif protocol == "s3":
            # Anonymous access to the AWS mirror; s3fs's own retries stay on beneath ours.
            fs = fsspec.filesystem("s3", anon=True)
        else:
            fs = fsspec.filesystem("file")
        _FILESYSTEMS[key] = fs
    return fs


class MultiRangeUnsupported(Exception):
    """The server answered a multi-range request with the whole object (it ignores such requests)."""


#: Ranges per multi-range request: under Apache's default MaxRanges (200, above which it sends the whole
#: file). 128 rather than 64 halves the requests of a box read (a 100-source image: 224 -> 112), and with
#: them the latency a link of ~1 MB bandwidth-delay product spends between them (link_speed: 8.5 -> 7.3-8 s).
MAX_RANGES_PER_REQUEST = 128
#: Hosts seen to ignore multi-range requests (per process): they get one request per range.
_NO_MULTIRANGE: set[str] = set()
#: A Content-Range header: first and last byte, and the total size ('bytes 0-46079/5299200'; '*' when the
#: server does not say).
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)


def parse_byteranges(body: bytes, content_type: str) -> list[tuple[int, bytes]]:
    """(start, bytes) of each part of a multipart/byteranges body, read by its Content-Range length."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise TruncatedBody(f"multipart response without a boundary: {content_type!r}")
    delim = b"--" + m.group(1).encode("latin-1")
    parts: list[tuple[int, bytes]] = []
    pos = body.find(delim)
    while pos >= 0:
        pos += len(delim)
        if body[pos:pos + 2] == b"--":
            return parts
        head_end = body.find(b"\r\n\r\n", pos)
        cr = _CONTENT_RANGE_RE.search(body[pos:head_end].decode("latin-1")) if head_end > 0 else None
        if cr is None:
            raise TruncatedBody("multipart part without Content-Range")
        start, length = int(cr.group(1)), int(cr.group(2)) - int(cr.group(1)) + 1
        data = body[head_end + 4:head_end + 4 + length]
        if len(data) != length:
            raise TruncatedBody(f"multipart part at {start}: {len(data)} of {length} bytes")
        parts.append((start, data))
        pos = body.find(delim, head_end + 4 + length)
    raise TruncatedBody("multipart body without its closing boundary")


def _slice_parts(parts: list[tuple[int, bytes]], ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    """Each wanted range cut from the part that covers it (servers may coalesce ranges)."""
    out = []
    for s, e in ranges:
        part = next(((p0, d) for p0, d in parts if p0 <= s and e <= p0 + len(d)), None)
        if part is None:
            raise TruncatedBody(f"bytes {s}-{e - 1} missing from the multi-range response")
        out.append(part[1][s - part[0]:e - part[0]])
    return out


#: The process's request lanes (`_lane`), by event loop (weakly: a loop gone, e.g. in a forked child, takes
#: its lanes with it) and width.
_LANES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, asyncio.Semaphore]] = \
    weakref.WeakKeyDictionary()


def _lane(width: int) -> asyncio.Semaphore:
    """This process's lane of `width` requests in flight on the running loop: its waiters go in the order
    they came (asyncio wakes them first in, first out), so the requests of one call all go before a later
    call's, while the lane stays full."""
    lanes = _LANES.setdefault(asyncio.get_running_loop(), {})
    if width not in lanes:
        lanes[width] = asyncio.Semaphore(width)
    return lanes[width]


class ArchiveIO:
    """Retrying range and whole-object reads on one fsspec filesystem; picklable (the fs is per process).

    Over HTTP, `multirange` packs the ranges of one call into few multi-range requests (multipart/byteranges);
    a server that answers those with the whole object is remembered and sent one request per range instead.
    """

    def __init__(self, protocol: str, policy: RetryPolicy | None = None, seed: int | None = None,
                 multirange: bool = True):
        self.protocol = protocol
        self.policy = policy or RetryPolicy()
        self.multirange = multirange
        self._rng = random.Random(seed)

    def __getstate__(self):
        return {"protocol": self.protocol, "policy": self.policy, "multirange": self.multirange}

    def __setstate__(self, state):
        self.__init__(state["protocol"], state["policy"], multirange=state["multirange"])

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return filesystem(self.protocol, self.policy)

    @property
    def is_async(self) -> bool:
        return bool(getattr(self.fs, "async_impl", False))

    def uses_multirange(self, path: str) -> bool:
        """Whether ranges of `path` go out as multi-range requests (HTTP, enabled, not refused by the host)."""
        return self.multirange and self.protocol in ("http", "https") and _host(path) not in _NO_MULTIRANGE

    def read_ranges(
        self, path: str, ranges: Sequence[tuple[int, int]], stats: IOStats, size: int | None = None,
        fallback: bool = True, lane: int | None = None,
    ) -> list[bytes]:
        """The bytes [start, end) of each range (clipped to `size` when known), fetched concurrently.

        `fallback=False`: when the server refuses multi-range requests, raise MultiRangeUnsupported rather
        than sending one request per range. `lane`: the requests wait their turn in this process's lane of
        that many requests in flight (`_lane`), behind those of earlier calls, instead of this call's own
        `concurrency`.
        """
        ranges = [(s, min(e, size) if size is not None else e) for s, e in ranges]
        if not self.is_async:
            return [self._read_local(path, s, e, stats) for s, e in ranges]
        return sync(self.fs.loop, self._gather, path, ranges, stats, fallback, lane)

    def read_whole(self, path: str, stats: IOStats, expected_size: int | None = None) -> bytes:
        """The whole object in one request (retried), checked against `expected_size` when known."""
        if not self.is_async:
            with open(path, "rb") as f:
                data = f.read()
            stats.requests += 1
            stats.bytes_read += len(data)
            return data
        return sync(self.fs.loop, self._retrying, path, lambda: self._get(path, None, None, expected_size), stats)

    def read_many(self, paths: Sequence[str], stats: IOStats) -> list[bytes | ReadError]:
        """Whole objects (e.g. cutouts) fetched concurrently; a failed one is returned as its ReadError."""
        if not self.is_async:
            out: list[bytes | ReadError] = []
            for p in paths:
                try:
                    out.append(self.read_whole(p, stats))
                except OSError as exc:
                    out.append(ReadError(p, None, 1, str(exc)))
            return out
        return sync(self.fs.loop, self._gather_whole, list(paths), stats)

    def size(self, path: str, stats: IOStats) -> int:
        """The object's size in bytes (a HEAD request for HTTP), retried like a read."""
        if not self.is_async:
            stats.requests += 1
            return os.path.getsize(path)

        async def info():
            return await self.fs._info(path), 0

        result = sync(self.fs.loop, self._retrying, path, info, stats)
        if result.get("size") is None:
            raise ReadError(path, None, 1, "the server does not report the size")
        return int(result["size"])

    def read_head(self, path: str, nbytes: int, stats: IOStats) -> tuple[bytes, int]:
        """The object's first `nbytes` (fewer if it is shorter) and its size. Over HTTP one ranged GET, the
        size from its Content-Range (no HEAD round trip before it); elsewhere the size alone (a stat, an S3
        HEAD) and no bytes, which the caller reads with its next ranges."""
        if self.protocol not in ("http", "https"):
            return b"", self.size(path, stats)

        async def get() -> tuple[tuple[bytes, int | None], int]:
            session = await self.fs.set_session()
            headers = {"Range": f"bytes=0-{nbytes - 1}"}
            async with session.get(self.fs.encode_url(path), headers=headers, **self.fs.kwargs) as r:
                self.fs._raise_not_found_for_status(r, path)
                body = await r.read()
                m = _CONTENT_RANGE_RE.search(r.headers.get("Content-Range", ""))
            # 200: the server ignored Range and sent the whole object (rare: those servers cost bytes anyway)
            total = len(body) if r.status == 200 else int(m[3]) if m and m[3] != "*" else None
            return (body[:nbytes], total), len(body)

        head, total = sync(self.fs.loop, self._retrying, path, get, stats)
        return head, total if total is not None else self.size(path, stats)

    def list_folder(self, path: str, stats: IOStats) -> list[str]:
        """The names of a folder's entries (an HTTP index page, an S3 prefix, a local directory), retried
        like a read; a folder that is not there raises ReadError with status 404 (FileNotFoundError locally)."""
        if not self.is_async:
            stats.requests += 1
            return sorted(os.listdir(path))

        async def ls():
            return await self.fs._ls(path.rstrip("/") + "/", detail=False), 0

        entries = sync(self.fs.loop, self._retrying, path, ls, stats)
        return sorted({str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries})

    def _read_local(self, path: str, start: int, end: int, stats: IOStats) -> bytes:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
        stats.requests += 1
        stats.bytes_read += len(data)
        return data

    async def _gather_whole(self, paths: list[str], stats: IOStats) -> list[bytes | ReadError]:
        sem = asyncio.Semaphore(max(1, self.policy.concurrency))

        async def one(path: str) -> bytes | ReadError:
            async with sem:
                try:
                    return await self._retrying(path, lambda: self._get(path, None, None, None), stats)
                except ReadError as exc:
                    return exc

        return await asyncio.gather(*(one(p) for p in paths))

    async def _gather(self, path: str, ranges: list[tuple[int, int]], stats: IOStats,
                      fallback: bool = True, lane: int | None = None) -> list[bytes]:
        """Fetch ranges concurrently: in multi-range batches when the server takes them, else one by one."""
        sem = _lane(lane) if lane else asyncio.Semaphore(max(1, self.policy.concurrency))
        if self.uses_multirange(path) and len(ranges) > 1:
            batches = [ranges[i:i + MAX_RANGES_PER_REQUEST] for i in range(0, len(ranges), MAX_RANGES_PER_REQUEST)]

            async def batch(rs: list[tuple[int, int]]) -> list[bytes]:
                async with sem:
                    return await self._retrying(path, lambda: self._get_multi(path, rs), stats)

            try:
                results = await asyncio.gather(*(batch(b) for b in batches))
                return [data for part in results for data in part]
            except MultiRangeUnsupported:
                _NO_MULTIRANGE.add(_host(path))
                if not fallback:
                    raise

        async def one(start: int, end: int) -> bytes:
            async with sem:
                return await self._retrying(path, lambda: self._get(path, start, end, end - start), stats)

        return list(await asyncio.gather(*(one(s, e) for s, e in ranges)))

    async def _get(self, path: str, start: int | None, end: int | None, expected: int | None) -> tuple[bytes, int]:
        """One GET (of a range, or the whole object); the body checked against the expected length."""
        data = await self.fs._cat_file(path, start=start, end=end)
        received = len(data)
        if start is not None and end is not None and expected is not None and received > expected and received >= end:
            data = data[start:end]  # the server ignored Range and sent the whole object
        if expected is not None and len(data) != expected:
            raise TruncatedBody(f"received {received} of {expected} bytes")
        return data, received

    async def _get_multi(self, path: str, ranges: list[tuple[int, int]]) -> tuple[list[bytes], int]:
        """One multi-range GET on fsspec's aiohttp session, cut back into the ranges asked for."""
        session = await self.fs.set_session()
        headers = {"Range": "bytes=" + ",".join(f"{s}-{e - 1}" for s, e in ranges)}
        async with session.get(self.fs.encode_url(path), headers=headers, **self.fs.kwargs) as r:
            if r.status == 200:
                raise MultiRangeUnsupported(path)  # leave without reading the whole object
            self.fs._raise_not_found_for_status(r, path)
            body = await r.read()
            ctype = r.headers.get("Content-Type", "")
            content_range = r.headers.get("Content-Range", "")
        if ctype.startswith("multipart/byteranges"):
            parts = parse_byteranges(body, ctype)
        else:  # one part: the server coalesced the ranges
            m = _CONTENT_RANGE_RE.search(content_range)
            if m is None:
                raise TruncatedBody(f"206 without Content-Range for {len(ranges)} ranges")
            parts = [(int(m.group(1)), body)]
        return _slice_parts(parts, ranges), len(body)

    async def _retrying(self, path: str, op: Callable[[], Awaitable[tuple[Any, int]]], stats: IOStats) -> Any:
        """Run one request `op` (returning its result and the bytes received) under the retry policy, every
        attempt and failure counted in `stats`; a request that fails for good raises ReadError."""
        async def counted() -> Any:
            result, received = await op()
            stats.bytes_read += received
            return result

        def attempted() -> None:
            stats.requests += 1

        def failed(failure: Failure, decision: Decision, attempt: int) -> None:
            stats.failures.append((path, failure.reason))
            stats.retries += decision.retry

        return await call_with_retries(
            counted, self.policy, _classify, lambda failure, attempts, reason: ReadError(
                path, failure.status, attempts, reason), rng=self._rng, on_attempt=attempted, on_failure=failed)


def _host(path: str) -> str:
    """scheme://host:port of a URL (the unit multi-range support is remembered by)."""
    parts = urlsplit(path)
    return f"{parts.scheme}://{parts.netloc}"
