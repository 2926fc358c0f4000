"""The R7 ePSF: the `EPSF` binary table of a level-2 file (or of an ePSF calibration file), read into one
frozen object that photometry uses beside the QR2 PSF cube.

One row per zone (any number of zones, not necessarily equal in x and y: D3 has 11 x 41), each a 2-D
array oversampled OVSMPX x OVSMPY times and already convolved with the pixel (an *effective* PSF): a
star's pixel is flux times the ePSF at that pixel's centre, never an integral of it over the pixel.
Zone centres `XCENTER`, `YCENTER` are 0-based parent pixels. See shared/docs/spherex-r7.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

from spxbatch.level2.digest import array_digest
from spxbatch.level2.fitsmap import FitsStructureError

#: Columns an EPSF table must have.
EPSF_COLUMNS = ("XCENTER", "YCENTER", "EPSF")


@dataclass(frozen=True)
class EPSFTable:
    """The zones of one ePSF: `arrays[k]` (ny, nx) is zone k's ePSF (x fastest in the zone order), centred
    at fine cell ((nx - 1) / 2, (ny - 1) / 2); `xcentre`, `ycentre` the zones' 0-based parent pixels."""

    arrays: np.ndarray
    xcentre: np.ndarray
    ycentre: np.ndarray
    oversampling: int
    header: fits.Header
    digest: str = field(default="", compare=False)

    #: The arrays are pixel-convolved: evaluate them at pixel centres, never integrate them over pixels.
    pixel_convolved = True

    def __post_init__(self) -> None:
        """Compute the digest when the builder did not give one."""
        if not self.digest:
            object.__setattr__(self, "digest", array_digest(self.arrays))

    @property
    def nzones(self) -> int:
        """Number of zones (table rows)."""
        return int(self.arrays.shape[0])

    @property
    def zone_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) 0-based parent-pixel centres of the zones, in row order (as `PSFCube.zone_centres`)."""
        return self.xcentre, self.ycentre


def read_epsf(hdu: fits.BinTableHDU, what: str) -> EPSFTable:
    """The ePSF of an `EPSF` table HDU, checked (raises FitsStructureError naming `what` when it is not one)."""
    names = {str(n).upper() for n in (hdu.columns.names if hdu.columns is not None else ())}
    missing = [c for c in EPSF_COLUMNS if c not in names]
    if missing:
        raise FitsStructureError(f"{what}: EPSF table lacks columns {missing}")
    header = hdu.header
    ovx, ovy = int(header.get("OVSMPX", 0)), int(header.get("OVSMPY", 0))
    if ovx < 1 or ovx != ovy:
        raise FitsStructureError(f"{what}: EPSF oversampling OVSMPX={ovx}, OVSMPY={ovy} (need equal, >= 1)")
    arrays = np.asarray(hdu.data["EPSF"], dtype=np.float64)
    if arrays.ndim != 3 or arrays.shape[0] == 0 or min(arrays.shape[1:]) < 3:
        raise FitsStructureError(f"{what}: EPSF column has shape {arrays.shape}, expected (zones, ny, nx)")
    return EPSFTable(
        arrays=arrays,
        xcentre=np.asarray(hdu.data["XCENTER"], dtype=np.float64),
        ycentre=np.asarray(hdu.data["YCENTER"], dtype=np.float64),
        oversampling=ovx,
        header=header.copy(),
    )
