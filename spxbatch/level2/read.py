"""Level-2 bytes into an ImageRegion: an opened whole file or cutout (astropy HDUs), or the raw bytes of
rectangles of the pixel planes placed by a header scan (`FitsMap`), in either layout (QR2 or R7)."""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
from astropy.io import fits

from spxbatch.level2.epsf import EPSFTable, read_epsf
from spxbatch.level2.fitsmap import FitsMap
from spxbatch.level2.layout import PLANES, R7, Layout, check_hdul
from spxbatch.level2.region import ImageRegion, PSFCube, WaveTable, native, parent_origin
from spxbatch.level2.tiled import TileTable

#: ImageRegion attribute of each pixel plane.
PLANE_ATTRS = {"IMAGE": "image", "FLAGS": "flags", "VARIANCE": "variance", "ZODI": "zodi"}


def read_wave_table(hdu: fits.BinTableHDU) -> WaveTable:
    """The WCS-WAVE table as arrays, any grid (QR2 11 x 11, R7 9 x 9): VALUES[0] reshaped to (nY, nX, 2) as
    FITS -TAB order implies."""
    row = hdu.data[0]
    x = np.asarray(row["X"], dtype=float).ravel()
    y = np.asarray(row["Y"], dtype=float).ravel()
    values = np.asarray(row["VALUES"], dtype=float).reshape(y.size, x.size, 2)
    return WaveTable(x=x, y=y, values=values, header=hdu.header.copy())


def wave_table_from_bytes(fmap: FitsMap, layout: Layout, data: bytes) -> WaveTable:
    """The WCS-WAVE table of a scanned file from its data bytes."""
    return read_wave_table(fmap.hdu_from_bytes(layout.wave_hdu, data))


def epsf_from_bytes(fmap: FitsMap, data: bytes) -> EPSFTable:
    """The EPSF table of a scanned R7 file from its data bytes."""
    return read_epsf(fmap.hdu_from_bytes(R7.psf_hdu, data), fmap.url)


def psf_of_hdul(hdul: fits.HDUList, layout: Layout, what: str) -> PSFCube | EPSFTable:
    """The PSF model an opened file carries: QR2's PSF cube or R7's ePSF table."""
    hdu = hdul[layout.psf_hdu]
    if layout is R7:
        return read_epsf(hdu, what)
    return PSFCube(cube=native(hdu.data), header=hdu.header.copy())


def open_level2(data: bytes, what: str) -> fits.HDUList:
    """An HDUList over the bytes of a whole file or cutout (tile-compressed planes decompress on access),
    checked to have a Level-2 layout."""
    hdul = fits.open(io.BytesIO(data), memmap=False)
    try:
        check_hdul(hdul, what)
    except ValueError:
        hdul.close()
        raise
    return hdul


def region_from_hdul(
    hdul: fits.HDUList, parent_shape: tuple[int, int] | None = None, with_psf: bool = True, what: str = ""
) -> ImageRegion:
    """An ImageRegion from an open whole file or cutout (7 HDUs, either layout); the origin comes from
    CRPIXnA. `parent_shape` defaults to the image's own shape for a full frame (origin 0, 0)."""
    layout = check_hdul(hdul, what)
    image_hdu = hdul["IMAGE"]
    x0, y0 = parent_origin(image_hdu.header)
    if parent_shape is None:
        if (x0, y0) != (0, 0):
            raise ValueError("a cutout needs its parent_shape: the file does not record it")
        parent_shape = image_hdu.data.shape
    return ImageRegion(
        primary_header=hdul[0].header.copy(),
        image_header=image_hdu.header.copy(),
        flags_header=hdul["FLAGS"].header.copy(),
        image=native(image_hdu.data),
        flags=native(np.asarray(hdul["FLAGS"].data)),
        variance=native(hdul["VARIANCE"].data),
        zodi=native(hdul["ZODI"].data),
        x0=x0,
        y0=y0,
        wave=read_wave_table(hdul[layout.wave_hdu]),
        psf=psf_of_hdul(hdul, layout, what) if with_psf else None,
        parent_shape=tuple(parent_shape),
    )


def frame_headers(fmap: FitsMap) -> tuple[fits.Header, fits.Header, fits.Header]:
    """Copies of a scanned file's PRIMARY, IMAGE and FLAGS headers (the cached scan's own stay untouched)."""
    return tuple(fmap[n].header.copy() for n in ("PRIMARY", "IMAGE", "FLAGS"))


def compressed_box(tiles: TileTable, box: tuple[int, int, int, int], span: bytes) -> np.ndarray:
    """The pixels of `box` = (x0, x1, y0, y1) of a tile-compressed plane, from the heap bytes of its rows'
    tiles (`tiles.heap_span`)."""
    x0, x1, y0, y1 = box
    return tiles.rows_from_heap(y0, y1, span)[:, x0:x1]


def region_from_planes(fmap: FitsMap, box: tuple[int, int, int, int], planes: Mapping[str, bytes | np.ndarray],
                       psf: PSFCube | EPSFTable | None, wave: WaveTable,
                       headers: tuple[fits.Header, fits.Header, fits.Header] | None = None) -> ImageRegion:
    """The region of a scanned file covering `box` = (x0, x1, y0, y1) of the parent frame (exclusive ends)
    from each pixel plane's raw big-endian bytes of that box (its rows' segments, joined), or, for a
    tile-compressed plane, its pixels already decoded (`compressed_box`).

    `headers`: the PRIMARY, IMAGE and FLAGS headers to carry (default: copies of the file's); the regions of
    one read share one set (`frame_headers`), which lets photometry set up the frame once for all of them."""
    x0, x1, y0, y1 = box
    arrays = {}
    for name in PLANES:
        plane = planes[name]
        if not isinstance(plane, np.ndarray):
            plane = np.frombuffer(plane, dtype=fmap[name].dtype).reshape(y1 - y0, x1 - x0)
        arrays[PLANE_ATTRS[name]] = native(plane)
    primary, image_h, flags_h = headers or frame_headers(fmap)
    return ImageRegion(primary_header=primary, image_header=image_h, flags_header=flags_h, x0=x0, y0=y0,
                       wave=wave, psf=psf, parent_shape=fmap["IMAGE"].shape, **arrays)
