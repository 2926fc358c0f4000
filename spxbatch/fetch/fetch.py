"""Fetch entry point: the pixels one image's sources need, by the cheapest strategy, never raising.

`fetch_image` takes a plan images row and the sources on it, decides (cost model) between range reads
(full-width row strips, or only the sources' boxes when the server takes multi-range requests), IRSA
cutouts and the whole file, or reads a local mirror in place (whole files, or the cutouts `spxbatch stage`
wrote), and returns a `FetchResult`: the `ImageRegion`s with the source indices each serves, the bytes and
requests it cost, and, on a persistent failure, the error (URL, status, attempts) instead of an exception,
so one bad image never kills a batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from spxbatch.archive.io import ArchiveIO, IOStats, MultiRangeUnsupported, ReadError, RetryPolicy
from spxbatch.archive.location import relative_to_root
from spxbatch.fetch.cache import FetchCache, process_cache
from spxbatch.fetch.strategies import (
    PLANES,
    Box,
    Regions,
    Target,
    attach_calibration,
    box_parts,
    check_level2,
    cutout_bytes,
    cutout_requests,
    fetch_boxes,
    fetch_cutouts,
    fetch_whole,
    fitsmap_for,
    neighbourhoods,
    plan_boxes,
    plan_strips,
    read_local_cutouts,
)
from spxbatch.level2.fitsmap import FitsMap, FitsStructureError
from spxbatch.level2.region import ImageRegion
from spxbatch.level2.wcs import sky_to_parent_pixel

STRATEGIES = ("auto", "range", "cutout", "whole", "local")
#: Bytes of multipart headers that come with each part of a multi-range response.
PART_OVERHEAD_BYTES = 100


@dataclass(frozen=True)
class FetchOptions:
    """How to fetch: the retry policy, the network the cost model assumes, cutout and calibration choices."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Round-trip latency (s) and bandwidth (bytes/s) the cost model assumes.
    latency_s: float = 0.05
    bandwidth_bps: float = 25e6
    #: Fixed CPU cost of measuring one region (WCS, headers, set-up: ~20 ms measured), charged per region, so
    #: that many small boxes do not win over a few strips or the whole file on dense fields.
    region_overhead_s: float = 0.02
    #: Server time per cutout (IRSA: 1-2 s each), charged by the cost model.
    cutout_service_s: float = 1.5
    #: Sources within this many pixels share one cutout; extra pixels around each cutout.
    cutout_group_px: int = 32
    cutout_margin_px: int = 2
    #: Ask for gzipped cutouts (IRSA's default); the body is gunzipped either way.
    cutout_gzip: bool = False
    #: Strips closer than this many rows are merged (None: latency x bandwidth when each range is one
    #: request; 0, i.e. only touching strips, with multi-range requests or a local file).
    merge_gap_rows: int | None = None
    #: Attach the solid-angle and CWAVE/CBAND calibration pixels when the archive has them.
    calibration: bool = True
    #: Where PSF cubes come from: 'file' (default: each file's PSF HDU, read once per detector, version and
    #: PSF header, whose DATASUM changes with the cube, so a second cube under one version is caught) or
    #: 'calibration' (the detector's average_psf product, once per detector; the file's own when absent).
    psf_source: str = "file"
    #: Pack each call's byte ranges into multi-range HTTP requests (falls back by itself when unsupported).
    multirange: bool = True
    #: With multi-range requests, let the range strategy read only the sources' boxes (one byte range per
    #: row and plane) instead of full-width strips when the cost model says it is cheaper.
    boxes: bool = True
    #: A local mirror root: when set, image relpaths are read in place below it (no server).
    file_root: str | None = None

    def request_bytes(self) -> float:
        """The per-request overhead expressed in bytes (latency x bandwidth)."""
        return self.latency_s * self.bandwidth_bps


@dataclass
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


def mirror_cutouts(image: Mapping, options: FetchOptions) -> list[str]:
    """The local paths of the cutout files a staged mirror holds for this image (plan column `cutouts`;
    empty for a whole file or when not reading a mirror)."""
    relpaths = image.get("cutouts")
    if not options.file_root or not isinstance(relpaths, list | tuple | np.ndarray) or not len(relpaths):
        return []
    return [f"{options.file_root.rstrip('/')}/{relative_to_root(str(r))}" for r in relpaths]


