"""Calibration pixels under an image's regions over HTTP: boxes while they cost less ("rent"), whole row
blocks once the rent paid reaches the price of the plane, or at once for an image with many boxes ("buy");
the values are the product's either way."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from spxbatch.archive.io import MAX_RANGES_PER_REQUEST
from spxbatch.fetch.cache import CalibPlane, FetchCache
from spxbatch.fetch.calibration_pixels import region_pixels
from spxbatch.fetch.cost import PART_OVERHEAD_BYTES, Reads, seconds
from spxbatch.fetch.execute import FetchContext, scan_headers
from spxbatch.fetch.options import FetchOptions
from spxbatch.level2.naming import IBE_ROOT, calibration_relpath
from spxbatch.sim.server import serve_archive

RELPATH = calibration_relpath("solid_angle_pixel_map", 3).removeprefix(f"{IBE_ROOT}/")


def _plane(srv) -> tuple[FetchContext, CalibPlane]:
    ctx = FetchContext.open("http", FetchOptions(), FetchCache())
    return ctx, CalibPlane(scan_headers(ctx, srv.file_url(RELPATH)), "IMAGE")


def test_boxes_are_rented_until_the_rent_reaches_the_plane_then_blocks_are_bought(sim_archive):
    truth = fits.getdata(sim_archive.root / RELPATH, "IMAGE")
    ny, nx = truth.shape
    boxes = [(10, 20, 30, 40), (60, 75, 90, 98)]  # x0, x1, y0, y1: rows 30..97, one range per box row
    rows = sum(y1 - y0 for _, _, y0, y1 in boxes)
    box_bytes = sum((x1 - x0) * (y1 - y0) for x0, x1, y0, y1 in boxes) * 4
    link = FetchOptions(latency_s=0.001, bandwidth_bps=25e6).link()  # cheap round trips: a few rents first
    rent = seconds(link, Reads(box_bytes + rows * PART_OVERHEAD_BYTES, 1, 0))
    whole = seconds(link, Reads(ny * nx * 4, 1, 0))
    expected_rents = int(whole // rent) - (whole % rent == 0)
    assert expected_rents >= 2
    with serve_archive(sim_archive.root) as srv:
        ctx, plane = _plane(srv)
        spent = []
        while not plane.blocks:
            before = ctx.stats.bytes_read
            pixels = region_pixels(ctx, plane, boxes, link)
            spent.append(ctx.stats.bytes_read - before)
            for (x0, x1, y0, y1), values in zip(boxes, pixels, strict=True):
                np.testing.assert_array_equal(values, truth[y0:y1, x0:x1])
            assert len(spent) < 100
        before = ctx.stats.bytes_read
        region_pixels(ctx, plane, boxes, link)
        assert ctx.stats.bytes_read == before  # bought blocks are held: nothing more to read
    rents = spent[:-1]
    assert len(rents) == expected_rents  # rented while the rent paid stays under the plane's price
    # a rented image reads its boxes' bytes (and the multipart headers of one part per box row) ...
    assert all(box_bytes <= b < box_bytes + 200 * rows for b in rents)
    assert max(rents) < 0.2 * (98 - 30) * nx * 4  # ... far less than the row blocks under them
    assert spent[-1] >= (98 - 30) * nx * 4 / 2  # the buy reads the blocks under the boxes, whole rows


def test_an_image_with_many_boxes_buys_the_blocks_at_once(sim_archive):
    """Many sources make many box rows: more round trips than reading the blocks, so blocks are read now."""
    truth = fits.getdata(sim_archive.root / RELPATH, "IMAGE")
    rng = np.random.default_rng(1)
    boxes = [(int(x), int(x) + 6, int(y), int(y) + 6) for x, y in rng.integers(0, 120, (200, 2))]
    assert sum(y1 - y0 for *_, y0, y1 in boxes) > 8 * MAX_RANGES_PER_REQUEST  # > one round of requests
    with serve_archive(sim_archive.root) as srv:
        ctx, plane = _plane(srv)
        pixels = region_pixels(ctx, plane, boxes, FetchOptions(latency_s=0.05).link())
    assert plane.rented_s == 0 and plane.blocks  # bought at once, nothing rented
    # each box its own small array: a view would keep whole row blocks alive per box (10^4 boxes: GBs)
    assert not any(np.shares_memory(v, block) for v in pixels for block in plane.blocks.values())
    assert all(v.base is None for v in pixels)
    for (x0, x1, y0, y1), values in zip(boxes, pixels, strict=True):
        np.testing.assert_array_equal(values, truth[y0:y1, x0:x1])
