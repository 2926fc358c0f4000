"""Calibration pixels under an image's regions: read as boxes while that is cheaper, then as whole row blocks.

A calibration plane (2040 x 2040 float32, 16.6 MB) serves every image of its detector, so a long run reads it
once, in row blocks kept in the process (and in the persistent product store). A short run, or the first
images of one, needs only the pixels under their sources: a few kB per source. Which to do is a rent-or-buy
choice, made per plane and process and priced by the cost model (bytes over the bandwidth, and round trips:
a box row is one byte range): an image's boxes are read on their own ("rent") while that costs less than its
missing row blocks, until the rent paid for the plane reaches the price of reading it whole; from then on, or
at once for an image with many sources, its row blocks are read and kept ("buy"), so no run pays much more
than the better choice in hindsight. Boxes are rented only over multi-range HTTP; S3 and local files read
blocks. Blocks already held, in memory or in the store, are always used; an image's boxes are stored too
(keyed by the boxes), so a second run of the same catalog reads none of these bytes.
"""

from __future__ import annotations

import hashlib

import numpy as np

from spxbatch.fetch.cache import CALIB_BLOCK_ROWS, CalibPlane
from spxbatch.fetch.cost import PART_OVERHEAD_BYTES, Link, Reads, seconds
from spxbatch.fetch.execute import FetchContext
from spxbatch.fetch.store_keys import block_key, product_key
from spxbatch.level2.region import native

#: A region's pixel box: x0, x1, y0, y1 (0-based, end exclusive) in the parent image.
Box = tuple[int, int, int, int]


def region_pixels(ctx: FetchContext, plane: CalibPlane, boxes: list[Box], link: Link) -> list[np.ndarray]:
    """The plane's pixels under each box, read through this image's context (see the module's docstring);
    rent and buy are priced by the cost model on `link` (bytes, and requests: a box row is one range)."""
    entry = plane.fmap[plane.extname]
    ny, nx = entry.shape
    item = entry.dtype.itemsize
    missing = sorted({k for x0, x1, y0, y1 in boxes for k in plane.missing_blocks(y0, y1)})
    store = ctx.cache.store
    transport = ctx.transport(plane.fmap.url)
    # boxes are one byte range per row: only multi-range requests carry them in few round trips; blocks the
    # store holds cost nothing to buy
    if transport.multirange and missing and not (
            store is not None and all(store.has(block_key(plane.fmap, entry, k, CALIB_BLOCK_ROWS)) for k in missing)):
        ranges = sum(y1 - y0 for _, _, y0, y1 in boxes)
        box_bytes = sum((x1 - x0) * (y1 - y0) for x0, x1, y0, y1 in boxes) * item
        rent = seconds(link, Reads(box_bytes + ranges * PART_OVERHEAD_BYTES, transport.requests_for(ranges), 0))
        rows = sum(min(ny, (k + 1) * CALIB_BLOCK_ROWS) - k * CALIB_BLOCK_ROWS for k in missing)
        buy = seconds(link, Reads(rows * nx * item, transport.requests_for(len(_consecutive_runs(missing))), 0))
        whole = seconds(link, Reads(ny * nx * item, 1, 0))
        if rent < buy and plane.rented_s + rent < whole:
            plane.rented_s += rent
            return _boxes(ctx, plane, boxes)
    _fetch_blocks(ctx, plane, missing)  # every block the boxes need, in one call
    return [plane.box(x0, x1, y0, y1) for x0, x1, y0, y1 in boxes]


def _consecutive_runs(blocks: list[int]) -> list[list[int]]:
    """Sorted block numbers grouped into runs of consecutive ones (each run is one byte range)."""
    runs: list[list[int]] = []
    for b in blocks:
        if runs and b == runs[-1][-1] + 1:
            runs[-1].append(b)
        else:
            runs.append([b])
    return runs


def _boxes(ctx: FetchContext, plane: CalibPlane, boxes: list[Box]) -> list[np.ndarray]:
    """The boxes' pixels, one byte range per box row (from the store when an earlier run read these boxes)."""
    fmap, entry = plane.fmap, plane.fmap[plane.extname]
    digest = hashlib.sha256(repr(boxes).encode()).hexdigest()[:32]

    def read() -> bytes:
        ranges = [r for x0, x1, y0, y1 in boxes for r in fmap.box_ranges(plane.extname, x0, x1, y0, y1)]
        return b"".join(ctx.read_ranges(fmap.url, ranges, fmap.size))

    raw = ctx.cache.stored_bytes(f"{product_key(fmap, entry)}|boxes|{digest}", read)
    out, at = [], 0
    for x0, x1, y0, y1 in boxes:
        n = (x1 - x0) * (y1 - y0) * entry.dtype.itemsize
        out.append(native(np.frombuffer(raw[at:at + n], dtype=entry.dtype).reshape(y1 - y0, x1 - x0)))
        at += n
    return out


def _fetch_blocks(ctx: FetchContext, plane: CalibPlane, blocks: list[int]) -> None:
    """Hold the given row blocks of a calibration plane: from the persistent store, else read in one call
    (consecutive blocks as one range) through this image's context, and stored."""
    fmap, entry = plane.fmap, plane.fmap[plane.extname]
    ny, nx = entry.shape

    def keep(k: int, raw: bytes) -> None:
        rows = len(raw) // (nx * entry.dtype.itemsize)
        plane.blocks[k] = native(np.frombuffer(raw, dtype=entry.dtype).reshape(rows, nx))

    store = ctx.cache.store
    want = []
    for k in blocks:
        raw = store.get(block_key(fmap, entry, k, CALIB_BLOCK_ROWS)) if store is not None else None
        if raw is None:
            want.append(k)
        else:
            keep(k, raw)
    runs = _consecutive_runs(want)
    spans = [(run[0] * CALIB_BLOCK_ROWS, min(ny, (run[-1] + 1) * CALIB_BLOCK_ROWS)) for run in runs]
    if spans:
        blobs = ctx.read_ranges(fmap.url, [fmap.row_range(plane.extname, a, b) for a, b in spans], fmap.size)
        block_bytes = CALIB_BLOCK_ROWS * nx * entry.dtype.itemsize
        for run, blob in zip(runs, blobs, strict=True):
            for i, k in enumerate(run):
                raw = blob[i * block_bytes:(i + 1) * block_bytes]
                keep(k, raw)
                if store is not None:
                    store.put(block_key(fmap, entry, k, CALIB_BLOCK_ROWS), raw)
