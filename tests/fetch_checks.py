"""Test helpers for fetch results: plan rows from the simulated server, sources on an image, equality with a
local astropy read."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from spxbatch.level2.digest import array_digest
from spxbatch.level2.layout import PLANES
from spxbatch.level2.naming import IBE_ROOT, calibration_relpath

HALF = 6


ATTRS = {"IMAGE": "image", "FLAGS": "flags", "VARIANCE": "variance", "ZODI": "zodi"}


def plan_row(srv, relpath: str) -> dict:
    """A plan images row as the planner gives it (URL on the server, IRSA uri, detector, size)."""
    row = srv.index.set_index("relpath").loc[relpath]
    return {"url": srv.file_url(relpath), "relpath": f"{IBE_ROOT}/{relpath}", "obs_id": row["obs_id"],
            "detector": int(row["detector"]), "version": row["version"], "size_bytes": int(row["size_bytes"]),
            "nx": int(row["nx"]), "ny": int(row["ny"])}


def sources_on(truth, relpath: str, n: int | None = None, spread: bool = False):
    """(ra, dec) of sources on one image: the first n, or (spread) n spaced out in rows."""
    rows = truth[truth["relpath"] == relpath]
    if spread:
        rows = rows.sort_values("y")
        rows = rows.iloc[np.linspace(0, len(rows) - 1, n).round().astype(int)]
    elif n is not None:
        rows = rows.iloc[:n]
    return rows["ra"].to_numpy(), rows["dec"].to_numpy()


def check_psf(psf, hdul) -> None:
    """The region's PSF model is the file's own: QR2's cube (with its zone cards) or R7's ePSF table."""
    if "EPSF" in hdul:
        assert np.array_equal(psf.arrays, hdul["EPSF"].data["EPSF"])
        assert np.array_equal(psf.xcentre, hdul["EPSF"].data["XCENTER"])
        assert psf.digest == array_digest(psf.arrays) and psf.pixel_convolved
        return
    if psf.held is not None:  # read in part (range reads): the planes of its sources' zones, the file's own
        held = sorted(psf.held)
        assert held and np.array_equal(psf.cube[held], hdul["PSF"].data[held])
        assert psf.digest.startswith("planes|")  # named by the PSF header, which fixes the content
    else:
        assert np.array_equal(psf.cube, hdul["PSF"].data)
        assert psf.digest == array_digest(hdul["PSF"].data)  # the content key of the PSF model cache
    assert psf.header["XCTR_1"] == hdul["PSF"].header["XCTR_1"]  # the file's own zone cards


def check_same_as_local(result, path, n_sources: int, calib_root=None, detector=None):
    """Every region equals a local astropy read of the same pixels; every source is served once."""
    assert result.error is None, result.error
    served = np.concatenate([idx for _, idx in result.regions] + [result.missing])
    assert np.array_equal(np.sort(served), np.arange(n_sources))
    with fits.open(path) as hdul:
        wave = hdul["WCS-WAVE"].data[0]["VALUES"]
        for region, idx in result.regions:
            assert idx.size
            ny, nx = region.shape
            sl = np.s_[region.y0:region.y0 + ny, region.x0:region.x0 + nx]
            for name in PLANES:
                got = getattr(region, ATTRS[name])
                assert got.dtype.isnative
                assert np.array_equal(got, hdul[name].data[sl], equal_nan=True), name
            assert region.parent_shape == hdul["IMAGE"].data.shape
            check_psf(region.psf, hdul)
            assert np.array_equal(region.wave.values.ravel(), np.asarray(wave, dtype=float).ravel())
            if calib_root is not None:
                rel = calibration_relpath("solid_angle_pixel_map", detector).removeprefix(
                    IBE_ROOT + "/")
                # the product's pixels around the region's sources (NaN elsewhere: only sampled there)
                sapm, near = fits.getdata(calib_root / rel, "IMAGE")[sl], np.isfinite(region.solid_angle)
                assert near.any()
                assert np.array_equal(region.solid_angle[near], sapm[near])
                rel = calibration_relpath("spectral_wcs", detector).removeprefix(IBE_ROOT + "/")
                cband = fits.getdata(calib_root / rel, "CBAND")[sl]
                assert np.array_equal(np.isfinite(region.cband), near)
                assert np.array_equal(region.cband[near], cband[near])
