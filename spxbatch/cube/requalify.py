"""The `good` verdict of a cube recomputed with other rules (SNR threshold, bad flags, disqualifying
conditions), then its spectra and variability, without measuring again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from spxbatch.cube.variability import add_variability
from spxbatch.errors import ConfigError

#: Options fixed when measuring: which measurements exist and which feeds `flux`.
MEASURED_CHOICES = ("photometry", "flux_source")


def requalify(cube: str | Path, photometry: dict[str, Any], output: str | Path | None = None) -> xr.Dataset:
    """Recompute `good` (then the spectrum and variability) with other quality rules, given as overrides of
    the options the cube was measured with; writes `output` (default: the cube itself, replaced atomically).
    `photometry` and `flux_source` cannot change here (ConfigError): they are chosen when measuring."""
    from spxbatch.cube.assemble import combine_spectrum
    from spxbatch.cube.store import open_cube, write_cube
    from spxbatch.photometry.config import photometry_config
    from spxbatch.photometry.quality import good_verdict

    ds = open_cube(cube).load()
    measured_with = json.loads(ds.attrs.get("config", "{}")).get("photometry") or {}
    config = photometry_config({**measured_with, **photometry})
    measured = photometry_config(measured_with)
    for key in MEASURED_CHOICES:
        if getattr(config, key) != getattr(measured, key):
            raise ConfigError(f"{key} is chosen when measuring (this cube: {getattr(measured, key)}); measure "
                              f"again with --{key.replace('_', '-')} {getattr(config, key)}")
    table = {"flags": ds["flags"].values, "condition": ds["condition"].values, "snr": ds["snr"].values,
             "measured": np.ones(ds.sizes["obs"], dtype=bool),
             **{v: ds[v].values for v in ("psf_chi2", "psf_unmasked_fraction") if v in ds}}
    ds["good"] = ("obs", good_verdict(table, config), ds["good"].attrs)
    flux, err, nobs = combine_spectrum(
        ds["source_index"].values, ds["wavelength"].values, ds["band"].values, ds["flux"].values,
        ds["flux_err"].values, ds["good"].values, ds.sizes["source"])
    for name, values in (("spectrum_flux", flux), ("spectrum_err", err), ("spectrum_nobs", nobs)):
        ds[name] = (("source", "channel"), values, ds[name].attrs)
    ds = add_variability(ds)
    ds.attrs["quality_rules"] = json.dumps(config.to_dict())
    write_cube(ds, output or cube)
    return ds

