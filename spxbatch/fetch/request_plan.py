"""What to read for one image and its sources, as data: a request plan, built without I/O from the file's
header map, the sources' positions and the fetch options.

A plan is one of: byte ranges of the pixel planes per box (`RangePlan`: full-width strips, or boxes as row
segments with strips as the fallback for servers refusing multi-range requests), IRSA cutout URLs per
group of sources (`CutoutPlan`), one GET of the whole file (`WholePlan`), or the cutout files a staged
mirror holds (`MirrorCutoutPlan`). `plan_image` picks range reads, the whole file or cutouts by the cost
model; `fetch.execute` reads a plan, `fetch.decode` turns the bytes into regions, and staging writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from spxbatch.fetch.cost import PART_OVERHEAD_BYTES, Reads, cutout_bytes, estimate_costs, seconds
from spxbatch.fetch.geometry import (
    Box,
    box_parts,
    cutout_side_px,
    cutout_url,
    group_on_sky,
    neighbourhoods,
    plan_boxes,
    plan_strips,
)
from spxbatch.fetch.options import FetchOptions
from spxbatch.level2.fitsmap import FitsMap
from spxbatch.level2.layout import PLANE_ITEMSIZE, PLANES, Layout, check_fitsmap
from spxbatch.level2.tiled import TileTable, tile_table
from spxbatch.level2.wcs import sky_to_parent_pixel
from spxbatch.sky import mean_direction


@dataclass(frozen=True)
class Transport:
    """How reads reach a file, as far as planning cares: a local file or a server, whether the byte ranges
    of one call go out packed into multi-range requests (and how many per request), and whether the server
    has a cutout service."""

    local: bool
    multirange: bool
    ranges_per_request: int
    cutout_service: bool

    def requests_for(self, n_ranges: int) -> int:
        """How many requests reading `n_ranges` byte ranges takes."""
        return -(-n_ranges // self.ranges_per_request) if self.multirange else n_ranges


@dataclass(frozen=True)
class RegionRead:
    """One box of the parent frame and its byte ranges, plane by plane (PLANES order): one range per plane
    for a full-width box, one per row and plane otherwise; a tile-compressed plane has one range, the heap
    bytes of its rows' tiles, or none when the plan reads that plane whole."""

    box: Box
    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class RangePlan:
    """Range reads of the pixel planes of `path` (a file of `size` bytes), one region per box."""

    strategy: str  # 'range', or 'local' for a file read in place
    path: str
    size: int
    reads: tuple[RegionRead, ...]
    #: Sources whose neighbourhood misses the frame.
    off_image: np.ndarray
    #: Boxes as row segments need multi-range requests: a server that refuses them must not get one request
    #: per row; the fallback (full-width strips of the same sources) is read instead.
    fallback: RangePlan | None = None
    #: What reading this plan is worth saying in the result's notes ('' for nothing).
    note: str = ""
    #: Tile-compressed planes read whole (name, byte span of the HDU's data), after every box's ranges.
    whole_planes: tuple[tuple[str, tuple[int, int]], ...] = ()

    def ranges(self) -> list[tuple[int, int]]:
        """Every byte range: read by read and plane, then the planes read whole."""
        return [r for read in self.reads for r in read.ranges] + [span for _, span in self.whole_planes]


@dataclass(frozen=True)
class CutoutRequest:
    """One IRSA cutout: its URL, its side (px) and the sources (indices) it is meant to serve."""

    url: str
    side_px: int
    members: np.ndarray


@dataclass(frozen=True)
class CutoutPlan:
    """IRSA cutouts of the file at `path`, one per tight group of sources, fetched concurrently."""

    strategy: ClassVar[str] = "cutout"
    path: str
    requests: tuple[CutoutRequest, ...]


@dataclass(frozen=True)
class WholePlan:
    """One GET of the whole file (checked against `expected_size` when the plan knows it)."""

    strategy: ClassVar[str] = "whole"
    path: str
    expected_size: int | None


@dataclass(frozen=True)
class MirrorCutoutPlan:
    """The cutout files a staged local mirror holds for one image, read in place."""

    strategy: ClassVar[str] = "local"
    paths: tuple[str, ...]


