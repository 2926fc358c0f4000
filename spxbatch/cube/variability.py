"""Per-source, per-band variability statistics of a cube (weighted mean, reduced chi-square of a constant
relative to the source's own spectrum, excess-RMS amplitude).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from spxbatch.cube.channels import channel_centers_um, channel_index
from spxbatch.level2.constants import BANDS

N_BANDS = len(BANDS)


def spectrum_model(spectrum_flux: np.ndarray, source: np.ndarray, channel: np.ndarray,
                   wavelength: np.ndarray) -> np.ndarray:
    """The source's channel-mean spectrum interpolated linearly in wavelength to each measurement, using the
    neighbouring channel of the same band on the measurement's side (flat where that channel is empty)."""
    centers, bands = channel_centers_um()
    side = np.where(wavelength >= centers[channel], 1, -1)
    other = np.clip(channel + side, 0, len(centers) - 1)
    here = spectrum_flux[source, channel]
    there = spectrum_flux[source, other]
    usable = (bands[other] == bands[channel]) & (other != channel) & np.isfinite(there)
    with np.errstate(invalid="ignore", divide="ignore"):  # unusable neighbours (same channel, NaN) give 0
        slope = np.where(usable, (there - here) / (centers[other] - centers[channel]), 0.0)
    return here + slope * (wavelength - centers[channel])


def variability_statistics(
    source_index: np.ndarray, band: np.ndarray, wavelength: np.ndarray, flux: np.ndarray, flux_err: np.ndarray,
    good: np.ndarray, spectrum_flux: np.ndarray,
) -> dict[str, np.ndarray]:
    """Per (source, band), over good measurements: weighted mean flux and its error, the reduced chi-square
    of a constant, and a robust amplitude.

    The constant-in-time model is the source's channel-mean spectrum interpolated to each measurement's
    wavelength, not one flux per band: a band spans a factor ~1.5 in wavelength, so a flat model would
    call every sloped spectrum variable. The chi-square sums over
    the band's channels; its degrees of freedom are the good points minus the channels they fill.
    The amplitude is the excess RMS of the residuals from that model over the errors (uJy): an estimate
    of the intrinsic scatter, zero for a constant source.
    """
    n_sources = spectrum_flux.shape[0]
    chan = channel_index(wavelength, band)
    use = good & (chan >= 0) & np.isfinite(flux) & np.isfinite(flux_err) & (flux_err > 0)
    s, b, c = source_index[use], band[use].astype(np.int64) - 1, chan[use]
    f, e = flux[use], flux_err[use]
    cell = s * N_BANDS + b
    size = n_sources * N_BANDS
    w = 1.0 / e**2
    sw = np.bincount(cell, weights=w, minlength=size)
    swf = np.bincount(cell, weights=w * f, minlength=size)
    n = np.bincount(cell, minlength=size)
    resid = f - spectrum_model(spectrum_flux, s, c, wavelength[use])
    chi2 = np.bincount(cell, weights=(resid / e) ** 2, minlength=size)
    # channels filled per (source, band): unique (source, channel) pairs counted into their band cell
    pairs = np.unique(s * 1000 + c)
    n_chan = np.bincount((pairs // 1000) * N_BANDS + (pairs % 1000) // 17, minlength=size)
    dof = n - n_chan
    mean_r2 = np.bincount(cell, weights=resid**2, minlength=size)
    mean_e2 = np.bincount(cell, weights=e**2, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        amplitude = np.where(dof > 0, np.sqrt(np.maximum(mean_r2 - mean_e2, 0.0) / np.maximum(n, 1)), np.nan)
        out = {
            "var_mean_flux": np.where(sw > 0, swf / sw, np.nan),
            "var_mean_err": np.where(sw > 0, 1 / np.sqrt(sw), np.nan),
            "var_chi2_red": np.where(dof > 0, chi2 / dof, np.nan),
            "var_amplitude": amplitude,
            "var_ngood": n.astype(np.int32),
        }
    return {k: v.reshape(n_sources, N_BANDS) for k, v in out.items()}


VARIABILITY_ATTRS: dict[str, tuple[str, str]] = {
    "var_mean_flux": ("uJy", "inverse-variance mean of the good measurements in the band"),
    "var_mean_err": ("uJy", "1-sigma uncertainty of var_mean_flux"),
    "var_chi2_red": ("1", "reduced chi-square of a constant-in-time flux per channel, over the band"),
    "var_amplitude": ("uJy", "excess RMS of residuals from the channel-mean spectrum over the errors"),
    "var_ngood": ("1", "good measurements in the band"),
}


def add_variability(ds: xr.Dataset) -> xr.Dataset:
    """The cube with the (source, band_id) variability statistics (re)computed from its good points."""
    stats = variability_statistics(
        ds["source_index"].values, ds["band"].values, ds["wavelength"].values, ds["flux"].values,
        ds["flux_err"].values, ds["good"].values.astype(bool), ds["spectrum_flux"].values)
    for name, values in stats.items():
        units, long_name = VARIABILITY_ATTRS[name]
        ds[name] = (("source", "band_id"), values, {"units": units, "long_name": long_name})
    ds = ds.assign_coords(band_id=("band_id", np.arange(1, N_BANDS + 1, dtype=np.int8),
                                   {"units": "1", "long_name": "SPHEREx band"}))
    return ds

