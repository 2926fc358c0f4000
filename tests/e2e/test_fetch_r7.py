"""R7 files (tile-compressed FLAGS, EPSF table, 9 x 9 WCS-WAVE) through every fetch path: the same pixels,
flags and ePSF as astropy's own read of the file, and FLAGS read as a few tiles rather than whole."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from fetch_checks import HALF, check_same_as_local, plan_row, sources_on

from spxbatch.fetch.cache import FetchCache
from spxbatch.fetch.fetch import FetchOptions, fetch_image
from spxbatch.level2.naming import IBE_ROOT
from spxbatch.sim.server import serve_archive

PATHS = ["range", "range-strips", "cutout", "whole", "local"]


@pytest.fixture(scope="module")
def server(sim_archive_qr3):
    with serve_archive(sim_archive_qr3.root) as srv:
        yield srv


def _fetch(path: str, server, info, relpath: str, ra, dec):
    """One image's fetch by `path` ('local' reads the archive as a mirror)."""
    opts = FetchOptions(merge_gap_rows=2, boxes=path != "range-strips", calibration=False)
    image = plan_row(server, relpath)
    if path == "local":
        image = {"url": "http://127.0.0.1:9/nowhere", "relpath": f"{IBE_ROOT}/{relpath}",
                 "detector": image["detector"], "version": image["version"]}
        opts = FetchOptions(file_root=str(info.root), merge_gap_rows=2, calibration=False)
    strategy = "auto" if path == "local" else path.split("-")[0]
    return fetch_image(image, ra, dec, strategy=strategy, halfsize=HALF, cache=FetchCache(), options=opts)


@pytest.fixture(scope="module")
def fetched(server, sim_archive_qr3, truth_qr3):
    relpath = next(r for r in sim_archive_qr3.files if "/3/" in r)  # D3: the 11 x 41-zone ePSF
    ra, dec = sources_on(truth_qr3, relpath, 4, spread=True)
    return relpath, ra, {p: _fetch(p, server, sim_archive_qr3, relpath, ra, dec) for p in PATHS}


@pytest.mark.parametrize("path", PATHS)
def test_every_path_reads_an_r7_file_as_astropy_does(fetched, sim_archive_qr3, path):
    relpath, ra, results = fetched
    result = results[path]
    assert result.strategy == path.split("-")[0]
    check_same_as_local(result, sim_archive_qr3.root / relpath, ra.size)
    with fits.open(sim_archive_qr3.root / relpath) as hdul:
        assert hdul[0].header["VERSION"].startswith("7.") and isinstance(hdul["FLAGS"], fits.CompImageHDU)
    for region, _ in result.regions:
        assert region.psf.nzones == 11 * 41
        assert region.wave.values.shape == (9, 9, 2)
        assert "MSKN0026" in region.flags_header  # BLOOM's name card, whatever path the header came by


def test_regions_are_identical_across_paths(fetched):
    """Same box, same numbers: every path's pixels and flags agree where their regions overlap."""
    _, _, results = fetched
    ref = results["whole"].regions[0][0]
    for path, result in results.items():
        for region, _ in result.regions:
            sl = np.s_[region.y0:region.y0 + region.shape[0], region.x0:region.x0 + region.shape[1]]
            assert np.array_equal(region.flags, ref.flags[sl]), path
            assert np.array_equal(region.image, ref.image[sl], equal_nan=True), path
            assert region.psf.digest == ref.psf.digest, path