RequestPlan = RangePlan | CutoutPlan | WholePlan | MirrorCutoutPlan


def plan_cutouts(path: str, ra: np.ndarray, dec: np.ndarray, halfsize: int, options: FetchOptions,
                 gzip: bool) -> CutoutPlan:
    """One cutout per tight group of sources, centred on the group's mean direction and sized so that every
    member's `halfsize` neighbourhood fits (for fetching and for `spxbatch stage`)."""
    requests = []
    for g in group_on_sky(ra, dec, options.cutout_group_px):
        side = cutout_side_px(ra[g], dec[g], halfsize, options.cutout_margin_px)
        c_ra, c_dec = mean_direction(ra[g], dec[g])
        requests.append(CutoutRequest(cutout_url(path, c_ra, c_dec, side, gzip), side, g))
    return CutoutPlan(path, tuple(requests))


def cutout_plan_bytes(fmap: FitsMap, plan: CutoutPlan) -> int:
    """About how many bytes a cutout plan's responses weigh: each cutout carries every header, the whole PSF
    cube and the WCS-WAVE table beside its trimmed planes."""
    layout = check_fitsmap(fmap)
    fixed = sum(h.data_offset - h.header_offset for h in fmap.hdus) + fmap[layout.psf_hdu].data_size
    fixed += fmap[layout.wave_hdu].data_size
    return sum(cutout_bytes(fixed, r.side_px, len(PLANES), PLANE_ITEMSIZE) for r in plan.requests)


