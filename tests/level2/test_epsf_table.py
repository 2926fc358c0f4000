"""The EPSF table reader: zones of any shape, centres and oversampling as the simulator wrote them."""

import numpy as np
import pytest
from astropy.io import fits

from spxbatch.level2.epsf import read_epsf
from spxbatch.level2.fitsmap import FitsStructureError
from spxbatch.sim.epsf import make_epsf, table_hdu


@pytest.mark.parametrize("detector", [1, 3])
def test_read_epsf_keeps_zones_centres_and_oversampling(detector):
    model = make_epsf(detector, 2040)
    epsf = read_epsf(table_hdu(model), "test")
    nzx, nzy = (11, 41) if detector == 3 else (21, 21)
    assert epsf.nzones == nzx * nzy
    assert epsf.arrays.shape == (nzx * nzy, 33, 33)
    assert epsf.oversampling == 5
    np.testing.assert_array_equal(epsf.arrays, model.arrays)
    xc, yc = epsf.zone_centres
    # x fastest: the first nzx rows share one y and increase in x.
    assert np.all(np.diff(xc[:nzx]) > 0) and np.ptp(yc[:nzx]) == 0
    assert np.isclose(epsf.arrays.sum(axis=(1, 2)), 25).all()
    assert len(epsf.digest) == 40


def test_read_epsf_refuses_a_table_without_the_epsf_column():
    hdu = fits.BinTableHDU.from_columns([fits.Column(name="XCENTER", format="E", array=np.zeros(2))], name="EPSF")
    with pytest.raises(FitsStructureError, match="lacks columns"):
        read_epsf(hdu, "file.fits")
