"""The injected truth of a simulated archive, collected file by file and written to `root/truth/`.

- `sources.csv` (every injected source and its spectrum model), `catalog.csv` (name, ra, dec);
- `measurements.parquet`: one row per (source, file) with the source's centre on the image: position,
  wavelength, flux, PSF zone, pixel-quality summaries, and the file's processing (`version` tag,
  `pipeline_version`, `release` folder, `layout` QR2/R7, `superseded`: a newer processing of the same
  exposure and detector exists, so a correct tool measures only the rows with `superseded` False);
  `file_gain` (IMAGE in this file = true x file_gain near the source) and `l3_flux_factor` (what QR3's
  l3_flux_corrections multiply this file's IMAGE by; 1 where there is nothing to apply);
- `defects.parquet`: every pixel altered on purpose, with its kind and final FLAGS bits;
- `files.csv`: one row per planned image (missing ones with `present` False);
- `calibration.csv`: every calibration file, its release, tag and whether it is the current delivery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from spxbatch.sim.releases import FileJob, Processing
from spxbatch.sim.render import Rendered

#: Columns of measurements.parquet, in order.
MEASUREMENT_COLUMNS = [
    "name",
    "obs_id",
    "detector",
    "relpath",
    "version",
    "pipeline_version",
    "superseded",
    "collection",
    "release",
    "layout",
    "x",
    "y",
    "wavelength_um",
    "bandwidth_um",
    "mjd",
    "flux_ujy",
    "file_gain",
    "l3_flux_factor",
    "psf_zone",
    "bad_pixel_near",
    "unflagged_defect_near",
    "flags_near",
    "artifact_bits_near",
    "psf_variant",
]
DEFECT_COLUMNS = ["relpath", "x", "y", "kind", "bits", "nan_variance", "nan_image"]
FILES = {
    "sources": "sources.csv",
    "catalog": "catalog.csv",
    "measurements": "measurements.parquet",
    "defects": "defects.parquet",
    "files": "files.csv",
    "calibration": "calibration.csv",
}


def _at_sources(values: float | np.ndarray, t: pd.DataFrame) -> np.ndarray:
    """A scalar, or a per-pixel map read at the sources' nearest pixels."""
    if np.ndim(values) == 0:
        return np.full(len(t), float(values))
    n = values.shape[0]
    ix = np.clip(np.rint(t["x"].to_numpy()).astype(int), 0, n - 1)
    iy = np.clip(np.rint(t["y"].to_numpy()).astype(int), 0, n - 1)
    return np.asarray(values, float)[iy, ix]


@dataclass
class Truth:
    """What has been written so far, row by row."""

    npix: int
    measurements: list[pd.DataFrame] = field(default_factory=list)
    defects: list[dict] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)

    @property
    def n_files(self) -> int:
        """Level-2 files written so far."""
        return len(self.measurements)

    def missing(self, job: FileJob) -> None:
        """A planned image the archive lacks (a band dropped from an exposure)."""
        self.files.append(_file_row(job, None, None, self.npix))

    def add(self, job: FileJob, rel: str, proc: Processing, superseded: bool, r: Rendered,
            gain: float | np.ndarray, gain_error: float, l3: float | np.ndarray) -> None:
        """One written file: its files.csv row, its measurement rows and its defects."""
        row = _file_row(job, rel, proc, self.npix)
        row.update(superseded=superseded, n_sources_on=len(r.truth), gain_error=gain_error)
        row.update(r.sky)
        self.files.append(row)
        t = r.truth.copy()
        t["relpath"] = rel
        t["version"] = proc.tag
        t["pipeline_version"] = proc.version
        t["superseded"] = superseded
        t["release"] = proc.release
        t["layout"] = proc.layout
        t["file_gain"] = _at_sources(gain, t)
        t["l3_flux_factor"] = _at_sources(l3, t)
        self.measurements.append(t)
        self.defects += [dict(d, relpath=rel) for d in r.defects]

    def write(self, root: Path, sources: pd.DataFrame, calibration: list[dict]) -> dict[str, Path]:
        """Write root/truth/; returns the paths by name."""
        tdir = root / "truth"
        tdir.mkdir(parents=True, exist_ok=True)
        paths = {k: tdir / f for k, f in FILES.items()}
        sources.to_csv(paths["sources"], index=False)
        motion = [c for c in ("pmra", "pmdec", "epoch") if c in sources.columns]
        sources[["name", "ra", "dec", *motion]].to_csv(paths["catalog"], index=False)
        cols = MEASUREMENT_COLUMNS
        meas = pd.concat(self.measurements, ignore_index=True)[cols] if self.measurements else pd.DataFrame(
            columns=cols)
        meas.to_parquet(paths["measurements"], index=False)
        pd.DataFrame(self.defects, columns=DEFECT_COLUMNS).to_parquet(paths["defects"], index=False)
        pd.DataFrame(self.files).to_csv(paths["files"], index=False)
        pd.DataFrame(calibration, columns=["product", "detector", "release", "tag", "relpath", "current"]).to_csv(
            paths["calibration"], index=False)
        return paths


def _file_row(job: FileJob, rel: str | None, proc: Processing | None, npix: int) -> dict:
    """The files.csv row of a planned image (rel None: the image is missing from the archive)."""
    exp = job.exposure
    version = proc.version if proc else exp.version
    return {
        "relpath": rel or "",
        "obs_id": exp.obs_id,
        "detector": job.detector,
        "version": proc.tag if proc else exp.version_dir,
        "pipeline_version": version,
        "collection": exp.collection,
        "release": proc.release if proc else "",
        "layout": proc.layout if proc else "",
        "mjd_beg": exp.mjd_beg,
        "mjd_end": exp.mjd_end,
        "present": rel is not None,
        "superseded": False,
        "erratum": version == "6.5.4",
        "crval1": job.where.crval[0],
        "crval2": job.where.crval[1],
        "pa_deg": exp.pa_deg,
        "npix": npix,
        "n_sources_on": 0,
        "psf_variant": job.psf_variant,
    }