def image_location(image: Mapping, options: FetchOptions) -> tuple[str, str]:
    """(protocol, path) of an image: the local mirror when configured, else its URL's scheme."""
    if options.file_root:
        return "file", f"{options.file_root.rstrip('/')}/{relative_to_root(str(image['relpath']))}"
    url = str(image["url"])
    if url.startswith(("http://", "https://")):
        return url.split(":", 1)[0], url
    if url.startswith("s3://"):
        return "s3", url
    return "file", url.removeprefix("file://")


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
    cache = cache if cache is not None else process_cache()
    ra = np.atleast_1d(np.asarray(ra, dtype=float))
    dec = np.atleast_1d(np.asarray(dec, dtype=float))
    protocol, path = image_location(image, options)
    stats = IOStats()
    io = ArchiveIO(protocol, options.retry, multirange=options.multirange)
    target = Target.from_image(image, path, io, stats, cache)
    target.psf_source = options.psf_source
    if protocol == "file":
        chosen = "local"
    elif strategy == "cutout" and protocol == "s3":
        target.notes.append("no cutout service on S3: range reads instead")
        chosen = "range"
    else:
        chosen = strategy
    t0 = time.monotonic()
    estimates: dict[str, float] = {}
    if ra.size == 0:
        return FetchResult([], chosen, 0, 0)
    cutouts = mirror_cutouts(image, options)
    try:
        if cutouts:
            regions, missing, errors = _run_mirror_cutouts(target, cutouts, ra, dec, halfsize)
        else:
            regions, missing, errors, chosen = _run(target, chosen, ra, dec, halfsize, options, estimates)
        if options.calibration and regions:
            attach_calibration(target, regions)
        error = "; ".join(errors) or None
    except (ReadError, FitsStructureError) as exc:
        regions, missing, error = [], np.arange(ra.size), str(exc)
    return FetchResult(
        regions=regions,
        strategy=chosen,
        bytes_read=stats.bytes_read,
        requests=stats.requests,
        error=error,
        missing=np.asarray(missing, dtype=np.int64),
        retries=stats.retries,
        estimates=estimates,
        notes=list(dict.fromkeys(target.notes)),
        elapsed_s=time.monotonic() - t0,
    )


