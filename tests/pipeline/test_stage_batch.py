"""The staging task without a server: from a local archive, whole files and calibration products are
written into the mirror with their manifest entries, intact files are kept, absent products recorded."""

from __future__ import annotations

import hashlib

import numpy as np
from astropy.io import fits

from spxbatch.archive.mirror import is_intact
from spxbatch.fetch.options import FetchOptions
from spxbatch.level2.naming import IBE_ROOT, calibration_relpath
from spxbatch.pipeline.stage import StageJob, stage_batch


def _jobs(sim_archive):
    relpath = sim_archive.files[0]
    header = fits.getheader(sim_archive.root / relpath, "IMAGE")
    image = {"image_id": 0, "relpath": f"{IBE_ROOT}/{relpath}", "url": str(sim_archive.root / relpath),
             "obs_id": header["OBSID"], "detector": int(header["DETECTOR"]), "size_bytes":
             (sim_archive.root / relpath).stat().st_size}
    present = calibration_relpath("spectral_wcs", image["detector"])
    absent = f"qr9/spectral_wcs/{image['detector']}/"  # no such release: recorded under the product's folder
    calib = [StageJob("calibration", {**image, "product": "spectral_wcs", "product_release": release},
                      np.empty(0), np.empty(0)) for release in (None, "qr9")]
    ra, dec = np.array([sim_archive.ra]), np.array([sim_archive.dec])
    return [StageJob("image", image, ra, dec), *calib], relpath, present, absent


def test_stage_batch_from_a_local_archive(sim_archive, tmp_path):
    jobs, relpath, present, absent = _jobs(sim_archive)
    # 'auto' on a local archive stages whole files: there is no cutout service
    out = stage_batch(jobs, str(tmp_path), "auto", 6, {}, FetchOptions())
    assert [s["error"] for s in out] == [None, None, None] and [s["fetched"] for s in out] == [1, 1, 0]
    image_entry = out[0]["files"][relpath]
    data = (sim_archive.root / relpath).read_bytes()
    assert image_entry["kind"] == "image" and image_entry["size"] == len(data)
    assert image_entry["sha256"] == hashlib.sha256(data).hexdigest() and (tmp_path / relpath).read_bytes() == data
    assert out[0]["bytes"] == len(data) and out[0]["requests"] == 1
    short = present.removeprefix(IBE_ROOT + "/")
    assert out[1]["files"][short]["kind"] == "calibration" and is_intact(tmp_path, short, out[1]["files"][short])
    assert out[2]["files"][absent]["kind"] == "none" and "absent" in out[2]["files"][absent]["reason"]
    known = {k: v for s in out for k, v in s["files"].items()}
    again = stage_batch(jobs, str(tmp_path), "whole", 6, known, FetchOptions())
    assert [s["fetched"] for s in again] == [0, 0, 0] and [s["requests"] for s in again] == [0, 0, 0]
    (tmp_path / relpath).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # damaged: fetched again
    healed = stage_batch(jobs[:1], str(tmp_path), "whole", 6, known, FetchOptions())
    assert healed[0]["fetched"] == 1 and (tmp_path / relpath).read_bytes() == data
