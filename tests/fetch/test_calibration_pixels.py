"""Calibration pixels under an image's regions over HTTP: boxes while cheaper ("rent"), whole row blocks once
the boxes read reach the plane's size ("buy"); the values are the product's either way."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from spxbatch.fetch.cache import CalibPlane, FetchCache
from spxbatch.fetch.calibration_pixels import region_pixels
from spxbatch.fetch.execute import FetchContext, scan_headers
from spxbatch.fetch.options import FetchOptions
from spxbatch.level2.naming import IBE_ROOT, calibration_relpath
from spxbatch.sim.server import serve_archive


def test_boxes_are_rented_until_they_weigh_a_plane_then_blocks_are_bought(sim_archive):
    relpath = calibration_relpath("solid_angle_pixel_map", 3)
    truth = fits.getdata(sim_archive.root / relpath.removeprefix(f"{IBE_ROOT}/"), "IMAGE")
    ny, nx = truth.shape
    boxes = [(10, 20, 30, 40), (60, 75, 90, 98)]  # x0, x1, y0, y1
    box_bytes = sum((x1 - x0) * (y1 - y0) for x0, x1, y0, y1 in boxes) * 4
    with serve_archive(sim_archive.root) as srv:
        ctx = FetchContext.open("http", FetchOptions(), FetchCache())
        fmap = scan_headers(ctx, srv.file_url(relpath.removeprefix(f"{IBE_ROOT}/")))
        plane = CalibPlane(fmap, "IMAGE")
        images, spent = 0, []
        while not plane.blocks:
            before = ctx.stats.bytes_read
            pixels = region_pixels(ctx, plane, boxes)
            spent.append(ctx.stats.bytes_read - before)
            images += 1
            for (x0, x1, y0, y1), values in zip(boxes, pixels, strict=True):
                np.testing.assert_array_equal(values, truth[y0:y1, x0:x1])
            assert images < 100
    rents = spent[:-1]
    rows = sum(y1 - y0 for _, _, y0, y1 in boxes)
    # a rented image reads its boxes' bytes (and the multipart headers of one part per box row) ...
    assert rents and all(box_bytes <= b < box_bytes + 200 * rows for b in rents)
    assert max(rents) < 0.2 * (98 - 30) * nx * 4  # ... far less than the row blocks under them
    assert plane.rented <= ny * nx * 4 < plane.rented + box_bytes  # bought once the next rent would pass it
    assert spent[-1] >= (98 - 30) * nx * 4 / 2  # the buy reads the blocks under the boxes, whole rows
    before = ctx.stats.bytes_read
    region_pixels(ctx, plane, boxes)
    assert ctx.stats.bytes_read == before  # bought blocks are held: nothing more to read
