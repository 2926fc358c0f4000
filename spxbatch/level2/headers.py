"""What a Level-2 file's own headers say about it, in the columns IRSA's TAP tables give: observation ID,
detector, times, wavelength bounds, footprint corners, processing version, frame size and cutout origin.

A local mirror is planned from this record instead of a TAP query (`plan.index`); the simulated archive
builds its TAP tables from it too.
"""

from __future__ import annotations

import re

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS

from spxbatch.level2.constants import BANDS, EXPOSURE_S, TIME_BOUNDS_SPAN_S
from spxbatch.level2.region import parent_image_header, parent_origin

#: Primary-header card naming the collection (wide / deep), and the collection when it is absent.
COLLECTION_CARD = "COLLECTN"
DEFAULT_COLLECTION = "spherex_qr2"
#: Pixels per axis at which the spectral WCS is evaluated for the energy bounds.
_WAVE_GRID = 9
_SIP_RE = re.compile(r"^(A|B|AP|BP)_(\d+_\d+|ORDER|DMAX)$")


def image_record(hdul: fits.HDUList) -> dict:
    """The index columns of one opened Level-2 image or cutout (headers and the WCS-WAVE table only):
    obs_id, detector, band, pipeline_version, version (PROCTAG), collection, mjd_start/end, time_bounds
    (MJD-BEG + 115.12 s, the span IRSA's TAP shows), energy_bounds (m), ra/dec of the centre, ra1..ra4 and
    dec1..dec4 of the corners, nx, ny, is_cutout and the parent origin x0, y0."""
    primary = hdul[0].header
    hdr = hdul["IMAGE"].header
    if "OBSID" not in hdr:
        raise ValueError("no OBSID card in the IMAGE header: not a Level-2 image")
    detector = int(hdr["DETECTOR"])
    nx, ny = int(hdr["NAXIS1"]), int(hdr["NAXIS2"])
    ra, dec = frame_corners(hdr, nx, ny, centre=True)
    lo, hi = energy_bounds(hdul, hdr, nx, ny, detector)
    x0, y0 = parent_origin(hdr)
    mjd_beg = float(hdr["MJD-BEG"])
    out = {
        "obs_id": str(hdr["OBSID"]),
        "detector": detector,
        "band": BANDS[detector].name,
        "pipeline_version": str(primary.get("VERSION", "")),
        "version": str(primary.get("PROCTAG", "")),
        "collection": str(primary.get(COLLECTION_CARD, DEFAULT_COLLECTION)),
        "mjd_start": mjd_beg,
        "mjd_end": float(hdr.get("MJD-END", mjd_beg + EXPOSURE_S / 86400)),
        "time_bounds_lower": mjd_beg,
        "time_bounds_upper": mjd_beg + TIME_BOUNDS_SPAN_S / 86400,
        "energy_bounds_lower": lo,
        "energy_bounds_upper": hi,
        "ra": float(ra[4] % 360.0),
        "dec": float(dec[4]),
        "nx": nx,
        "ny": ny,
        "is_cutout": (x0, y0) != (0, 0),
        "x0": x0,
        "y0": y0,
    }
    for i in range(4):
        out[f"ra{i + 1}"] = float(ra[i] % 360.0)
        out[f"dec{i + 1}"] = float(dec[i])
    return out


def frame_corners(image_header: fits.Header, nx: int, ny: int, centre: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees of the frame's outer pixel corners (-0.5,-0.5), (nx-0.5,-0.5), (nx-0.5,ny-0.5),
    (-0.5,ny-0.5) through the header's full (SIP) WCS, then, with `centre`, of its central pixel."""
    cx = [-0.5, nx - 0.5, nx - 0.5, -0.5] + ([(nx - 1) / 2] if centre else [])
    cy = [-0.5, -0.5, ny - 0.5, ny - 0.5] + ([(ny - 1) / 2] if centre else [])
    return WCS(image_header, fix=False).all_pix2world(np.array(cx), np.array(cy), 0)


def parent_corners(image_header: fits.Header, parent_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The corners (ra in [0, 360), dec) of a cutout's PARENT frame of (ny, nx) pixels."""
    ny, nx = parent_shape
    ra, dec = frame_corners(parent_image_header(image_header), nx, ny)
    return ra % 360.0, dec


def energy_bounds(hdul: fits.HDUList, hdr: fits.Header, nx: int, ny: int, detector: int) -> tuple[float, float]:
    """(min, max) wavelength in metres covered by the image (lambda -/+ bandwidth/2) from WCS 'W'; the
    band's TAP bounds when the spectral WCS cannot be evaluated."""
    try:
        wave = WCS(_without_sip(hdr), fobj=hdul, key="W", fix=False)
        gx, gy = np.meshgrid(np.linspace(0, nx - 1, _WAVE_GRID), np.linspace(0, ny - 1, _WAVE_GRID))
        lam, dlam = wave.all_pix2world(gx.ravel(), gy.ravel(), 0)
        to_m = [u.Unit(c).to(u.m) for c in wave.wcs.cunit]
        lo = np.nanmin(lam * to_m[0] - dlam * to_m[1] / 2)
        hi = np.nanmax(lam * to_m[0] + dlam * to_m[1] / 2)
        if np.isfinite(lo) and np.isfinite(hi) and hi > lo > 0:
            return float(lo), float(hi)
    except Exception:  # no or broken spectral WCS: fall back to the band's bounds
        pass
    band = BANDS[detector]
    return band.lo_um * 1e-6, band.hi_um * 1e-6


def _without_sip(hdr: fits.Header) -> fits.Header:
    """A copy without SIP cards (astropy would attach the celestial SIP to the spectral WCS, and log it)."""
    out = hdr.copy()
    for key in [k for k in out if _SIP_RE.match(k)]:
        del out[key]
    return out
