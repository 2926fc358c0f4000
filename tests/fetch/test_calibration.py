"""Calibration pixels and PSF cubes with the process cache, over local files: values equal the products',
reads are counted in the context of the image that makes them, absent products are notes, not errors."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
from astropy.io import fits
from fetch_checks import HALF, check_same_as_local, sources_on

from spxbatch.fetch.cache import FetchCache
from spxbatch.fetch.calibration import attach_calibration
from spxbatch.fetch.execute import FetchContext, scan_headers
from spxbatch.fetch.fetch import fetch_image
from spxbatch.fetch.options import FetchOptions
from spxbatch.fetch.tables import ImageTables
from spxbatch.fetch.target import ImageTarget
from spxbatch.level2.naming import IBE_ROOT, calibration_relpath
from spxbatch.level2.read import region_from_hdul
from spxbatch.level2.wcs import celestial_wcs


def _row(root, relpath: str) -> dict:
    header = fits.getheader(root / relpath, "IMAGE")
    return {"url": str(root / relpath), "relpath": f"{IBE_ROOT}/{relpath}", "detector": int(relpath.split("/")[4]),
            "nx": header["NAXIS1"], "ny": header["NAXIS2"]}


def _strip(root, relpath: str, y0: int, y1: int):
    """A full-width region of rows y0..y1-1 of a file, as a fetch would give it."""
    with fits.open(root / relpath) as hdul:
        region = region_from_hdul(hdul)
    region.image, region.flags, region.variance, region.zodi = (a[y0:y1] for a in (
        region.image, region.flags, region.variance, region.zodi))
    region.y0 = y0
    return region


def _source_at(root, relpath: str, x: float, y: float) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) arrays of one source at 0-based parent pixel (x, y) of a file."""
    ra, dec = celestial_wcs(fits.getheader(root / relpath, "IMAGE")).all_pix2world([x], [y], 0)
    return np.asarray(ra), np.asarray(dec)


def test_calibration_pixels_and_who_pays_for_them(sim_archive):
    """Two images of one detector share the cached product; rows the second needs are read through (and
    counted in) the second image's context, not the first's."""
    root = sim_archive.root
    by_det = pd.Series(sim_archive.files).groupby([int(f.split("/")[4]) for f in sim_archive.files])
    first, second = list(max(by_det, key=lambda kv: len(kv[1]))[1])[:2]
    cache = FetchCache()
    options = FetchOptions(file_root=str(root))
    one = FetchContext.open("file", options, cache)
    regions, notes = attach_calibration(one, ImageTarget.from_row(_row(root, first), options),
                                        [(_strip(root, first, 0, 10), np.array([0]))],
                                        *_source_at(root, first, 40.3, 5.6), options)
    assert notes == [] and one.stats.requests > 0
    spent = (one.stats.requests, one.stats.bytes_read)
    two = FetchContext.open("file", options, cache)
    more, notes = attach_calibration(two, ImageTarget.from_row(_row(root, second), options),
                                     [(_strip(root, second, 100, 128), np.array([0]))],
                                     *_source_at(root, second, 60.5, 120.2), options)
    assert notes == [] and (one.stats.requests, one.stats.bytes_read) == spent
    assert 0 < two.stats.requests < spent[0]  # the product's headers are cached: only the new row blocks
    detector = int(first.split("/")[4])
    # the maps hold the product's pixels around the source (the 2 x 2 it is sampled at, a margin of 1) and NaN
    # elsewhere: solid angles and wavelengths are only ever sampled at a source's position
    for (region, _), near, y0 in ((regions[0], np.s_[4:8, 39:43], 0), (more[0], np.s_[119:123, 59:63], 100)):
        sapm = fits.getdata(root / calibration_relpath("solid_angle_pixel_map", detector).removeprefix(
            IBE_ROOT + "/"), "IMAGE")
        cwave = fits.getdata(root / calibration_relpath("spectral_wcs", detector).removeprefix(IBE_ROOT + "/"),
                             "CWAVE")
        local = (slice(near[0].start - y0, near[0].stop - y0), near[1])
        assert np.array_equal(region.solid_angle[local], sapm[near])
        assert np.array_equal(region.cwave[local], cwave[near])
        assert np.isfinite(region.solid_angle).sum() == 4 * 4  # floor - 1 .. ceil + 1: 4 pixels a side
        assert region.cband is not None


