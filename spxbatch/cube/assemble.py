"""The output contract: one xarray Dataset (Zarr v3) of ragged per-source measurements plus a spectral cube.

Dimensions: `source` (catalog order), `obs` (CF contiguous ragged array grouped by source, (mjd, band) order
within a source), `channel` (102 SPHEREx channels) and `failure` (fetch or measurement failures, kept so that
nothing is lost silently). See ../shared/docs/design.md, "Output schema".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from spxbatch import __version__
from spxbatch.cube.channels import channel_centers_um, channel_index
from spxbatch.cube.store import CUBE_TITLE
from spxbatch.cube.variability import add_variability

N_CHANNELS = 102


#: Per-measurement variables: name -> (dtype, units, long_name). Extra photometry columns are kept too.
OBS_VARIABLES: dict[str, tuple[str, str, str]] = {
    "source_index": ("int64", "1", "index into the source dimension"),
    "flux": ("float64", "uJy", "total flux (aperture-corrected when the dataset attribute says so)"),
    "flux_err": ("float64", "uJy", "1-sigma uncertainty of flux"),
    "flux_aperture": ("float64", "uJy", "background-subtracted aperture sum before any correction"),
    "aperture_correction": ("float64", "1", "factor from aperture flux to total flux (PSF enclosed fraction)"),
    "wavelength": ("float64", "um", "central wavelength at the source pixel"),
    "bandwidth": ("float64", "um", "bandwidth at the source pixel"),
    "mjd": ("float64", "d", "mid-exposure modified Julian date (UTC)"),
    "band": ("int8", "1", "SPHEREx detector band 1..6"),
    "obs_id": ("str", "", "SPHEREx observation ID"),
    "flags": ("int32", "1", "OR of the file's FLAGS bits inside the aperture"),
    "condition": ("int64", "1", "measurement condition bits (32 and up): edge, bad pixel, blend, background"),
    "good": ("bool", "1", "quality verdict: recommended for science"),
    "detected": ("bool", "1", "SNR at or above the detection threshold"),
    "snr": ("float64", "1", "flux / flux_err"),
    "x": ("float64", "pixel", "0-based x in the full parent image"),
    "y": ("float64", "pixel", "0-based y in the full parent image"),
    "aperture_radius": ("float64", "pixel", "aperture radius"),
    "background": ("float64", "MJy/sr", "local background per pixel"),
    "background_err": ("float64", "MJy/sr", "uncertainty of the local background per pixel"),
    "zodi_scale": ("float64", "1", "fitted scale of the ZODI model that was subtracted"),
    "flux_psf": ("float64", "uJy", "forced PSF-fit flux, fitted jointly with overlapping catalog neighbours"),
    "flux_psf_err": ("float64", "uJy", "1-sigma uncertainty of flux_psf, from the fit covariance"),
    "psf_chi2": ("float64", "1", "reduced chi-square of the PSF fit of the source's group"),
    "psf_blendedness": ("float64", "1", "fraction of the model flux in the source's footprint from its neighbours"),
    "psf_unmasked_fraction": ("float64", "1", "PSF-weighted fraction of the source's fit pixels not masked"),
    "psf_group_size": ("int32", "1", "sources fitted jointly, this one included (1: isolated; 0: not fitted)"),
    "release": ("str", "", "release folder of the file measured (qr2, qr3)"),
    "processing": ("str", "", "processing tag of the file measured, e.g. l2b-v26-2026-196"),
    "pipeline_version": ("str", "", "pipeline VERSION of the file measured (6.x: QR2 layout, 7.x: R7)"),
    "psf_model": ("str", "", "PSF model used: the file's own, average_psf, or QR3's ePSF (qr3 epsf)"),
    "calibration": ("str", "", "calibration planes used, e.g. solid_angle_pixel_map/IMAGE (absent ones fell back: "
                               "solid angle from the WCS, wavelengths from WCS-WAVE)"),
    "position_mjd": ("float64", "d", "MJD the source position was moved to by its proper motion (NaN: none)"),
    "flux_factor": ("float64", "1", "flux correction applied at the source pixel (QR3 l3_flux_corrections; 1: none)"),
    "date_added": ("str", "", "UTC time (ISO 8601) the measurement was made and added to the cube; "
                              "`spxbatch update` keeps it for the measurements it carries over"),
}


#: Columns of the failure table: one row per (source, image) that could not be measured.
FAILURE_VARIABLES: dict[str, tuple[str, str, str]] = {
    "failure_source_index": ("int64", "1", "index into the source dimension"),
    "failure_obs_id": ("str", "", "observation ID of the image that failed"),
    "failure_band": ("int8", "1", "band of the image that failed"),
    "failure_url": ("str", "", "where the image was read from"),
    "failure_reason": ("str", "", "why it failed"),
}


def _as_dtype(values: Any, dtype: str) -> np.ndarray:
    """Column values in the schema dtype; strings become object arrays (Zarr v3's variable-length string)."""
    if dtype == "str":
        return np.asarray(values, dtype=object).astype(str).astype(object)
    return np.asarray(values).astype(dtype)


#: The failure table's column behind each failure variable.
FAILURE_COLUMNS = {"failure_source_index": "source_index", "failure_obs_id": "obs_id", "failure_band": "band",
                   "failure_url": "url", "failure_reason": "reason"}


def failure_variables(failures: pd.DataFrame) -> dict[str, tuple[str, np.ndarray, dict[str, str]]]:
    """The cube's `failure` variables of a failure table (source_index, obs_id, band, url, reason), rows in
    the table's order: one definition for the whole cube and for a slice of it written on its own."""
    out = {}
    for var, col in FAILURE_COLUMNS.items():
        dtype, units, long_name = FAILURE_VARIABLES[var]
        out[var] = ("failure", _as_dtype(failures[col].to_numpy(), dtype), {"units": units, "long_name": long_name})
    return out


def combine_spectrum(
    source_index: np.ndarray, wavelength: np.ndarray, band: np.ndarray, flux: np.ndarray,
    flux_err: np.ndarray, good: np.ndarray, n_sources: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse-variance combination of the good measurements per (source, channel).

    Returns (flux, err, nobs), each (n_sources, 102); NaN where a channel has no good measurement.
    """
    chan = channel_index(wavelength, band)
    use = good & (chan >= 0) & np.isfinite(flux) & np.isfinite(flux_err) & (flux_err > 0)
    cell = source_index[use] * N_CHANNELS + chan[use]
    w = 1.0 / flux_err[use] ** 2
    size = n_sources * N_CHANNELS
    sw = np.bincount(cell, weights=w, minlength=size)
    swf = np.bincount(cell, weights=w * flux[use], minlength=size)
    nobs = np.bincount(cell, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(sw > 0, swf / sw, np.nan)
        err = np.where(sw > 0, 1.0 / np.sqrt(sw), np.nan)
    shape = (n_sources, N_CHANNELS)
    return mean.reshape(shape), err.reshape(shape), nobs.reshape(shape).astype(np.int32)


def source_releases(n_sources: int, m: pd.DataFrame) -> np.ndarray:
    """Per source, the releases and pipeline majors its good measurements come from, e.g. 'qr2/6, qr2/7,
    qr3/7' ('' when none): which processings its spectrum and variability statistics mix."""
    out = np.full(n_sources, "", dtype=object)
    if "release" not in m.columns or m.empty:
        return out
    good = m[m["good"].to_numpy(bool)]
    versions = good["pipeline_version"].astype(str)
    known = pd.Series(pd.unique(versions))  # a few distinct versions: parse each once
    major = known.str.extract(r"^\s*v?(\d+)", expand=False).fillna("?")
    label = good["release"].astype(str) + "/" + versions.map(dict(zip(known, major, strict=True)))
    # each source's set of labels as a bit mask over the few distinct labels (Python ints beyond 64 of them)
    labels, code = np.unique(label.to_numpy(object), return_inverse=True)
    dtype = np.uint64 if len(labels) <= 64 else object
    mask = np.zeros(n_sources, dtype=dtype) if dtype is np.uint64 else np.full(n_sources, 0, dtype=object)
    np.bitwise_or.at(mask, good["source_index"].to_numpy(np.int64),
                     np.left_shift(np.ones(len(code), dtype=dtype), code.astype(dtype)))
    has = mask != 0
    sets, which = np.unique(mask[has], return_inverse=True)
    text = [", ".join(labels[k] for k in range(len(labels)) if (int(u) >> k) & 1) for u in sets]
    out[has] = np.array(text, dtype=object)[which] if text else []
    return out


def source_status(n_sources: int, source_index: np.ndarray, failures: pd.DataFrame,
                  planned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per source: 'ok' (measured at least once), 'failed' (planned, never measured, and some image failed)
    or 'no_coverage' (no image holds it measurably); with a one-line detail.

    Only rows whose reason starts with 'failed' count as failures; the others (off the image, at the edge)
    are recorded in the cube but are not faults."""
    measured = np.bincount(source_index, minlength=n_sources)
    status = np.where(measured > 0, "ok", "no_coverage").astype(object)
    detail = np.where(measured > 0, "", "no SPHEREx image covers this position").astype(object)
    planned_only = (measured == 0) & planned
    detail[planned_only] = "planned images hold no measurable aperture (edge or off-image)"
    failures = failures[failures["reason"].astype(str).str.startswith("failed")]
    if len(failures):
        fail_idx = failures["source_index"].to_numpy()
        n_fail = np.bincount(fail_idx, minlength=n_sources)
        first = failures.drop_duplicates("source_index")
        status[(measured == 0) & (n_fail > 0)] = "failed"
        reasons = dict(zip(first["source_index"], first["reason"].astype(str), strict=True))
        for i in np.flatnonzero(n_fail > 0):  # failed sources, and measured ones that lost some images
            detail[i] = f"{n_fail[i]} image(s) failed; first: {reasons[i]}"
    return status, detail


def assemble_cube(
    names: np.ndarray, ra: np.ndarray, dec: np.ndarray, measurements: pd.DataFrame,
    failures: pd.DataFrame | None = None, planned: np.ndarray | None = None,
    attrs: dict[str, Any] | None = None,
) -> xr.Dataset:
    """Build the Dataset of the schema from the catalog and the concatenated measurement rows.

    `measurements` needs `source_index` and the schema's per-measurement columns; rows are reordered
    into the ragged layout (by source, then mjd, band, obs_id). `planned` marks sources that had images.
    """
    n = len(names)
    failures = failures if failures is not None else pd.DataFrame(
        {c: [] for c in ("source_index", "obs_id", "band", "url", "reason")})
    if measurements.empty:  # nothing measured (e.g. the archive was down): the schema's columns, no rows
        measurements = pd.DataFrame({c: np.array([], dtype=object if d == "str" else d)
                                     for c, (d, _, _) in OBS_VARIABLES.items()})
    m = measurements.sort_values(["source_index", "mjd", "band", "obs_id"], kind="stable")
    m = m.reset_index(drop=True)
    sidx = m["source_index"].to_numpy(dtype=np.int64)
    row_size = np.bincount(sidx, minlength=n).astype(np.int64)
    obs_start = np.concatenate([[0], np.cumsum(row_size)[:-1]]).astype(np.int64)
    planned = planned if planned is not None else row_size > 0
    status, detail = source_status(n, sidx, failures, planned)

    data_vars: dict[str, Any] = {}
    for col in m.columns:
        dtype, units, long_name = OBS_VARIABLES.get(col, (None, "", col.replace("_", " ")))
        values = m[col].to_numpy()
        if dtype is None:
            dtype = "str" if values.dtype == object else values.dtype.str
        data_vars[col] = ("obs", _as_dtype(values, dtype), {"units": units, "long_name": long_name})
    data_vars["row_size"] = ("source", row_size, {
        "units": "1", "long_name": "number of measurements of this source", "sample_dimension": "obs"})
    data_vars["obs_start"] = ("source", obs_start, {"units": "1", "long_name": "first obs of this source"})
    data_vars["ra"] = ("source", np.asarray(ra, float), {"units": "deg", "long_name": "catalog right ascension"})
    data_vars["dec"] = ("source", np.asarray(dec, float), {"units": "deg", "long_name": "catalog declination"})
    data_vars["status"] = ("source", status, {"units": "", "long_name": "ok / no_coverage / failed"})
    data_vars["status_detail"] = ("source", detail, {"units": "", "long_name": "reason for the status"})
    data_vars["source_releases"] = ("source", source_releases(n, m), {
        "units": "", "long_name": "releases and pipelines of the good measurements behind spectra and statistics"})

    spec, spec_err, nobs = combine_spectrum(
        sidx, m["wavelength"].to_numpy(float), m["band"].to_numpy(int), m["flux"].to_numpy(float),
        m["flux_err"].to_numpy(float), m["good"].to_numpy(bool), n)
    data_vars["spectrum_flux"] = (("source", "channel"), spec, {
        "units": "uJy", "long_name": "inverse-variance mean of good measurements in the channel"})
    data_vars["spectrum_err"] = (("source", "channel"), spec_err, {
        "units": "uJy", "long_name": "1-sigma uncertainty of spectrum_flux"})
    data_vars["spectrum_nobs"] = (("source", "channel"), nobs, {
        "units": "1", "long_name": "good measurements combined in the channel"})
    centers, bands = channel_centers_um()
    data_vars["channel_wavelength"] = ("channel", centers, {"units": "um", "long_name": "channel centre"})
    data_vars["channel_band"] = ("channel", bands.astype(np.int8), {"units": "1", "long_name": "channel band"})

    data_vars.update(failure_variables(failures))

    ds = xr.Dataset(
        data_vars,
        coords={"source": ("source", _as_dtype(names, "str"), {"units": "", "long_name": "catalog name"})},
    )
    ds.attrs.update({
        "title": CUBE_TITLE,
        "software": f"spxbatch {__version__}",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "featureType": "timeSeries",
        "Conventions": "CF-1.10",
    })
    ds.attrs.update(attrs or {})
    return add_variability(ds)

