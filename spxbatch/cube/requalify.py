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


def requalify(cube: str | Path, photometry: dict[str, Any], output: str | Path | None = None) -> xr.Dataset:
    """Recompute `good` (then the spectrum and variability) with other quality rules; writes `output`
    (default: the cube itself, replaced atomically)."""
    from spxbatch.cube.assemble import combine_spectrum
    from spxbatch.cube.store import open_cube, write_cube
    from spxbatch.photometry.config import photometry_config
    from spxbatch.photometry.quality import good_verdict

    config = photometry_config(photometry)
    ds = open_cube(cube).load()
    table = {"flags": ds["flags"].values, "condition": ds["condition"].values, "snr": ds["snr"].values,
             "measured": np.ones(ds.sizes["obs"], dtype=bool)}
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

