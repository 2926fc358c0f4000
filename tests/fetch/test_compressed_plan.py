"""Range plans of an R7 file's tile-compressed FLAGS: a few tiles' heap bytes per box when that is cheaper,
the whole HDU when many single-range requests would cost more, and the same pixels either way."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from fits_files import FileReader

from spxbatch.archive.io import RetryPolicy
from spxbatch.fetch.decode import regions_from_ranges
from spxbatch.fetch.options import FetchOptions
from spxbatch.fetch.request_plan import Transport, plan_image
from spxbatch.level2.epsf import read_epsf
from spxbatch.level2.fitsmap import scan_fits
from spxbatch.level2.read import read_wave_table

MULTI = Transport(local=False, multirange=True, ranges_per_request=256, cutout_service=False)
SINGLE = Transport(local=False, multirange=False, ranges_per_request=1, cutout_service=False)


@pytest.fixture(scope="module")
def r7_file(sim_archive_qr3, truth_qr3):
    relpath = sim_archive_qr3.files[0]
    path = sim_archive_qr3.root / relpath
    reader = FileReader(path)
    fmap = scan_fits(reader, len(reader.data), str(path))
    rows = truth_qr3[truth_qr3.relpath == relpath].sort_values("y")
    return path, reader, fmap, rows


def _regions(fmap, reader, plan, path):
    blobs = tuple(reader(plan.ranges()))
    with fits.open(path) as hdul:
        psf, wave = read_epsf(hdul["EPSF"], str(path)), read_wave_table(hdul["WCS-WAVE"])
        flags = np.asarray(hdul["FLAGS"].data)
    return regions_from_ranges(fmap, plan, blobs, psf, wave), flags


def test_scan_keeps_the_tile_table(r7_file):
    _, _, fmap, _ = r7_file
    entry = fmap["FLAGS"]
    assert entry.compressed and entry.shape == (128, 128) and entry.dtype == np.dtype(">i4")
    assert len(fmap.tiles[entry.index]) == entry.table_size == 8 * 128


def test_a_few_sources_read_a_few_tiles(r7_file):
    path, reader, fmap, rows = r7_file
    few = rows.iloc[[0, len(rows) // 2]]
    plan, _ = plan_image(fmap, few.ra.to_numpy(), few.dec.to_numpy(), 6, "range",
                         FetchOptions(merge_gap_rows=0), MULTI, (), None)
    assert plan.whole_planes == ()
    heap = fmap["FLAGS"].data_size - fmap["FLAGS"].table_size
    spans = [r for r in plan.ranges() if fmap["FLAGS"].data_offset <= r[0] < fmap["FLAGS"].end]
    assert len(spans) == len(plan.reads) and sum(e - s for s, e in spans) < heap / 2
    regions, flags = _regions(fmap, reader, plan, path)
    for region, _ in regions:
        sl = np.s_[region.y0:region.y0 + region.shape[0], region.x0:region.x0 + region.shape[1]]
        assert np.array_equal(region.flags, flags[sl])


def test_many_single_range_requests_read_the_hdu_whole(r7_file):
    """One request at a time, each paying the latency: 4 strips' tiles cost more than one whole read."""
    path, reader, fmap, rows = r7_file
    spread = rows.iloc[np.linspace(0, len(rows) - 1, 4).round().astype(int)]
    plan, _ = plan_image(fmap, spread.ra.to_numpy(), spread.dec.to_numpy(), 6, "range",
                         FetchOptions(merge_gap_rows=0, boxes=False, retry=RetryPolicy(concurrency=1)), SINGLE,
                         (), None)
    entry = fmap["FLAGS"]
    assert len(plan.reads) > 1
    assert plan.whole_planes == (("FLAGS", (entry.data_offset, entry.data_offset + entry.data_size)),)
    regions, flags = _regions(fmap, reader, plan, path)
    for region, _ in regions:
        sl = np.s_[region.y0:region.y0 + region.shape[0], region.x0:region.x0 + region.shape[1]]
        assert np.array_equal(region.flags, flags[sl])
