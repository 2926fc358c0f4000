"""A second run in the same field (a new output) takes its PSF models and calibration pixels from the
persistent product cache: the access log shows no read of those bytes (the calibration products' headers
are still scanned, once per process: they are what the cached pixels are checked against), and the cube is
the first run's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from cubes import assert_cubes_equal

from spxbatch.cube.store import open_cube
from spxbatch.pipeline.executor import SerialExecutor
from spxbatch.pipeline.stages import run
from spxbatch.sim.server import serve_archive
from spxbatch.sim.server.files import parse_ranges

IBE = "/ibe/data/spherex/"


def _hdus(root: Path, relpath: str, which) -> list[tuple[int, int]]:
    """(data start, data end) of the HDUs `which(hdu)` selects in the file at `relpath`."""
    with fits.open(root / relpath) as hdul:
        return [(info["datLoc"], info["datLoc"] + info["datSpan"], _plane_bytes(hdu)) for hdu in hdul
                if which(hdu) and (info := hdu.fileinfo())["datSpan"]]


def _plane_bytes(hdu) -> int:
    """Bytes of one plane of a 3-D image HDU (a PSF cube), else of the whole data."""
    shape = hdu.data.shape
    return int(np.prod(shape[1:])) * hdu.data.dtype.itemsize if len(shape) == 3 else hdu.fileinfo()["datSpan"]


def _is_psf(hdu) -> bool:
    return hdu.name in ("PSF", "EPSF")


def _is_plane(hdu) -> bool:
    return hdu.name != "PRIMARY" and hdu.header.get("NAXIS") == 2


def _reads_of(log: list[dict], root: Path, which_file, which_hdu, dedicated: bool) -> int:
    """How many GET byte ranges of the files `which_file(relpath)` selects read data of their HDUs
    `which_hdu` selects: ranges inside such an HDU's data that start where it starts or a plane later
    (`dedicated`: a PSF read, of the whole HDU or of planes of a cube), or else any that is not the header
    scan's read of the file's tail (calibration blocks and boxes; a header scan's other reads start at the
    file's start or at a header)."""
    hits, hdus = 0, {}
    for e in log:
        if e["method"] != "GET" or not e["path"].startswith(IBE) or e["status"] not in (200, 206):
            continue
        relpath = e["path"][len(IBE):]
        if not which_file(relpath) or not (root / relpath).is_file():
            continue
        if relpath not in hdus:
            hdus[relpath] = _hdus(root, relpath, which_hdu)
        size = (root / relpath).stat().st_size
        ranges = parse_ranges(e["range"], size) if e["range"] else []
        for a, b in ranges or []:
            for start, end, plane in hdus[relpath]:
                hits += start <= a and b < end and ((a - start) % plane == 0 if dedicated else b != size - 1)
    return hits


def _level2(relpath: str) -> bool:
    return "/level2/" in f"/{relpath}" and "center" not in relpath


def _calibration(relpath: str) -> bool:
    return "/level2/" not in f"/{relpath}"


@pytest.mark.parametrize("archive_fixture", ["sim_archive", "sim_archive_qr3"])
def test_second_run_reads_no_psf_or_calibration_bytes_and_gives_the_same_cube(
        archive_fixture, request, tmp_path, product_cache_dir):
    archive = request.getfixturevalue(archive_fixture)
    root = Path(archive.root)
    with serve_archive(root) as srv:
        first = tmp_path / "first.zarr"
        run(archive.catalog, first, archive=srv.url, fetch="range", progress=False, executor=SerialExecutor())
        cold = list(srv.access_log)
        srv.clear_log()
        second = tmp_path / "second.zarr"
        run(archive.catalog, second, archive=srv.url, fetch="range", progress=False, executor=SerialExecutor())
        warm = list(srv.access_log)
    assert _reads_of(cold, root, _level2, _is_psf, dedicated=True) > 0  # the first run read PSF models ...
    assert _reads_of(cold, root, _calibration, _is_plane, dedicated=False) > 0  # ... and calibration pixels
    assert _reads_of(warm, root, _level2, _is_psf, dedicated=True) == 0
    assert _reads_of(warm, root, _calibration, _is_plane, dedicated=False) == 0
    assert any(product_cache_dir.rglob("*.bin"))
    assert_cubes_equal(open_cube(first).load(), open_cube(second).load())


def test_cache_dir_none_reads_them_again(sim_archive, tmp_path):
    root = Path(sim_archive.root)
    with serve_archive(root) as srv:
        for name in ("a", "b"):
            srv.clear_log()
            run(sim_archive.catalog, tmp_path / f"{name}.zarr", archive=srv.url, fetch="range", progress=False,
                executor=SerialExecutor(), fetch_options={"cache_dir": "none"})
        assert _reads_of(list(srv.access_log), root, _level2, _is_psf, dedicated=True) > 0
