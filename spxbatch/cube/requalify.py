"""The `good` verdict of a cube recomputed with other rules (SNR threshold, bad flags, disqualifying
conditions), then its spectra, variability and source releases, without measuring again: block by block of
sources, so a cube larger than memory is requalified in the memory of one block.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from spxbatch.cube.blocks import BLOCK_ROWS, SourceRange, source_ranges, store_chunk
from spxbatch.cube.regions import consolidate, write_region
from spxbatch.cube.store import check_replaceable, open_cube
from spxbatch.errors import ConfigError
from spxbatch.files import atomic_path

#: Options fixed when measuring: which measurements exist and which feeds `flux`.
MEASURED_CHOICES = ("photometry", "flux_source")
#: The per-measurement variables the verdict, spectra, variability and releases read.
QUALITY_INPUTS = ("source_index", "flags", "condition", "snr", "psf_chi2", "psf_unmasked_fraction", "wavelength",
                  "band", "flux", "flux_err", "release", "pipeline_version")


def requalify(cube: str | Path, photometry: dict[str, Any], output: str | Path | None = None,
              block_rows: int = BLOCK_ROWS) -> xr.Dataset:
    """Recompute `good` (then the spectra, variability statistics and source releases) with other quality
    rules, given as overrides of the options the cube was measured with, reading `block_rows` measurements at
    a time; writes `output` (default: the cube itself, replaced atomically) and returns it opened.
    `photometry` and `flux_source` cannot change here (ConfigError): they are chosen when measuring."""
    from spxbatch.photometry.config import photometry_config

    cube = Path(cube)
    target = Path(output) if output is not None else cube
    ds = open_cube(cube)
    measured_with = json.loads(ds.attrs.get("config", "{}")).get("photometry") or {}
    config = photometry_config({**measured_with, **photometry})
    measured = photometry_config(measured_with)
    for key in MEASURED_CHOICES:
        if getattr(config, key) != getattr(measured, key):
            raise ConfigError(f"{key} is chosen when measuring (this cube: {getattr(measured, key)}); measure "
                              f"again with --{key.replace('_', '-')} {getattr(config, key)}")
    check_replaceable(target)
    obs_chunk, source_chunk = store_chunk(ds, "good"), store_chunk(ds, "spectrum_flux")
    with atomic_path(target) as tmp:
        shutil.copytree(cube, tmp, copy_function=_link_or_copy)
        for block in source_ranges(ds, block_rows, align=source_chunk):
            obs, per_source = requalify_block(ds, block, config)
            write_region(tmp, obs, "obs", block.obs_start, obs_chunk, ds.sizes["obs"])
            write_region(tmp, per_source, "source", block.first, source_chunk, ds.sizes["source"])
        zarr.open_group(str(tmp), mode="r+", zarr_format=3).attrs["quality_rules"] = json.dumps(config.to_dict())
        consolidate(tmp)
    return open_cube(target)


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link to the original chunk where the filesystem allows (Zarr replaces a chunk it rewrites by
    rename, so the original cube is never changed through the link), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def requalify_block(ds: xr.Dataset, block: SourceRange, config: Any) -> tuple[xr.Dataset, xr.Dataset]:
    """The new `good` of a block of sources' measurements, and those sources' spectra, variability
    statistics and source releases, computed from their rows alone (every statistic is per source)."""
    from spxbatch.cube.assemble import combine_spectrum, source_releases
    from spxbatch.cube.variability import add_variability
    from spxbatch.photometry.quality import good_verdict

    first, stop, o0, o1 = block
    rows = ds[[v for v in QUALITY_INPUTS if v in ds]].isel(obs=slice(o0, o1)).load()
    table = {"flags": rows["flags"].values, "condition": rows["condition"].values, "snr": rows["snr"].values,
             "measured": np.ones(o1 - o0, dtype=bool),
             **{v: rows[v].values for v in ("psf_chi2", "psf_unmasked_fraction") if v in rows}}
    good = good_verdict(table, config)
    local = rows["source_index"].values.astype(np.int64) - first
    n = stop - first
    flux, err, nobs = combine_spectrum(local, rows["wavelength"].values, rows["band"].values, rows["flux"].values,
                                       rows["flux_err"].values, good, n)
    attrs = {name: ds[name].attrs for name in ds.data_vars}
    block = xr.Dataset({
        "source_index": ("obs", local), "band": ("obs", rows["band"].values),
        "wavelength": ("obs", rows["wavelength"].values), "flux": ("obs", rows["flux"].values),
        "flux_err": ("obs", rows["flux_err"].values), "good": ("obs", good),
        **{name: (("source", "channel"), values) for name, values in
           (("spectrum_flux", flux), ("spectrum_err", err), ("spectrum_nobs", nobs))}})
    block = add_variability(block)
    per_source = block[[v for v in block.data_vars if block[v].dims[:1] == ("source",)]]
    if "release" in rows and "source_releases" in ds:
        m = pd.DataFrame({"source_index": local, "good": good, "release": rows["release"].values,
                          "pipeline_version": rows["pipeline_version"].values})
        per_source = per_source.assign(source_releases=("source", source_releases(n, m)))
    per_source = per_source.drop_vars("band_id", errors="ignore")
    for name in per_source.data_vars:
        per_source[name].attrs = attrs.get(name, {})
    obs = xr.Dataset({"good": ("obs", good, attrs["good"])})
    return obs, per_source