def _run(target: Target, chosen: str, ra: np.ndarray, dec: np.ndarray, halfsize: int, options: FetchOptions,
         estimates: dict) -> tuple[Regions, np.ndarray, list[str], str]:
    """Run one strategy (choosing it first when 'auto'): regions, unserved sources, non-fatal errors, strategy."""
    if chosen == "whole":
        regions, missing = fetch_whole(target, ra, dec, halfsize)
        return regions, missing, [], chosen
    if chosen == "cutout":
        fmap = target.cache.get_fitsmap(target.path)
        shape = fmap["IMAGE"].shape if fmap else target.parent_shape
        return (*fetch_cutouts(target, ra, dec, halfsize, shape, options.cutout_group_px,
                               options.cutout_margin_px, options.cutout_gzip), chosen)
    fmap = fitsmap_for(target)
    check_level2(fmap)
    shape = fmap["IMAGE"].shape
    x, y = sky_to_parent_pixel(fmap["IMAGE"].header, ra, dec)
    xlo, xhi, ylo, yhi, ok = neighbourhoods(x, y, halfsize, shape)
    multi = chosen != "local" and target.io.uses_multirange(target.path)
    gap = options.merge_gap_rows
    if gap is None:  # a gap is worth reading when it costs less than the request it saves
        one_per_range = chosen != "local" and not multi
        gap = int(options.request_bytes() // (len(PLANES) * shape[1] * 4)) if one_per_range else 0
    strips = plan_strips(ylo, yhi, ok, gap, shape[1])
    boxes = plan_boxes(xlo, xhi, ylo, yhi, ok) if multi and options.boxes else None
    if chosen == "auto" or boxes:
        estimates.update(estimate_costs(fmap, strips, boxes, ra[ok], dec[ok], halfsize, target, options))
    if chosen == "auto":
        chosen = min(estimates, key=estimates.__getitem__)
        if chosen in ("whole", "cutout"):
            return _run(target, chosen, ra, dec, halfsize, options, {})
        chosen = "range"
    missing = np.flatnonzero(~ok)
    if boxes and estimates["range-boxes"] < estimates["range"]:
        try:
            regions = fetch_boxes(target, fmap, boxes, fallback=False)
            target.notes.append(f"range: {len(boxes)} boxes read as row segments")
            return regions, missing, [], chosen
        except MultiRangeUnsupported:
            target.notes.append("the server refuses multi-range requests: full-width strips instead of boxes")
    return fetch_boxes(target, fmap, strips), missing, [], chosen


def _run_mirror_cutouts(target: Target, paths: list[str], ra: np.ndarray, dec: np.ndarray,
                        halfsize: int) -> tuple[Regions, np.ndarray, list[str]]:
    """Read a staged mirror's cutouts of one image; a source on the frame that no cutout holds is an error
    (the mirror was staged for other sources), not 'off_image'."""
    regions, missing, errors = read_local_cutouts(target, paths, ra, dec, halfsize, target.parent_shape)
    if missing.size and regions:
        x, y = sky_to_parent_pixel(regions[0][0].image_header, ra[missing], dec[missing])
        *_, on_frame = neighbourhoods(x, y, halfsize, target.parent_shape)
        if on_frame.any():
            errors.append(f"{int(on_frame.sum())} source(s) on the image are in none of its staged cutouts "
                          "(stage the mirror for this catalog)")
    return regions, missing, errors


def estimate_costs(fmap: FitsMap, strips: list[Box], boxes: list[Box] | None, ra: np.ndarray, dec: np.ndarray,
                   halfsize: int, target: Target, options: FetchOptions) -> dict[str, float]:
    """Estimated seconds of each strategy for the sources on this image (the header scan is already paid).

    time = ceil(requests / concurrency) x latency + bytes / bandwidth (+ the cutout service time per
    round of concurrent cutouts) + regions x the fixed cost of measuring a region. Range bytes are the
    strips' rows of four planes, or the boxes' pixels plus a multipart header per row segment
    ('range-boxes'), plus the PSF cube when this process has not cached it; a cutout carries its headers,
    the whole PSF cube and its pixels.
    """
    nx = fmap["IMAGE"].shape[1]
    row = nx * 4
    conc = max(1, options.retry.concurrency)
    psf_bytes = fmap["PSF"].data_size
    psf_cached = target.psf_cached()

    def seconds(nbytes: float, nreq: int, regions: int, service: float = 0.0) -> float:
        rounds = math.ceil(nreq / conc)
        return (rounds * (options.latency_s + service) + nbytes / options.bandwidth_bps
                + regions * options.region_overhead_s)

    psf_cost = (0, 0) if psf_cached else (psf_bytes, 1)
    range_rows = sum(y1 - y0 for _, _, y0, y1, _ in strips)
    range_req = target.io.requests_for(target.path, box_parts(strips, nx))
    out = {
        "range": seconds(range_rows * row * len(PLANES) + psf_cost[0], range_req + psf_cost[1], len(strips)),
        "whole": seconds(fmap.size, 1, 1),
    }
    if boxes is not None:
        parts = box_parts(boxes, nx)
        pixels = sum((x1 - x0) * (y1 - y0) for x0, x1, y0, y1, _ in boxes)
        out["range-boxes"] = seconds(pixels * 4 * len(PLANES) + parts * PART_OVERHEAD_BYTES + psf_cost[0],
                                     target.io.requests_for(target.path, parts) + psf_cost[1], len(boxes))
    if target.io.protocol in ("http", "https") and ra.size:
        _, _, sizes = cutout_requests(target.path, ra, dec, halfsize, options.cutout_group_px,
                                      options.cutout_margin_px, options.cutout_gzip)
        out["cutout"] = seconds(sum(cutout_bytes(fmap, side) for side in sizes), len(sizes), len(sizes),
                                options.cutout_service_s)
    return out
