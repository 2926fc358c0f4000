"""The output table of measure_region as data: every column, its dtype, its value for a source that is
not measured, and what it means. One row per input source, in input order."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from spxbatch.level2.region import ImageRegion
from spxbatch.photometry.positions import STATUS_DTYPE


class Column(NamedTuple):
    """One output column: numpy dtype (None: as given), fill for a source not measured (None: always
    given, per image or per source), and its meaning with units."""

    dtype: str | None
    fill: Any
    meaning: str


COLUMNS: dict[str, Column] = {
    "source_index": Column(None, None, "index of the source in the caller's catalog"),
    "flux": Column("float64", np.nan,
                   "uJy, total flux: the aperture flux (aperture-corrected when aperture_correction is on) or "
                   "flux_psf, as flux_source says"),
    "flux_err": Column("float64", np.nan, "uJy, error of flux"),
    "flux_aperture": Column("float64", np.nan, "uJy, background-subtracted aperture sum before correction"),
    "aperture_correction": Column("float64", np.nan, "factor applied to the aperture sum (1 / fraction)"),
    "flux_psf": Column("float64", np.nan, "uJy, forced PSF flux (fitted with its neighbours and a local constant)"),
    "flux_psf_err": Column("float64", np.nan, "uJy, error of flux_psf (from the fit covariance)"),
    "psf_chi2": Column("float64", np.nan, "reduced chi-square of the PSF fit over the source's box"),
    "psf_blendedness": Column("float64", np.nan, "share of the model light in the source's box from other sources"),
    "psf_unmasked_fraction": Column("float64", np.nan, "PSF-weighted fraction of the source's box that is usable"),
    "psf_group_size": Column("int32", 0, "sources fitted jointly with this one (itself included)"),
    "wavelength": Column("float64", np.nan, "um, at the source pixel"),
    "bandwidth": Column("float64", np.nan, "um, at the source pixel"),
    "mjd": Column("float64", None, "mid-exposure MJD"),
    "band": Column("int8", None, "detector 1..6"),
    "obs_id": Column("object", None, "the exposure's OBSID"),
    "flags": Column("int32", 0, "OR of the FLAGS bits touching the aperture"),
    "condition": Column("int64", 0, "the measurement's own bits (conditions.CONDITION_BITS)"),
    "measured": Column("bool", False, "a finite flux and error were measured"),
    "detected": Column("bool", False, "measured and snr >= snr_threshold"),
    "good": Column("bool", False, "the quality verdict (quality.good_verdict)"),
    "snr": Column("float64", np.nan, "flux / flux_err"),
    "x": Column("float64", None, "0-based pixel position in the parent frame"),
    "y": Column("float64", None, "0-based pixel position in the parent frame"),
    "aperture_radius": Column("float64", np.nan, "px"),
    "background": Column("float64", np.nan, "MJy/sr per pixel after zodi subtraction"),
    "background_err": Column("float64", np.nan, "MJy/sr per pixel, error of background"),
    "background_npix": Column("int32", 0, "background pixels used"),
    "zodi_scale": Column("float64", np.nan, "factor applied to the ZODI plane"),
    "psf_zone": Column("int16", -1, "0-based PSF zone (-1: no PSF)"),
    "fwhm": Column("float64", np.nan, "native px, of the source's PSF zone (fallback_fwhm without a PSF)"),
    "pixel_solid_angle": Column("float64", np.nan, "arcsec^2, of the source pixel"),
    "flux_factor": Column("float64", np.nan,
                          "flux correction applied at the source pixel (QR3's l3_flux_corrections; 1: none)"),
    "status": Column(STATUS_DTYPE, "ok", "ok, or why not measured (positions.FramePositions, no_background, "
                                         "no_pixels)"),
}


def empty_table(n: int, given: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The output columns for n sources: `given` values (arrays, or one value for every row) where given,
    else each column's fill (a source not measured)."""
    out = {}
    for name, col in COLUMNS.items():
        value = given.get(name, col.fill)
        if value is None:
            raise KeyError(f"column {name!r} has no fill: it must be given")
        out[name] = np.asarray(value, dtype=col.dtype) if np.ndim(value) else np.full(n, value, dtype=col.dtype)
    return out


def _card(region: ImageRegion, key: str, default: Any = None) -> Any:
    """A header card from IMAGE, else PRIMARY."""
    for h in (region.image_header, region.primary_header):
        if key in h:
            return h[key]
    return default


def image_columns(region: ImageRegion) -> dict[str, Any]:
    """The columns every row of one image shares: mid-exposure MJD, band (DETECTOR) and OBSID."""
    mjd_beg = _card(region, "MJD-BEG")
    mjd_end = _card(region, "MJD-END")
    if mjd_beg is not None and mjd_end is not None:
        mjd = 0.5 * (float(mjd_beg) + float(mjd_end))
    else:
        mjd = float(_card(region, "MJD-AVG", _card(region, "MJD-OBS", np.nan)))
    return {"mjd": mjd, "band": int(_card(region, "DETECTOR", 0)), "obs_id": str(_card(region, "OBSID", ""))}