def test_psf_is_read_once_per_detector_and_version(sim_archive):
    root = sim_archive.root
    versions = pd.Series(sim_archive.files).groupby(["/".join(f.split("/")[3:5]) for f in sim_archive.files])
    files = list(max(versions, key=lambda kv: len(kv[1]))[1])
    assert len(files) >= 2
    cache = FetchCache()
    options = FetchOptions(file_root=str(root))
    cubes = []
    for relpath in files:
        ctx = FetchContext.open("file", options, cache)
        tables = ImageTables(ctx, ImageTarget.from_row(_row(root, relpath), options))
        fmap, none = scan_headers(ctx, str(root / relpath)), np.empty(0)
        psf = fmap["PSF"]  # a local file's cube is read whole, beside the pixels, by the first image only
        first = ((psf.data_offset, psf.data_offset + psf.data_size),) if relpath == files[0] else ()
        assert tables.psf_spans(fmap, none, none) == first
        choice = tables.psf_for_fitsmap(fmap, none, none)
        assert choice.notes == [] and choice.origin == "file"
        assert np.array_equal(choice.model.cube, fits.getdata(root / relpath, "PSF"))
        cubes.append(choice.model.cube)
    assert cache.psf_reads == 1 and all(c is cubes[0] for c in cubes)


def test_mirror_without_calibration_products(sim_archive, truth, tmp_path):
    """A local mirror holding only the image: its regions come without calibration pixels and the notes say
    the products are absent (a missing local file is 'absent' like an HTTP 404, not a crash)."""
    relpath = sim_archive.files[0]
    (tmp_path / relpath).parent.mkdir(parents=True)
    shutil.copy2(sim_archive.root / relpath, tmp_path / relpath)
    ra, dec = sources_on(truth, relpath, 3)
    for psf_source in ("file", "calibration"):
        result = fetch_image(_row(tmp_path, relpath), ra, dec, halfsize=HALF, cache=FetchCache(),
                             options=FetchOptions(file_root=str(tmp_path), psf_source=psf_source))
        check_same_as_local(result, tmp_path / relpath, ra.size)
        assert all(r.solid_angle is None and r.cwave is None for r, _ in result.regions)
        assert any(n.startswith("solid_angle_pixel_map: absent") for n in result.notes), result.notes
        assert any(n.startswith("spectral_wcs: absent") for n in result.notes)
        assert (psf_source == "calibration") == any(n.startswith("average_psf: absent") for n in result.notes)


def test_two_archives_in_one_process_do_not_share_calibration(sim_archive, tmp_path):
    """One process cache, two archives holding the same image: a mirror without the products, then the full
    archive, then the mirror again. Each read sees its own archive's products (the cache is keyed by the
    product's location, not by detector and release alone)."""
    relpath = sim_archive.files[0]
    (tmp_path / relpath).parent.mkdir(parents=True)
    shutil.copy2(sim_archive.root / relpath, tmp_path / relpath)
    cache = FetchCache()

    def attach(root):
        options = FetchOptions(file_root=str(root))
        ctx = FetchContext.open("file", options, cache)
        regions, notes = attach_calibration(ctx, ImageTarget.from_row(_row(root, relpath), options),
                                            [(_strip(root, relpath, 0, 10), np.array([0]))],
                                            *_source_at(root, relpath, 30.0, 4.0), options)
        return regions[0][0], notes

    bare, notes = attach(tmp_path)
    assert bare.solid_angle is None and any(n.startswith("solid_angle_pixel_map: absent") for n in notes)
    full, notes = attach(sim_archive.root)
    assert notes == [] and full.solid_angle is not None and full.cwave is not None
    again, notes = attach(tmp_path)
    assert again.solid_angle is None and any(n.startswith("spectral_wcs: absent") for n in notes)
