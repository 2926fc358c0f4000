"""The header index of a directory of Level-2 files: values from the headers, footprints through the SIP WCS,
cutouts, unreadable files, and the (path, size, mtime) cache."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from spxbatch.level2.constants import BANDS
from spxbatch.plan import index as index_mod
from spxbatch.plan.index import CACHE_NAME, index_directory
from spxbatch.sim.cutout import make_cutout, parse_cutout_query


@pytest.fixture
def small_copy(tmp_path, sim_archive):
    """Three files of the test archive copied into an IRSA-like tree."""
    root = tmp_path / "mirror"
    for rel in sim_archive.files[:3]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(sim_archive.root / rel, root / rel)
    return root, sim_archive.files[:3]


def test_index_of_the_archive(sim_archive, tmp_path):
    df = index_directory(sim_archive.root, cache_dir=tmp_path)
    assert sorted(df["relpath"]) == sorted(sim_archive.files)  # no calibration products, no truth files
    assert df.attrs["failed"] == []
    for row in df.head(4).itertuples():
        with fits.open(sim_archive.root / row.relpath) as hdul:
            hdr, primary = hdul["IMAGE"].header, hdul[0].header
        assert row.obs_id == hdr["OBSID"] and row.detector == hdr["DETECTOR"]
        assert row.band == f"SPHEREx-D{hdr['DETECTOR']}" and row.collection == primary["COLLECTN"]
        assert row.pipeline_version == primary["VERSION"] and row.version in row.relpath
        assert row.release == "qr2" and row.size_bytes == (sim_archive.root / row.relpath).stat().st_size
        assert row.mjd_start == hdr["MJD-BEG"] and row.mjd_end == hdr["MJD-END"]
        assert (row.time_bounds_upper - row.time_bounds_lower) * 86400 == pytest.approx(115.12, abs=1e-3)
        nx, ny = hdr["NAXIS1"], hdr["NAXIS2"]
        ra, dec = WCS(hdr).all_pix2world([-0.5, nx - 0.5, nx - 0.5, -0.5], [-0.5, -0.5, ny - 0.5, ny - 0.5], 0)
        np.testing.assert_allclose([getattr(row, f"ra{i}") for i in range(1, 5)], ra % 360, atol=1e-10)
        np.testing.assert_allclose([getattr(row, f"dec{i}") for i in range(1, 5)], dec, atol=1e-10)
        band = BANDS[row.detector]
        assert band.lo_um * 0.9e-6 < row.energy_bounds_lower < row.energy_bounds_upper < band.hi_um * 1.1e-6
        assert (row.is_cutout, row.x0, row.y0, row.nx, row.ny) == (False, 0, 0, nx, ny)


def test_cache_skips_unchanged_files(small_copy, monkeypatch):
    root, files = small_copy
    first = index_directory(root)
    assert (root / CACHE_NAME).exists() and len(first) == 3
    calls = []
    real = index_mod.read_headers
    monkeypatch.setattr(index_mod, "read_headers", lambda p: calls.append(p) or real(p))
    again = index_directory(root)
    assert calls == [] and again.equals(first)
    # touching one file re-reads that file only; removing one drops its row
    st = (root / files[0]).stat()
    os.utime(root / files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    (root / files[1]).unlink()
    third = index_directory(root)
    assert [p.name for p in calls] == [os.path.basename(files[0])]
    assert sorted(third["relpath"]) == sorted([files[0], files[2]])
    calls.clear()
    index_directory(root)
    assert calls == []


def test_cache_dir_option(small_copy, tmp_path):
    root, _ = small_copy
    cache = tmp_path / "cache"
    df = index_directory(root, cache_dir=cache)
    assert len(df) == 3 and not (root / CACHE_NAME).exists() and len(list(cache.iterdir())) == 1


def test_unreadable_files_are_listed_not_fatal(small_copy):
    root, files = small_copy
    (root / "junk.fits").write_bytes(b"not a fits file" * 100)
    fits.PrimaryHDU(np.zeros((4, 4))).writeto(root / "other.fits")
    df = index_directory(root, use_cache=False)
    assert sorted(df["relpath"]) == sorted(files)
    failed = dict(df.attrs["failed"])
    assert set(failed) == {"junk.fits", "other.fits"} and all(failed.values())


def test_flat_directory_with_a_cutout(sim_archive, tmp_path):
    """Any layout: a downloaded cutout with a made-up name is indexed with its parent origin."""
    rel = sim_archive.files[0]
    body = make_cutout(sim_archive.root / rel, parse_cutout_query({"center": "30,50px", "size": "20px",
                                                                    "gzip": "false"}))
    (tmp_path / "my_cutout.fits").write_bytes(body)
    df = index_directory(tmp_path, use_cache=False)
    row = df.iloc[0]
    assert (row.is_cutout, row.x0, row.y0, row.nx, row.ny) == (True, 20, 40, 20, 20)
    assert row.release == "" and row.version in rel  # from the PROCTAG card
    with fits.open(sim_archive.root / rel) as hdul:
        w = WCS(hdul["IMAGE"].header)
    ra, dec = w.all_pix2world([19.5], [39.5], 0)
    assert (row.ra1, row.dec1) == pytest.approx((float(ra[0]), float(dec[0])), abs=1e-9)
