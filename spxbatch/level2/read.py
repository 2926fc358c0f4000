"""Level-2 HDUs (a whole file or a cutout, opened by astropy) into an ImageRegion."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from spxbatch.level2.region import ImageRegion, PSFCube, WaveTable, native, parent_origin


def read_wave_table(hdu: fits.BinTableHDU) -> WaveTable:
    """The WCS-WAVE table as arrays: VALUES[0] reshaped to (nY, nX, 2) as FITS -TAB order implies."""
    row = hdu.data[0]
    x = np.asarray(row["X"], dtype=float).ravel()
    y = np.asarray(row["Y"], dtype=float).ravel()
    values = np.asarray(row["VALUES"], dtype=float).reshape(y.size, x.size, 2)
    return WaveTable(x=x, y=y, values=values, header=hdu.header.copy())


def region_from_hdul(
    hdul: fits.HDUList, parent_shape: tuple[int, int] | None = None, with_psf: bool = True
) -> ImageRegion:
    """An ImageRegion from an open whole file or cutout (7 HDUs); the origin comes from CRPIXnA.

    `parent_shape` defaults to the image's own shape for a full frame (origin 0, 0).
    """
    image_hdu = hdul["IMAGE"]
    x0, y0 = parent_origin(image_hdu.header)
    if parent_shape is None:
        if (x0, y0) != (0, 0):
            raise ValueError("a cutout needs its parent_shape: the file does not record it")
        parent_shape = image_hdu.data.shape
    psf = None
    if with_psf:
        psf_hdu = hdul["PSF"]
        psf = PSFCube(cube=native(psf_hdu.data), header=psf_hdu.header.copy())
    return ImageRegion(
        primary_header=hdul[0].header.copy(),
        image_header=image_hdu.header.copy(),
        flags_header=hdul["FLAGS"].header.copy(),
        image=native(image_hdu.data),
        flags=native(hdul["FLAGS"].data),
        variance=native(hdul["VARIANCE"].data),
        zodi=native(hdul["ZODI"].data),
        x0=x0,
        y0=y0,
        wave=read_wave_table(hdul["WCS-WAVE"]),
        psf=psf,
        parent_shape=tuple(parent_shape),
    )

