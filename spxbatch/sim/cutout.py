"""IBE-style cutouts of a Level-2 file: `?center=x,y[units]&size=w[,h][units][&gzip=false]`.

Conventions (IRSA does not document them; spherex-archive.md section 6.3):
- `center` with `px|pix|pixels` is a 0-based pixel position (numpy / astropy, the same as the header's
  zero-based WCS `A`); otherwise RA,Dec in degrees (or `deg|d|rad|arcmin|arcsec` suffixed).
- the box is `n = max(1, round(size_px))` pixels wide, starting at `floor(c + 0.5 - n/2)`, then clipped
  to the image; no overlap is an error (HTTP 400). Angular sizes use the WCS pixel scale at the centre.
- the body is a gzip file (Content-Type application/gzip, not a Content-Encoding) unless `gzip=false`.
- all 7 HDUs: IMAGE, FLAGS, VARIANCE, ZODI trimmed (a tile-compressed FLAGS, R7's, compressed again with
  one tile per row); PSF or EPSF and WCS-WAVE copied unchanged; CRPIX1/2, CRPIX1A/2A and CRPIX1W/2W
  shifted by the origin so sky and wavelength stay right ([astropy-checked] recipe).
Only the needed rows are read (`ImageHDU.section` on a memory-mapped file).
"""

from __future__ import annotations

import gzip
import io
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, NoConvergence
from astropy.wcs.utils import proj_plane_pixel_scales

TRIMMED = ("IMAGE", "FLAGS", "VARIANCE", "ZODI")
_CENTER_RE = re.compile(r"^\s*([-+]?[\d.]+(?:[eE][-+]?\d+)?)\s*,\s*([-+]?[\d.]+(?:[eE][-+]?\d+)?)\s*([a-z]*)\s*$")
_SIZE_RE = re.compile(r"^\s*([\d.]+(?:[eE][-+]?\d+)?)\s*(?:,\s*([\d.]+(?:[eE][-+]?\d+)?))?\s*([a-z]*)\s*$")
_PIXEL_UNITS = ("px", "pix", "pixel", "pixels")
_DEG_PER_UNIT = {
    "": 1.0,
    "d": 1.0,
    "deg": 1.0,
    "degree": 1.0,
    "degrees": 1.0,
    "rad": 180 / math.pi,
    "arcmin": 1 / 60,
    "arcsec": 1 / 3600,
}


class CutoutError(ValueError):
    """A cutout request that is malformed or does not overlap the image (HTTP 400)."""


@dataclass(frozen=True)
class CutoutSpec:
    """A parsed cutout request: centre (sky deg or 0-based pixels), size (deg or pixels), gzip."""

    center: tuple[float, float]
    center_in_pixels: bool
    size: tuple[float, float]
    size_in_pixels: bool
    gzip: bool = True


def parse_cutout_query(query: Mapping[str, str]) -> CutoutSpec:
    """A CutoutSpec from the URL query; CutoutError on bad syntax."""
    if "center" not in query or "size" not in query:
        raise CutoutError("a cutout needs both center=x,y[units] and size=w[,h][units]")
    m = _CENTER_RE.match(query["center"].lower())
    if not m:
        raise CutoutError(f"bad center {query['center']!r}: expected x,y[px|pix|pixels|deg|rad|arcmin|arcsec]")
    cx, cy, unit = float(m[1]), float(m[2]), m[3]
    if unit in _PIXEL_UNITS:
        center, in_px = (cx, cy), True
    elif unit in _DEG_PER_UNIT:
        center, in_px = (cx * _DEG_PER_UNIT[unit], cy * _DEG_PER_UNIT[unit]), False
        if abs(center[1]) > 90:
            raise CutoutError(f"declination {center[1]} is outside [-90, 90]")
    else:
        raise CutoutError(f"unknown center unit {unit!r}")
    m = _SIZE_RE.match(query["size"].lower())
    if not m:
        raise CutoutError(f"bad size {query['size']!r}: expected w[,h][px|pix|pixels|arcsec|arcmin|deg|rad]")
    w = float(m[1])
    h = float(m[2]) if m[2] else w
    unit = m[3]
    if unit in _PIXEL_UNITS:
        size, size_px = (w, h), True
    elif unit in _DEG_PER_UNIT and unit not in ("d", "degree", "degrees"):
        size, size_px = (w * _DEG_PER_UNIT[unit], h * _DEG_PER_UNIT[unit]), False
    else:
        raise CutoutError(f"unknown size unit {unit!r}")
    if not (w > 0 and h > 0):
        raise CutoutError("size must be positive")
    flag = query.get("gzip", "true").strip().lower()
    if flag not in ("true", "false", "1", "0", "yes", "no"):
        raise CutoutError(f"gzip must be true or false, got {query['gzip']!r}")
    return CutoutSpec(center, in_px, size, size_px, flag in ("true", "1", "yes"))


