"""Fetch entry point: the pixels one image's sources need, by the cheapest strategy, never raising.

One image's trip, in the order `fetch_image` takes it:
1. the target: where the image's bytes are and what it is, from its plan row (`fetch.target`);
2. the request plan: what to read (`fetch.request_plan`): range reads of the pixel planes (full-width row
   strips, or only the sources' boxes when the server takes multi-range requests), IRSA cutouts or the
   whole file, chosen by the cost model (`fetch.cost`) after a header scan, or the cutouts a staged mirror
   holds; a local file is read in place;
3. the bytes, read by the one executor (`fetch.execute`) over the archive's retrying I/O (range reads take
   the PSF HDU along in the same requests when it must be read);
4. the regions, decoded from the bytes through `level2` with the PSF and wavelength tables from the
   process cache (`fetch.decode`, `fetch.tables`), then the calibration pixels (`fetch.calibration`: over
   the network, read while the pixels are on the way, once the header scan has placed the sources).

The `FetchResult` holds the `ImageRegion`s with the source indices each serves, the bytes and requests it
cost, the notes of fallbacks taken, and, on a persistent failure, the error (URL, status, attempts)
instead of an exception, so one bad image never kills a batch.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from spxbatch.archive.io import ReadError
from spxbatch.fetch.cache import FetchCache, process_cache
from spxbatch.fetch.calibration import Samples, attach_calibration, locate_calibration, sample_calibration
from spxbatch.fetch.decode import decode
from spxbatch.fetch.execute import FetchContext, read_plan, scan_headers
from spxbatch.fetch.options import STRATEGIES, FetchOptions
from spxbatch.fetch.request_plan import (
    MirrorCutoutPlan,
    RangePlan,
    RequestPlan,
    WholePlan,
    plan_cutouts,
    plan_image,
)
from spxbatch.fetch.tables import ImageTables
from spxbatch.fetch.target import ImageTarget
from spxbatch.level2.fitsmap import FitsMap, FitsStructureError
from spxbatch.level2.layout import check_fitsmap
from spxbatch.level2.region import ImageRegion

__all__ = ["STRATEGIES", "FetchOptions", "FetchResult", "fetch_image"]


@dataclass(frozen=True)
class FetchResult:
    """What one image gave: regions and the source indices each serves, cost, and any recorded error."""

    regions: list[tuple[ImageRegion, np.ndarray]]
    strategy: str
    bytes_read: int
    requests: int
    error: str | None = None
    #: Sources (indices into the ra/dec given) no region serves: off the image, or lost to an error.
    missing: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    #: Retries made, the cost model's estimates (strategy -> seconds), fallbacks taken, wall time.
    retries: int = 0
    estimates: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class _Planned:
    """A request plan with what reading it needs: the scanned file (range reads) and the parent frame's
    (ny, nx) cutouts are placed in; and the cost model's estimates."""

    plan: RequestPlan
    fmap: FitsMap | None
    parent_shape: tuple[int, int]
    estimates: dict[str, float]
    #: The PSF bytes a range plan reads beside its pixels (`ImageTables.psf_spans`).
    psf_spans: tuple[tuple[int, int], ...] = ()


