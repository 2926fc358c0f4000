"""Build a simulated SPHEREx QR2 archive on disk: Level-2 files, calibration products and the truth.

`make_archive` plans the survey of a field, renders every detector image that sees the field (sources with
the exact zone PSF, sky, noise, artifacts, flags), writes them in IRSA's directory layout below `root`
(which plays `ibe/data/spherex/` and the S3 bucket root), and records the injected truth in `root/truth/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path

import numpy as np
import pandas as pd

from spxbatch.level2.constants import EXPOSURE_S, FLAG_BITS
from spxbatch.level2.naming import level2_relpath
from spxbatch.sim import calib, mef, optics, psf, render, sky, survey
from spxbatch.sim.instrument import Detector
from spxbatch.sim.paths import processing_date, strip_ibe
from spxbatch.sim.rng import rng_for

#: Named fields: (ra, dec). 'demo' sits at moderate latitude (Lockman-hole-like); 'nep' is the deep field.
FIELDS = {"demo": (161.0, 58.0), "nep": (270.0, 66.5607)}
#: Header card in PRIMARY naming the collection (wide 'spherex_qr2' or deep 'spherex_qr2_deep').
COLLECTION_CARD = "COLLECTN"
#: Sources per 512x512 field and the field radius (fraction of the image size).
SOURCES_PER_512 = 400
FIELD_RADIUS = 0.40
#: Default exposures of the field: wide and deep.
VISITS_WIDE = 12
VISITS_DEEP = 30
#: Calibration error of a superseded processing version (IMAGE x this; fixed by the later version).
SUPERSEDED_GAIN = 1.01


@dataclass
class ArchiveInfo:
    """What `make_archive` wrote. Paths in `files` are relative to `root` (prefix IBE_ROOT for IRSA's)."""

    root: Path
    files: list[str]
    calibration_files: list[str]
    catalog: Path
    truth: dict[str, Path]
    ra: float
    dec: float
    npix: int
    seed: int = 1
    field: str = "demo"
    deep: bool = False
    noise: bool = True
    bytes_written: int = 0
    extras: dict = dc_field(default_factory=dict)


def _iso(mjd: float) -> str:
    """ISO-8601 UTC string (ms) of an MJD, for the DATE-* cards."""
    return survey.mjd_to_datetime(mjd).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def field_centre(field: str = "demo", ra: float | None = None, dec: float | None = None) -> tuple[float, float]:
    """(ra, dec) of a field: explicit coordinates, else the named field, else 'demo'."""
    if ra is None or dec is None:
        return FIELDS.get(field, FIELDS["demo"])
    return float(ra) % 360.0, float(dec)


def field_sources(
    *,
    npix: int = 512,
    seed: int = 1,
    field: str = "demo",
    ra: float | None = None,
    dec: float | None = None,
    n_sources: int | None = None,
) -> pd.DataFrame:
    """The source table `make_archive` would inject with these arguments (without writing anything)."""
    ra0, dec0 = field_centre(field, ra, dec)
    n_sources = n_sources or max(30, round(SOURCES_PER_512 * (npix / 512) ** 2))
    return sky.make_sources(ra0, dec0, FIELD_RADIUS * npix, n_sources, seed, field, survey.START_MJD)


@dataclass
class _FileJob:
    """One planned detector image: its exposure, detector, sources, and the versions it is written in."""

    exposure: survey.Exposure
    detector: int
    where: render.Placement
    versions: list[tuple[str, str]]
    psf_variant: bool = False


def make_archive(
    root: str | Path,
    *,
    npix: int = 512,
    seed: int = 1,
    field: str = "demo",
    ra: float | None = None,
    dec: float | None = None,
    n_sources: int | None = None,
    n_visits: int | None = None,
    deep: bool = False,
    noise: bool = True,
    artifacts: bool | None = None,
    calibration: bool = True,
) -> ArchiveInfo:
    """Write a simulated QR2 archive below `root` and return what was written.

    `field` names the field (and prefixes source names); `ra`/`dec` put it anywhere (defaults from FIELDS,
    'demo' if the name is unknown). `deep` gives a deep-field cadence (orbit-spaced revisits, collection
    spherex_qr2_deep). `noise=False` renders noiseless images; `artifacts` (default: same as `noise`)
    switches the pixel-altering artifacts (cosmic rays, defects' values, dark corners, persistence, the
    unflagged cold pixel); their FLAGS go with them. `calibration` writes the calibration products.
    """
    root = Path(root)
    artifacts = noise if artifacts is None else artifacts
    ra0, dec0 = field_centre(field, ra, dec)
    n_visits = n_visits or (VISITS_DEEP if deep else VISITS_WIDE)
    exposures = survey.plan(n_visits, npix, seed, field, deep=deep)
    sources = field_sources(npix=npix, seed=seed, field=field, ra=ra, dec=dec, n_sources=n_sources)
    dets = {d: Detector(d, npix) for d in range(1, 7)}

    jobs = _plan_files(exposures, sources, dets, ra0, dec0, seed, field, npix)
    truth_rows: list[pd.DataFrame] = []
    defect_rows: list[dict] = []
    file_rows: list[dict] = []
    written: list[str] = []
    total_bytes = 0
    persistence: render.Persistence = {}
    for job in jobs:
        if not job.versions:
            file_rows.append(_file_row(job, None, None, npix))
            continue
        # Every fourth image gets an unflagged cold pixel next to a target, every fifth a lost packet.
        rendered = render.render(
            job.exposure,
            dets[job.detector],
            job.where,
            sources,
            seed=seed,
            noise=noise,
            artifacts=artifacts,
            persistence=persistence,
            unflagged_cold=artifacts and len(written) % 4 == 1,
            lost_packet=artifacts and len(written) % 5 == 2,
            psf_variant=job.psf_variant,
        )
        for vi, (vdir, version) in enumerate(job.versions):
            rel = strip_ibe(level2_relpath(job.exposure.obs_id, job.detector, vdir))
            superseded = vi < len(job.versions) - 1
            gain = SUPERSEDED_GAIN if superseded else 1.0
            total_bytes += _write_file(root / rel, job, dets[job.detector], rendered, vdir, version, seed, gain)
            written.append(rel)
            row = _file_row(job, rel, (vdir, version), npix)
            row["superseded"] = superseded
            row["n_sources_on"] = len(rendered.truth)
            row["gain_error"] = gain
            row.update(rendered.sky)
            file_rows.append(row)
            t = rendered.truth.copy()
            t["relpath"] = rel
            t["version"] = vdir
            t["pipeline_version"] = version
            t["superseded"] = row["superseded"]
            truth_rows.append(t)
            defect_rows += [dict(d, relpath=rel) for d in rendered.defects]

    cal_files = calib.write_all(root, dets) if calibration else []
    truth = _write_truth(root, sources, truth_rows, defect_rows, file_rows)
    return ArchiveInfo(
        root=root,
        files=written,
        calibration_files=cal_files,
        catalog=truth["catalog"],
        truth=truth,
        ra=ra0,
        dec=dec0,
        npix=npix,
        seed=seed,
        field=field,
        deep=deep,
        noise=noise,
        bytes_written=total_bytes,
        extras={"collection_card": COLLECTION_CARD, "n_exposures": len(exposures)},
    )


def _plan_files(exposures, sources, dets, ra0, dec0, seed, field, npix) -> list[_FileJob]:
    """Which detector images exist: the centred pair always, the side pairs when they hold a source.

    Two centred-pair images are dropped (bands missing from an exposure), the first centred short-wave
    image also exists in a later, superseding processing version, and the centred long-wave images of the
    first large slew's small slews 2-4 carry the variant PSF (same detector and version, another cube).
    """
    rng = rng_for(seed, "archive-quirks", field)
    first = exposures[0]

    def variant(exp: survey.Exposure) -> bool:
        return (exp.period, exp.large) == (first.period, first.large) and exp.small >= 2

    jobs: list[_FileJob] = []
    missing: set[tuple[int, int]] = set()
    if len(exposures) >= 3:
        for ei in rng.choice(np.arange(1, len(exposures)), size=2, replace=False):
            q = exposures[ei].centred_pair
            long_wave = rng.uniform() < 0.5 and not variant(exposures[ei])
            missing.add((int(ei), int(q + 3 if long_wave else q)))
    for ei, exp in enumerate(exposures):
        for q in (1, 2, 3):
            cra, cdec = sky.offsets_to_sky(ra0, dec0, *exp.pair_offsets[q - 1])
            for d in (q, q + 3):
                where = render.place(dets[d], (float(cra), float(cdec)), exp.pa_deg, sources)
                centred = q == exp.centred_pair
                if not centred and not where.on_image(npix).any():
                    continue
                versions = [(exp.version_dir, exp.version)]
                if ei == 0 and d == q and centred:
                    versions.append(survey.SUPERSEDING)
                if (ei, d) in missing:
                    versions = []
                jobs.append(_FileJob(exp, d, where, versions, centred and d > 3 and variant(exp)))
    return jobs


def _file_row(job: _FileJob, rel: str | None, version: tuple[str, str] | None, npix: int) -> dict:
    """The truth/files.csv row of a planned image (rel None: the image is missing from the archive)."""
    exp = job.exposure
    return {
        "relpath": rel or "",
        "obs_id": exp.obs_id,
        "detector": job.detector,
        "version": version[0] if version else exp.version_dir,
        "pipeline_version": version[1] if version else exp.version,
        "collection": exp.collection,
        "mjd_beg": exp.mjd_beg,
        "mjd_end": exp.mjd_end,
        "present": rel is not None,
        "superseded": False,
        "erratum": (version[1] if version else exp.version) == "6.5.4",
        "crval1": job.where.crval[0],
        "crval2": job.where.crval[1],
        "pa_deg": exp.pa_deg,
        "npix": npix,
        "n_sources_on": 0,
        "psf_variant": job.psf_variant,
    }


def _write_file(
    path: Path, job: _FileJob, det: Detector, r: render.Rendered, vdir: str, version: str, seed: int, gain: float
) -> int:
    """Write one Level-2 file of a rendered image with its headers; IMAGE and VARIANCE scaled by `gain`."""
    date = processing_date(vdir)
    return mef.write_l2(
        path,
        primary=_primary_cards(job, date, vdir, version, seed),
        image_cards=_image_cards(job, det, r, date),
        image=r.image * gain,
        flags=r.flags,
        variance=r.variance * gain**2,
        zodi=r.zodi,
        psf_cube=det.psf_cube_variant if job.psf_variant else det.psf_cube,
        psf_cards=psf.header_cards(det.npix, swapped=version == "6.5.4"),
        wave=det.wave_table,
    )


def _primary_cards(job: _FileJob, date: str, vdir: str, version: str, seed: int) -> list[mef.Card]:
    """PRIMARY header cards of one file: mission, processing (date, pipeline version, tag), exposure."""
    exp = job.exposure
    return [
        ("TELESCOP", "SPHEREx", ""),
        ("INSTRUME", "SPHEREx", ""),
        ("ORIGIN", "spxbatch.sim", "Simulated IRSA QR2 Level-2 image"),
        ("DATE", date, "File creation date (processing date)"),
        ("VERSION", version, "Pipeline version"),
        (COLLECTION_CARD, exp.collection, "IRSA collection (wide or deep survey)"),
        ("OBSID", exp.obs_id, "Observation ID"),
        ("DETECTOR", job.detector, "Detector (band) number"),
        ("PROCTAG", vdir, "Processing version directory"),
        ("SIMSEED", seed, "Simulator seed"),
    ]


def _image_cards(job: _FileJob, det: Detector, r: render.Rendered, date: str) -> list[mef.Card]:
    """IMAGE header cards: exposure times, PSF and solid angle, the SIP and spectral WCS, flag counts."""
    exp = job.exposure
    counts = [
        (f"L2 N_{name}", int(np.count_nonzero(r.flags & (1 << b))), f"Pixels flagged {name}")
        for name, b in FLAG_BITS.items()
    ]
    return [
        ("DETECTOR", job.detector, "Detector (band) number"),
        ("OBSID", exp.obs_id, "Observation ID"),
        ("EXPIDN", exp.expidn, "Exposure ID"),
        ("DATE", date, "File creation date"),
        ("TIMESYS", "UTC", ""),
        ("MJD-BEG", exp.mjd_beg, "[d] Exposure start (MJD, UTC)"),
        ("MJD-END", exp.mjd_end, "[d] Exposure end (MJD, UTC)"),
        ("MJD-AVG", exp.mjd_avg, "[d] Exposure mid-time (MJD, UTC)"),
        ("MJD-OBS", exp.mjd_beg, "[d] Observation start (MJD, UTC)"),
        ("DATE-OBS", _iso(exp.mjd_beg), "Exposure start (UTC)"),
        ("DATE-BEG", _iso(exp.mjd_beg), "Exposure start (UTC)"),
        ("DATE-AVG", _iso(exp.mjd_avg), "Exposure mid-time (UTC)"),
        ("DATE-END", _iso(exp.mjd_end), "Exposure end (UTC)"),
        ("XPOSURE", EXPOSURE_S, "[s] Exposure time"),
        ("PSF_FWHM", round(det.psf_fwhm_arcsec, 3), "[arcsec] PSF core FWHM at the array centre"),
        ("OMEGA_MEDIAN", round(det.omega_median, 4), "[arcsec2] Median pixel solid angle"),
        *optics.celestial_cards(det.optics, job.where.crval[0], job.where.crval[1], exp.pa_deg),
        *optics.pixel_cards(),
        *mef.spectral_cards(),
        *counts,
    ]


def _write_truth(root: Path, sources: pd.DataFrame, truth_rows, defect_rows, file_rows) -> dict[str, Path]:
    """Write root/truth/ (sources, catalog, measurements, defects, files); returns their paths by name."""
    tdir = root / "truth"
    tdir.mkdir(parents=True, exist_ok=True)
    paths = {
        k: tdir / f
        for k, f in (
            ("sources", "sources.csv"),
            ("catalog", "catalog.csv"),
            ("measurements", "measurements.parquet"),
            ("defects", "defects.parquet"),
            ("files", "files.csv"),
        )
    }
    sources.to_csv(paths["sources"], index=False)
    sources[["name", "ra", "dec"]].to_csv(paths["catalog"], index=False)
    cols = [
        "name",
        "obs_id",
        "detector",
        "relpath",
        "version",
        "pipeline_version",
        "superseded",
        "collection",
        "x",
        "y",
        "wavelength_um",
        "bandwidth_um",
        "mjd",
        "flux_ujy",
        "psf_zone",
        "bad_pixel_near",
        "unflagged_defect_near",
        "flags_near",
        "psf_variant",
    ]
    meas = pd.concat(truth_rows, ignore_index=True)[cols] if truth_rows else pd.DataFrame(columns=cols)
    meas.to_parquet(paths["measurements"], index=False)
    defects = pd.DataFrame(defect_rows, columns=["relpath", "x", "y", "kind", "bits", "nan_variance", "nan_image"])
    defects.to_parquet(paths["defects"], index=False)
    pd.DataFrame(file_rows).to_csv(paths["files"], index=False)
    return paths
