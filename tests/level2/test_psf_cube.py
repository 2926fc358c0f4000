"""PSFCube: a content digest set once (equal to the digest of the file's bytes), zone cards read once."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
from astropy.io import fits

from spxbatch.level2.digest import array_digest
from spxbatch.level2.region import PSFCube, psf_zone_centres


def _header(n: int) -> fits.Header:
    h = fits.Header()
    h["OVERSAMP"] = 10
    for k in range(1, n + 1):
        h[f"XCTR_{k}"] = 10.0 * k
        h[f"YCTR_{k}"] = -1.0 * k
    return h


def test_digest_is_of_the_content_as_a_fits_file_holds_it(tmp_path):
    cube = np.random.default_rng(0).random((3, 5, 5)).astype(np.float32)
    psf = PSFCube(cube=cube, header=_header(3))
    fits.ImageHDU(cube, name="PSF").writeto(tmp_path / "psf.fits")
    with fits.open(tmp_path / "psf.fits") as hdul:
        raw = hdul["PSF"].data.tobytes()  # big-endian, as on disk and over the wire
        from_file = PSFCube(cube=hdul["PSF"].data, header=hdul["PSF"].header)
    assert psf.digest == hashlib.sha1(raw).hexdigest() == from_file.digest
    assert array_digest(cube.astype(np.float64)) != psf.digest  # another dtype is other content
    assert PSFCube(cube=cube + 1, header=_header(3)).digest != psf.digest
    with pytest.raises(dataclasses.FrozenInstanceError):
        psf.digest = "x"


def test_zone_centres_are_read_once_per_cube():
    psf = PSFCube(cube=np.zeros((4, 3, 3), np.float32), header=_header(4))
    xc, yc = psf.zone_centres
    np.testing.assert_array_equal(xc, [10.0, 20.0, 30.0, 40.0])
    np.testing.assert_array_equal(yc, [-1.0, -2.0, -3.0, -4.0])
    assert psf.zone_centres[0] is xc  # cached on the cube, not per header object id
    h = _header(4)
    h["NAXIS3"] = 2  # the plane count, when the header has it, bounds the cards read
    assert psf_zone_centres(h)[0].tolist() == [10.0, 20.0]
    assert psf.oversampling == 10 and PSFCube(cube=psf.cube, header=fits.Header()).oversampling == 10


def test_zone_centres_read_from_the_text_equal_astropys_values():
    """Values as real headers write them (exponents, integers, comments, a quoted number, an XCTR_1 look-alike
    keyword) read the same as astropy reads each card."""
    h = fits.Header()
    values = [92.22727272727273, 1.5e3, 7, -0.25, 1e-05]
    for k, v in enumerate(values, start=1):
        h[f"XCTR_{k}"] = (v, f"Center of x zone ({k}, 0)")
        h[f"YCTR_{k}"] = v / 3
    h["YCTR_3"] = "12.5"  # a string card: astropy's value, as a number
    h["XXCTR_1"] = 99.0
    read = fits.Header.fromstring(h.tostring())  # as a file holds it
    xc, yc = psf_zone_centres(read)
    assert xc.tolist() == [float(read[f"XCTR_{k}"]) for k in range(1, 6)]
    assert yc.tolist() == [float(read[f"YCTR_{k}"]) for k in range(1, 6)]
