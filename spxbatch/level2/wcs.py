"""Sky -> parent-frame pixel positions that do not depend on the batch a source is computed with.

astropy's vectorised `all_world2pix` iterates until every point converges, so a point's answer depends
on its batch companions. Here the linear TAN part is inverted exactly (wcslib, per point) and the SIP
distortion by a FIXED number of Newton steps per point, vectorised: the same position for the same
source whatever else is in the call.
"""

from __future__ import annotations

import re
import threading
import warnings
from collections import OrderedDict

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from spxbatch.level2.region import parent_image_header

#: Newton steps on the SIP forward transform; SIP distortions of a few pixels converge to < 1e-12 px
#: in 3 steps, the rest are margin (each step costs two vectorised pix2foc calls).
NEWTON_STEPS = 6
_H = 1e-3  # finite-difference step (px) of the Jacobian; pix2foc is a cubic, so this is exact to ~1e-9


#: Cards of the alternate `W` (WAVE-TAB) WCS: dropped before building the celestial WCS, since wcslib
#: parses every alternate and a -TAB one needs its table HDU.
_WAVE_CARD = re.compile(r"^(WCSAXES|WCSNAME|CTYPE|CUNIT|CRPIX|CRVAL|CDELT|CROTA|PS|PV|PC|CD)[0-9_]*W$")


#: Celestial WCSs built lately, by their IMAGE header's text: every box region of an image carries the same
#: header, and parsing it costs ~7 ms (most of measuring a small region), a copy of the built one ~0.1 ms.
_BUILT: OrderedDict[str, WCS] = OrderedDict()
_BUILT_MAX = 32
_BUILT_LOCK = threading.Lock()


def celestial_wcs(image_header: fits.Header) -> WCS:
    """The celestial WCS (SIP included) of the PARENT frame for an IMAGE header (cutout or not): a copy of
    the one built for an equal header lately (copies, so that callers and threads never share one)."""
    key = image_header.tostring()
    with _BUILT_LOCK:
        built = _BUILT.get(key)
        if built is not None:
            _BUILT.move_to_end(key)
    if built is None:
        built = _build_celestial_wcs(image_header)
        with _BUILT_LOCK:
            _BUILT[key] = built
            while len(_BUILT) > _BUILT_MAX:
                _BUILT.popitem(last=False)
    return built.deepcopy()


def _build_celestial_wcs(image_header: fits.Header) -> WCS:
    """The celestial WCS of the parent frame, parsed from the header (its WAVE alternate dropped)."""
    hdr = parent_image_header(image_header)
    for key in [k for k in hdr if _WAVE_CARD.match(k)]:
        del hdr[key]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(hdr, naxis=2, relax=True)


def sky_to_parent_pixel(
    image_header: fits.Header, ra: np.ndarray, dec: np.ndarray, wcs: WCS | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """0-based parent-frame (x, y) of sky positions (deg), batch-independent to rounding.

    `image_header` is the IMAGE header as fetched (a cutout's shifted CRPIX cards are undone);
    pass `wcs` (from `celestial_wcs`) to skip rebuilding it.
    """
    w = celestial_wcs(image_header) if wcs is None else wcs
    ra = np.atleast_1d(np.asarray(ra, dtype=float))
    dec = np.atleast_1d(np.asarray(dec, dtype=float))
    if ra.size == 0:
        return np.empty(0), np.empty(0)
    foc = w.wcs_world2pix(np.column_stack([ra, dec]), 0)  # the undistorted (focal) pixel, per point
    if w.sip is None and w.cpdis1 is None and w.cpdis2 is None and w.det2im1 is None:
        return foc[:, 0].copy(), foc[:, 1].copy()
    pix = foc.copy()
    if w.sip is not None and w.sip.ap is not None:
        pix = w.sip_foc2pix(foc, 0)  # the header's inverse polynomial: a good start
    dx = np.array([_H, 0.0])
    dy = np.array([0.0, _H])
    for _ in range(NEWTON_STEPS):
        f0 = w.pix2foc(pix, 0)
        jx = (w.pix2foc(pix + dx, 0) - f0) / _H
        jy = (w.pix2foc(pix + dy, 0) - f0) / _H
        r = foc - f0
        det = jx[:, 0] * jy[:, 1] - jy[:, 0] * jx[:, 1]
        pix = pix + np.column_stack(
            [(r[:, 0] * jy[:, 1] - jy[:, 0] * r[:, 1]) / det, (jx[:, 0] * r[:, 1] - r[:, 0] * jx[:, 1]) / det]
        )
    bad = ~np.isfinite(ra) | ~np.isfinite(dec)
    pix[bad] = np.nan
    return pix[:, 0].copy(), pix[:, 1].copy()
