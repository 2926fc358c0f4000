"""Level-2 bytes into an ImageRegion: an opened whole file or cutout (astropy HDUs), or the raw bytes of
rectangles of the pixel planes placed by a header scan (`FitsMap`)."""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
from astropy.io import fits

from spxbatch.level2.fitsmap import FitsMap
from spxbatch.level2.layout import PLANES, QR2, check_hdul
from spxbatch.level2.region import ImageRegion, PSFCube, WaveTable, native, parent_origin

#: ImageRegion attribute of each pixel plane.
PLANE_ATTRS = {"IMAGE": "image", "FLAGS": "flags", "VARIANCE": "variance", "ZODI": "zodi"}


def read_wave_table(hdu: fits.BinTableHDU) -> WaveTable:
    """The WCS-WAVE table as arrays: VALUES[0] reshaped to (nY, nX, 2) as FITS -TAB order implies."""
    row = hdu.data[0]
    x = np.asarray(row["X"], dtype=float).ravel()
    y = np.asarray(row["Y"], dtype=float).ravel()
    values = np.asarray(row["VALUES"], dtype=float).reshape(y.size, x.size, 2)
    return WaveTable(x=x, y=y, values=values, header=hdu.header.copy())


def wave_table_from_bytes(fmap: FitsMap, data: bytes) -> WaveTable:
    """The WCS-WAVE table of a scanned file from its data bytes."""
    return read_wave_table(fmap.hdu_from_bytes(QR2.wave_hdu, data))


def open_level2(data: bytes, what: str) -> fits.HDUList:
    """An HDUList over the (uncompressed) bytes of a whole file or cutout, checked to have a Level-2 layout."""
    hdul = fits.open(io.BytesIO(data), memmap=False)
    try:
        check_hdul(hdul, what)
    except ValueError:
        hdul.close()
        raise
    return hdul


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
        psf_hdu = hdul[QR2.psf_hdu]
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
        wave=read_wave_table(hdul[QR2.wave_hdu]),
        psf=psf,
        parent_shape=tuple(parent_shape),
    )


def region_from_planes(fmap: FitsMap, box: tuple[int, int, int, int], planes: Mapping[str, bytes],
                       psf: PSFCube | None, wave: WaveTable) -> ImageRegion:
    """The region of a scanned file covering `box` = (x0, x1, y0, y1) of the parent frame (exclusive ends)
    from each pixel plane's raw big-endian bytes of that box (its rows' segments, joined)."""
    x0, x1, y0, y1 = box
    arrays = {PLANE_ATTRS[name]: native(np.frombuffer(planes[name], dtype=fmap[name].dtype).reshape(y1 - y0, x1 - x0))
              for name in PLANES}
    primary, image_h, flags_h = (fmap[n].header.copy() for n in ("PRIMARY", "IMAGE", "FLAGS"))
    return ImageRegion(primary_header=primary, image_header=image_h, flags_header=flags_h, x0=x0, y0=y0,
                       wave=wave, psf=psf, parent_shape=fmap["IMAGE"].shape, **arrays)