def fetch_image(
    image: Mapping,
    ra: np.ndarray,
    dec: np.ndarray,
    *,
    strategy: str = "auto",
    halfsize: int,
    cache: FetchCache | None = None,
    options: FetchOptions | None = None,
) -> FetchResult:
    """Fetch the pixels that `halfsize`-neighbourhoods of the sources (ra, dec in deg) need from one image.

    `strategy`: 'auto' (cost model), 'range', 'cutout', 'whole'; a local file is always read in place
    ('local'). Errors are recorded in the result, never raised (bad arguments excepted).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
    options = options or FetchOptions()
    ra = np.atleast_1d(np.asarray(ra, dtype=float))
    dec = np.atleast_1d(np.asarray(dec, dtype=float))
    target = ImageTarget.from_row(image, options)
    strategy, notes = _strategy_for(target, strategy)
    if ra.size == 0:
        return FetchResult([], strategy, 0, 0)
    ctx = FetchContext.open(target.protocol, options, cache if cache is not None else process_cache())
    tables = ImageTables(ctx, target, options.psf_source)
    t0 = time.monotonic()
    estimates: dict[str, float] = {}
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="spxbatch-calibration") as beside:
            if options.calibration and target.protocol != "file":  # its round trips beside the header scan
                beside.submit(locate_calibration, ctx, target)
            planned = _request_plan(target, ctx, tables, strategy, ra, dec, halfsize, options)
            estimates = planned.estimates
            samples = _sample_beside(beside, ctx, target, planned, ra, dec, options)
            psf_spans = planned.psf_spans if isinstance(planned.plan, RangePlan) else ()
            fetched = read_plan(planned.plan, ctx, psf_spans)
            tables.add_prefetched(planned.fmap, psf_spans, fetched.extra)
            decoded = decode(fetched, planned.fmap, tables, ra, dec, halfsize, planned.parent_shape)
            notes += [*fetched.notes, *decoded.notes]
            regions, missing = decoded.regions, decoded.missing
            if options.calibration and regions:
                regions, calibration_notes = attach_calibration(
                    ctx, target, regions, ra, dec, options, samples.result() if samples is not None else None)
                notes += calibration_notes
            strategy, error = fetched.plan.strategy, "; ".join(decoded.errors) or None
    except (ReadError, FitsStructureError) as exc:
        regions, missing, error = [], np.arange(ra.size), str(exc)
    return FetchResult(
        regions=regions,
        strategy=strategy,
        bytes_read=ctx.stats.bytes_read,
        requests=ctx.stats.requests,
        error=error,
        missing=np.asarray(missing, dtype=np.int64),
        retries=ctx.stats.retries,
        estimates=estimates,
        notes=list(dict.fromkeys(notes)),
        elapsed_s=time.monotonic() - t0,
    )


def _sample_beside(pool: ThreadPoolExecutor, ctx: FetchContext, target: ImageTarget, planned: _Planned,
                   ra: np.ndarray, dec: np.ndarray, options: FetchOptions) -> Future[Samples] | None:
    """The calibration samples of a range read over the network, read in `pool` while the pixels are on the
    way (the header scan placed the sources; a failure surfaces at `result()`); None otherwise: a cutout
    brings its header with its pixels, and a local file has no latency to hide."""
    if not options.calibration or planned.fmap is None or target.protocol == "file":
        return None
    image = planned.fmap["IMAGE"]
    return pool.submit(sample_calibration, ctx, target, image.header, image.shape, ra, dec, options)


def _strategy_for(target: ImageTarget, strategy: str) -> tuple[str, list[str]]:
    """The strategy this target allows (a local file is read in place; S3 has no cutout service), and a
    note when it is not the one asked for."""
    if target.protocol == "file":
        return "local", []
    if strategy == "cutout" and target.protocol == "s3":
        return "range", ["no cutout service on S3: range reads instead"]
    return strategy, []


def _request_plan(target: ImageTarget, ctx: FetchContext, tables: ImageTables, strategy: str, ra: np.ndarray,
                  dec: np.ndarray, halfsize: int, options: FetchOptions) -> _Planned:
    """The plan for the target: a staged mirror's cutouts, one whole GET, cutouts, or (after a header scan,
    or from the scan cached) range reads or whichever strategy the cost model picks for 'auto'."""
    if target.mirror_cutouts:
        return _Planned(MirrorCutoutPlan(target.mirror_cutouts), None, target.parent_shape, {})
    if strategy == "whole":
        return _Planned(WholePlan(target.path, target.size), None, target.parent_shape, {})
    if strategy == "cutout":
        known = ctx.cache.get_fitsmap(target.path)
        shape = known["IMAGE"].shape if known else target.parent_shape
        plan = plan_cutouts(target.path, ra, dec, halfsize, options, options.cutout_gzip)
        return _Planned(plan, None, shape, {})
    fmap = scan_headers(ctx, target.path, target.size, target.layout_key)
    check_fitsmap(fmap)
    psf_spans = tables.psf_spans(fmap, ra, dec)
    plan, estimates = plan_image(fmap, ra, dec, halfsize, strategy, options, ctx.transport(target.path),
                                 psf_spans, target.size)
    return _Planned(plan, fmap, fmap["IMAGE"].shape, estimates, psf_spans)
