"""The header model a local mirror is planned from: values from the cards, corners through the full WCS, and
a cutout's own frame and its parent's."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from fits_files import write_mef

from spxbatch.level2.constants import TIME_BOUNDS_SPAN_S
from spxbatch.level2.headers import frame_corners, image_record, parent_corners
from spxbatch.sim.cutout import make_cutout, parse_cutout_query


def test_record_of_a_full_frame(tmp_path):
    path = tmp_path / "l2.fits"
    write_mef(path, n=64, obs_id="2025W18_2B_0007_3", detector=5)
    with fits.open(path) as hdul:
        rec = image_record(hdul)
        wcs = WCS(hdul["IMAGE"].header, fix=False)
        ra, dec = wcs.all_pix2world([-0.5, 63.5, 63.5, -0.5], [-0.5, -0.5, 63.5, 63.5], 0)
    assert rec["obs_id"] == "2025W18_2B_0007_3" and rec["detector"] == 5 and rec["band"] == "SPHEREx-D5"
    assert rec["collection"] == "spherex_qr2" and (rec["nx"], rec["ny"]) == (64, 64)
    assert rec["time_bounds_upper"] - rec["time_bounds_lower"] == pytest.approx(TIME_BOUNDS_SPAN_S / 86400)
    assert [rec[f"ra{i}"] for i in range(1, 5)] == pytest.approx(list(ra % 360.0), abs=1e-12)
    assert [rec[f"dec{i}"] for i in range(1, 5)] == pytest.approx(list(dec), abs=1e-12)
    assert not rec["is_cutout"] and (rec["x0"], rec["y0"]) == (0, 0)
    assert rec["energy_bounds_lower"] < rec["energy_bounds_upper"]  # the band's bounds: no spectral WCS here


def test_cutout_record_and_parent_corners(sim_archive, tmp_path):
    parent = sim_archive.root / sim_archive.files[0]
    (tmp_path / "cut.fits").write_bytes(make_cutout(parent, parse_cutout_query(
        {"center": "70,50px", "size": "21px", "gzip": "false"})))
    with fits.open(tmp_path / "cut.fits") as cut, fits.open(parent) as whole:
        rec = image_record(cut)
        ny, nx = whole["IMAGE"].data.shape
        assert rec["is_cutout"] and (rec["x0"], rec["y0"]) == (60, 40) and (rec["nx"], rec["ny"]) == (21, 21)
        ra, dec = parent_corners(cut["IMAGE"].header, (ny, nx))
        pra, pdec = frame_corners(whole["IMAGE"].header, nx, ny)
        assert np.allclose(ra, pra % 360.0, rtol=0, atol=1e-10) and np.allclose(dec, pdec, rtol=0, atol=1e-10)
        assert rec["energy_bounds_lower"] > 0 and rec["obs_id"] == whole["IMAGE"].header["OBSID"]
