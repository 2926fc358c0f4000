"""The one executor of request plans: the bytes a plan names, read through the archive's retrying I/O.

`FetchContext` is the I/O one image's fetch (or one staging job) runs with, passed explicitly: the reader,
the counters it fills and the process cache. `read_plan` returns the raw bodies; what they mean is for
`fetch.decode` (regions) or staging (files in a mirror) to say, and `cutout_bodies` is the one place that
tells a cutout that missed the image (HTTP 400) from a failed one.
"""

from __future__ import annotations

from dataclasses import dataclass

from spxbatch.archive import io as archive_io
from spxbatch.archive.io import ArchiveIO, IOStats, MultiRangeUnsupported, ReadError, maybe_gunzip
from spxbatch.fetch.cache import FetchCache
from spxbatch.fetch.options import FetchOptions
from spxbatch.fetch.request_plan import (
    CutoutPlan,
    CutoutRequest,
    MirrorCutoutPlan,
    RangePlan,
    RequestPlan,
    Transport,
    WholePlan,
)
from spxbatch.level2.fitsmap import HEAD_BYTES, FitsMap, header_spans, scan_fits

#: The cutout service's answer for a region that does not overlap the image: nothing there, not an error.
NO_OVERLAP_STATUS = 400
REFUSED_NOTE = "the server refuses multi-range requests: full-width strips instead of boxes"


@dataclass(frozen=True)
class FetchContext:
    """The I/O of one image's fetch: the retrying reader, the request/byte counters, the process cache."""

    io: ArchiveIO
    stats: IOStats
    cache: FetchCache
    #: The width of the process's lane that pixel reads wait in (`FetchOptions.pixel_requests_in_flight`).
    pixel_lane: int | None = None

    @classmethod
    def open(cls, protocol: str, options: FetchOptions, cache: FetchCache,
             stats: IOStats | None = None) -> FetchContext:
        """A context for files reached by `protocol` ('http', 'https', 's3', 'file'), counting into `stats`
        (fresh counters by default)."""
        return cls(ArchiveIO(protocol, options.retry, multirange=options.multirange), stats or IOStats(), cache,
                   options.pixel_requests_in_flight)

    def read_ranges(self, path: str, ranges: list[tuple[int, int]], size: int | None,
                    fallback: bool = True, lane: int | None = None) -> list[bytes]:
        """The bytes of each range of `path` (see `ArchiveIO.read_ranges`), counted in this context."""
        return self.io.read_ranges(path, ranges, self.stats, size, fallback=fallback, lane=lane)

    def transport(self, path: str) -> Transport:
        """How reads of `path` go out, for the planner."""
        multi = self.io.uses_multirange(path)
        return Transport(local=self.io.protocol == "file", multirange=multi,
                         ranges_per_request=archive_io.MAX_RANGES_PER_REQUEST if multi else 1,
                         cutout_service=self.io.protocol in ("http", "https"))


@dataclass(frozen=True)
class Fetched:
    """The raw bodies of an executed plan: per byte range (`RangePlan`), per cutout or file (a ReadError
    for one that failed), or the one whole file; `plan` is the plan actually read (a refused box plan's
    strip fallback) and `notes` what is worth saying about it."""

    plan: RequestPlan
    bodies: tuple[bytes | ReadError, ...]
    notes: tuple[str, ...] = ()
    #: The bytes of the extra spans a range plan was read with (`read_plan`'s `extra`), in order.
    extra: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class CutoutBody:
    """One cutout's outcome: its uncompressed FITS bytes, or why it failed; neither when the region missed
    the image (HTTP 400)."""

    request: CutoutRequest
    data: bytes | None
    error: str | None


def scan_headers(ctx: FetchContext, path: str, size: int | None = None, layout: tuple | None = None) -> FitsMap:
    """The HDU offset table of `path`, from the cache or by a header scan. Its size, when unknown, comes with
    the file's first bytes (over HTTP one GET, no HEAD before it: `ArchiveIO.read_head`).

    `layout` names the kind of file (e.g. release and detector): the spans the first scan of that kind
    needed are remembered in the process cache and read with the next one's head and tail, so the next
    file's headers come in one round trip (verified by the parse: a short hint costs one more round)."""
    fmap = ctx.cache.get_fitsmap(path)
    if fmap is None:
        head = b""
        if size is None:
            head, size = ctx.io.read_head(path, HEAD_BYTES, ctx.stats)
        hint = ctx.cache.header_hints.get(layout, ()) if layout is not None else ()
        fmap = scan_fits(lambda r: ctx.read_ranges(path, list(r), size), size, path, hint, head)
        ctx.cache.put_fitsmap(fmap)
        if layout is not None:
            ctx.cache.header_hints[layout] = header_spans(fmap)
    return fmap


def read_plan(plan: RequestPlan, ctx: FetchContext, extra: tuple[tuple[int, int], ...] = ()) -> Fetched:
    """Read everything `plan` names; a failure that leaves nothing to use raises ReadError. A range plan
    reads the byte spans `extra` of the same file in the same requests (e.g. the PSF HDU beside the pixels,
    one round trip instead of two); other plans carry what they need."""
    if isinstance(plan, RangePlan):
        return _read_ranges(plan, ctx, extra)
    if isinstance(plan, CutoutPlan):
        return Fetched(plan, tuple(ctx.io.read_many([r.url for r in plan.requests], ctx.stats)))
    if isinstance(plan, MirrorCutoutPlan):
        return Fetched(plan, tuple(ctx.io.read_many(list(plan.paths), ctx.stats)))
    if isinstance(plan, WholePlan):
        return Fetched(plan, (ctx.io.read_whole(plan.path, ctx.stats, expected_size=plan.expected_size),))
    raise TypeError(f"not a request plan: {plan!r}")


def _read_ranges(plan: RangePlan, ctx: FetchContext, extra: tuple[tuple[int, int], ...]) -> Fetched:
    """A range plan's bytes and those of the `extra` spans; boxes refused by the server (no multi-range
    requests) are read as its strips."""
    notes = (plan.note,) if plan.note else ()
    try:
        blobs = ctx.read_ranges(plan.path, [*plan.ranges(), *extra], plan.size, fallback=plan.fallback is None,
                                lane=ctx.pixel_lane)
    except MultiRangeUnsupported:
        if plan.fallback is None:
            raise
        refused = _read_ranges(plan.fallback, ctx, extra)
        return Fetched(refused.plan, refused.bodies, (REFUSED_NOTE, *refused.notes), refused.extra)
    n = len(blobs) - len(extra)
    return Fetched(plan, tuple(blobs[:n]), notes, tuple(blobs[n:]))


def cutout_bodies(fetched: Fetched) -> list[CutoutBody]:
    """The outcome of each cutout of an executed `CutoutPlan` (gzipped bodies are decompressed)."""
    out = []
    for request, body in zip(fetched.plan.requests, fetched.bodies, strict=True):
        if isinstance(body, ReadError):
            error = None if body.status == NO_OVERLAP_STATUS else str(body)
            out.append(CutoutBody(request, None, error))
        else:
            out.append(CutoutBody(request, maybe_gunzip(body), None))
    return out