def cutout_box(header: fits.Header, spec: CutoutSpec) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): 0-based, end-exclusive pixel box of the cutout, clipped to the image."""
    nx, ny = int(header["NAXIS1"]), int(header["NAXIS2"])
    wcs = WCS(header, fix=False)
    if spec.center_in_pixels:
        cx, cy = spec.center
    else:
        cx, cy = _sky_to_pixel(wcs, *spec.center)
    if spec.size_in_pixels:
        w_px, h_px = spec.size
    else:
        scale_deg = proj_plane_pixel_scales(wcs.celestial)
        w_px, h_px = spec.size[0] / scale_deg[0], spec.size[1] / scale_deg[1]
    nw, nh = max(1, round(w_px)), max(1, round(h_px))
    x0 = math.floor(cx + 0.5 - nw / 2)
    y0 = math.floor(cy + 0.5 - nh / 2)
    x1, y1 = min(nx, x0 + nw), min(ny, y0 + nh)
    x0, y0 = max(0, x0), max(0, y0)
    if x1 <= x0 or y1 <= y0:
        raise CutoutError("the requested region does not overlap the image")
    return x0, y0, x1, y1


def _sky_to_pixel(wcs: WCS, ra: float, dec: float) -> tuple[float, float]:
    """0-based pixel of a sky position through the SIP WCS; CutoutError if it is far off the image."""
    ref = SkyCoord(*wcs.wcs.crval, unit="deg")
    if ref.separation(SkyCoord(ra, dec, unit="deg")).deg > 45:
        raise CutoutError("the requested region does not overlap the image")
    try:
        cx, cy = (float(v) for v in wcs.all_world2pix(ra, dec, 0))
    except NoConvergence:
        raise CutoutError("the requested region does not overlap the image") from None
    if not (math.isfinite(cx) and math.isfinite(cy)):
        raise CutoutError("the requested region does not overlap the image")
    return cx, cy


def shift_header(header: fits.Header, x0: int, y0: int) -> fits.Header:
    """Copy of a header with CRPIXn, CRPIXnA, CRPIXnW moved so pixel (0,0) is parent pixel (x0, y0)."""
    hdr = header.copy()
    for suffix in ("", "A", "W"):
        for axis, shift in ((1, x0), (2, y0)):
            key = f"CRPIX{axis}{suffix}"
            if key in hdr:
                hdr[key] = float(hdr[key]) - shift
    for key in ("CHECKSUM", "DATASUM"):
        hdr.remove(key, ignore_missing=True)
    return hdr


def cutout_hdul(hdul: fits.HDUList, spec: CutoutSpec) -> fits.HDUList:
    """The cutout of an open Level-2 file as a new HDUList (7 HDUs, see the module doc)."""
    x0, y0, x1, y1 = cutout_box(hdul["IMAGE"].header, spec)
    out = fits.HDUList([fits.PrimaryHDU(header=hdul[0].header.copy())])
    for hdu in hdul[1:]:
        name = hdu.name
        if name in TRIMMED:
            data = np.asarray(hdu.section[y0:y1, x0:x1])
            header = shift_header(hdu.header, x0, y0)
            if isinstance(hdu, fits.CompImageHDU):  # R7 FLAGS: compressed again, one tile per row
                out.append(fits.CompImageHDU(data=data, header=header, name=name,
                                             compression_type=hdu.compression_type, tile_shape=(1, x1 - x0)))
            else:
                out.append(fits.ImageHDU(data=data, header=header, name=name))
        else:
            out.append(hdu.copy())
    return out


def make_cutout(path: str | Path, spec: CutoutSpec) -> bytes:
    """The cutout file's bytes (gzip-compressed unless `spec.gzip` is false)."""
    with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
        try:
            cut = cutout_hdul(hdul, spec)
        except KeyError as exc:
            raise CutoutError(f"not a Level-2 image: {exc}") from None
        buf = io.BytesIO()
        cut.writeto(buf, output_verify="silentfix")
    body = buf.getvalue()
    return gzip.compress(body, compresslevel=5, mtime=0) if spec.gzip else body