def plan_image(fmap: FitsMap, ra: np.ndarray, dec: np.ndarray, halfsize: int, strategy: str,
               options: FetchOptions, transport: Transport, psf_spans: tuple[tuple[int, int], ...],
               whole_size: int | None) -> tuple[RequestPlan, dict[str, float]]:
    """The plan for a scanned image: range reads ('range' or 'local'), or, with 'auto', whichever of range
    reads, the whole file and cutouts the cost model says is fastest; and the cost model's estimates
    (strategy -> seconds; computed for 'auto' and when boxes compete with strips).

    `psf_spans`: the PSF bytes range reads must add (`ImageTables.psf_spans`: none when this process holds
    them; a cutout or the whole file carries its PSF anyway);
    `whole_size`: the file size the plan row gives (checked by a whole-file read).
    """
    shape = fmap["IMAGE"].shape
    nx = shape[1]
    x, y = sky_to_parent_pixel(fmap["IMAGE"].header, ra, dec)
    xlo, xhi, ylo, yhi, ok = neighbourhoods(x, y, halfsize, shape)
    multi = not transport.local and transport.multirange
    gap = options.merge_gap_rows
    if gap is None:  # a gap is worth reading when it costs less than the request it saves
        one_per_range = not transport.local and not multi
        gap = int(options.request_bytes() // (len(PLANES) * nx * PLANE_ITEMSIZE)) if one_per_range else 0
    strips = plan_strips(ylo, yhi, ok, gap, nx)
    boxes = plan_boxes(xlo, xhi, ylo, yhi, ok) if multi and options.boxes else None
    estimates: dict[str, float] = {}
    if strategy == "auto" or boxes:
        estimates = _estimates(fmap, strips, boxes, ra[ok], dec[ok], halfsize, options, transport, psf_spans)
    if strategy == "auto":
        best = min(estimates, key=estimates.__getitem__)
        if best == "whole":
            return WholePlan(fmap.url, whole_size), estimates
        if best == "cutout":
            return plan_cutouts(fmap.url, ra, dec, halfsize, options, options.cutout_gzip), estimates
        strategy = "range"
    off_image = np.flatnonzero(~ok)
    layout = check_fitsmap(fmap)
    strip_plan = _range_plan(fmap, layout, strategy, strips, off_image, options, transport)
    if boxes and estimates["range-boxes"] < estimates["range"]:
        note = f"range: {len(boxes)} boxes read as row segments"
        plan = _range_plan(fmap, layout, strategy, boxes, off_image, options, transport, fallback=strip_plan,
                           note=note)
        return plan, estimates
    return strip_plan, estimates


def _range_plan(fmap: FitsMap, layout: Layout, strategy: str, boxes: list[Box], off_image: np.ndarray,
                options: FetchOptions, transport: Transport, fallback: RangePlan | None = None,
                note: str = "") -> RangePlan:
    """The byte ranges of every plane of each box (a compressed plane's tiles, or that plane whole)."""
    tables = {name: tile_table(fmap, name) for name in layout.compressed_planes}  # parsed once per plan
    whole = {name: (fmap[name].data_offset, fmap[name].data_offset + fmap[name].data_size)
             for name, tiles in tables.items() if _read_whole(fmap, name, tiles, boxes, options, transport)}
    reads = tuple(RegionRead(b, tuple(r for name in PLANES for r in _plane_ranges(fmap, tables, name, b, whole)))
                  for b in boxes)
    return RangePlan(strategy, fmap.url, fmap.size, reads, off_image, fallback, note, tuple(whole.items()))


def _plane_ranges(fmap: FitsMap, tables: dict[str, TileTable], name: str, box: Box,
                  whole: dict[str, tuple[int, int]]) -> list[tuple[int, int]]:
    """The byte ranges of one plane of one box: its rows' segments, or a compressed plane's (`tables`)
    tiles' heap bytes (none when that plane is read whole)."""
    x0, x1, y0, y1, _ = box
    if name not in tables:
        return fmap.box_ranges(name, x0, x1, y0, y1)
    if name in whole:
        return []
    tiles = tables[name]
    return [tiles.heap_span(*tiles.tiles_for_rows(y0, y1))]


def _read_whole(fmap: FitsMap, name: str, tiles: TileTable, boxes: list[Box], options: FetchOptions,
                transport: Transport) -> bool:
    """Whether a compressed plane is cheaper read whole than as its boxes' tiles (always, when its tiles
    do not span whole rows)."""
    if not tiles.rows_tiled:
        return True
    spans = [tiles.heap_span(*tiles.tiles_for_rows(y0, y1)) for _, _, y0, y1, _ in boxes]
    link = options.link()
    by_tiles = seconds(link, Reads(sum(e - s for s, e in spans), transport.requests_for(len(spans)), 0))
    return seconds(link, Reads(fmap[name].data_size, transport.requests_for(1), 0)) < by_tiles


def _estimates(fmap: FitsMap, strips: list[Box], boxes: list[Box] | None, ra: np.ndarray, dec: np.ndarray,
               halfsize: int, options: FetchOptions, transport: Transport,
               psf_spans: tuple[tuple[int, int], ...]) -> dict[str, float]:
    """The cost model's seconds per strategy for the sources on this image (`ra`, `dec`)."""
    nx = fmap["IMAGE"].shape[1]
    plane_bytes = len(PLANES) * PLANE_ITEMSIZE
    psf = Reads(sum(e - s for s, e in psf_spans) + len(psf_spans) * PART_OVERHEAD_BYTES,
                transport.requests_for(len(psf_spans)) if psf_spans else 0, 0)
    rows = sum(y1 - y0 for _, _, y0, y1, _ in strips)
    strip_reads = Reads(rows * nx * plane_bytes, transport.requests_for(box_parts(strips, nx)), len(strips))
    box_reads = None
    if boxes is not None:
        parts = box_parts(boxes, nx)
        pixels = sum((x1 - x0) * (y1 - y0) for x0, x1, y0, y1, _ in boxes)
        box_reads = Reads(pixels * plane_bytes + parts * PART_OVERHEAD_BYTES, transport.requests_for(parts),
                          len(boxes))
    cutout_reads = None
    if transport.cutout_service and ra.size:
        plan = plan_cutouts(fmap.url, ra, dec, halfsize, options, options.cutout_gzip)
        n = len(plan.requests)
        cutout_reads = Reads(cutout_plan_bytes(fmap, plan), n, n)
    return estimate_costs(options.link(), strips=strip_reads, whole_bytes=fmap.size, psf=psf, boxes=box_reads,
                          cutouts=cutout_reads)
