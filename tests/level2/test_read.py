"""Regions from bytes: rectangles of the pixel planes placed by a header scan, and the WCS-WAVE table from
its data bytes, equal to astropy's own read of the file (the oracle)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from fits_files import FileReader, write_mef

from spxbatch.level2.fitsmap import scan_fits
from spxbatch.level2.layout import PLANES, QR2
from spxbatch.level2.read import (
    PLANE_ATTRS,
    read_wave_table,
    region_from_hdul,
    region_from_planes,
    wave_table_from_bytes,
)


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    path = tmp_path_factory.mktemp("read") / "l2.fits"
    write_mef(path, n=96, seed=3)
    reader = FileReader(path)
    return path, reader, scan_fits(reader, len(reader.data), str(path))


@pytest.mark.parametrize("box", [(0, 96, 10, 17), (5, 30, 40, 41), (80, 96, 90, 96)])
def test_region_from_plane_bytes_equals_astropy(scanned, box):
    path, reader, fmap = scanned
    x0, x1, y0, y1 = box
    planes = {name: b"".join(reader(fmap.box_ranges(name, x0, x1, y0, y1))) for name in PLANES}
    assert len(fmap.box_ranges("IMAGE", x0, x1, y0, y1)) == (1 if x1 - x0 == 96 else y1 - y0)
    wave = wave_table_from_bytes(fmap, QR2, fmap.small[fmap["WCS-WAVE"].index])
    region = region_from_planes(fmap, box, planes, None, wave)
    assert (region.x0, region.y0, region.shape, region.parent_shape) == (x0, y0, (y1 - y0, x1 - x0), (96, 96))
    with fits.open(path) as hdul:
        for name in PLANES:
            got = getattr(region, PLANE_ATTRS[name])
            assert got.dtype.isnative and np.array_equal(got, hdul[name].data[y0:y1, x0:x1]), name
        assert region.image_header["OBSID"] == hdul["IMAGE"].header["OBSID"]
        assert np.array_equal(wave.values, read_wave_table(hdul["WCS-WAVE"]).values)
        whole = region_from_hdul(hdul)
    assert np.array_equal(whole.image[y0:y1, x0:x1], region.image)
