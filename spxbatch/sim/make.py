"""Build a simulated SPHEREx archive on disk: Level-2 files, calibration products and the truth.

`make_archive` plans the survey of a field for a release (`releases`: QR2, QR3 or both mixed as IRSA serves
them during reprocessing), renders every detector image that sees the field (sources with the exact PSF of
the file's layout, sky, noise, artifacts, flags), writes them in IRSA's directory layout below `root`
(which plays `ibe/data/spherex/` and the S3 bucket root), and records the injected truth in `root/truth/`
(`truth` documents its tables). `variants` damages or strips a made archive for robustness tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path

import numpy as np
import pandas as pd

from spxbatch.level2.naming import CALIBRATION_PRODUCTS, calibration_relpath
from spxbatch.sim import calib, calib_qr3, headers, mef, psf, r7, releases, render, sky, survey
from spxbatch.sim.headers import COLLECTION_CARD
from spxbatch.sim.instrument import Detector
from spxbatch.sim.paths import processing_date, strip_ibe
from spxbatch.sim.truth import Truth

#: Named fields: (ra, dec). 'demo' sits at moderate latitude (Lockman-hole-like); 'nep' is the deep field.
FIELDS = {"demo": (161.0, 58.0), "nep": (270.0, 66.5607)}
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
    release: str = "qr2"
    bytes_written: int = 0
    extras: dict = dc_field(default_factory=dict)


def field_centre(field: str = "demo", ra: float | None = None, dec: float | None = None) -> tuple[float, float]:
    """(ra, dec) of a field: explicit coordinates, else the named field, else 'demo'."""
    if ra is None or dec is None:
        return FIELDS.get(field, FIELDS["demo"])
    return float(ra) % 360.0, float(dec)


#: Days after the survey's start at which the moving stars are where they were placed.
MOVER_MID_DAYS = 60.0


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
    release: str = "qr2",
    moving_stars: int = 0,
    slew_offset: int = 0,
) -> ArchiveInfo:
    """Write a simulated archive below `root` and return what was written.

    `field` names the field (and prefixes source names); `ra`/`dec` put it anywhere (defaults from FIELDS,
    'demo' if the name is unknown). `deep` gives a deep-field cadence (orbit-spaced revisits, collection
    spherex_qr2_deep or spherex_qr3_deep). `noise=False` renders noiseless images; `artifacts` (default:
    same as `noise`) switches the pixel-altering artifacts (cosmic rays, defects' values, dark corners,
    persistence, the unflagged cold pixel; in R7 files halos, ghosts, a streak, crosstalk, a snowball);
    their FLAGS go with them. `calibration` writes the calibration products of the release(s). `release`:
    'qr2' (QR2 files, the default: the same seed gives the same bytes as ever), 'qr3' (R7 files of QR3
    exposures) or 'mixed' (QR2 files, R7 reprocessings of some, QR3 exposures; see `releases`).
    `moving_stars` adds that many bright, isolated high-proper-motion stars (catalog positions at J2016.0,
    3-6"/yr, so 5-10 px from them by the survey) and proper-motion columns to the catalog. `slew_offset` is
    added to the large-slew numbers of the observation IDs: fields written into one archive (each its own
    call, seed and offset, e.g. 200 apart) then never share a file name.
    """
    root = Path(root)
    artifacts = noise if artifacts is None else artifacts
    ra0, dec0 = field_centre(field, ra, dec)
    n_visits = n_visits or (VISITS_DEEP if deep else VISITS_WIDE)
    sources = field_sources(npix=npix, seed=seed, field=field, ra=ra, dec=dec, n_sources=n_sources)
    if moving_stars:
        sources = sky.add_moving_stars(sources, ra0, dec0, FIELD_RADIUS * npix, seed, field,
                                       survey.START_MJD + MOVER_MID_DAYS, moving_stars)
    dets = {d: Detector(d, npix) for d in range(1, 7)}
    exposures, jobs = releases.plan(release, n_visits, npix, seed, field, deep, sources, dets, ra0, dec0,
                                      slew_offset)
    # An archive that ships QR3's l3_flux_corrections has QR2-processed files with the error they undo.
    with_l3 = release != "qr2"
    truth = Truth(npix)
    written: list[str] = []
    total_bytes = 0
    persistence: render.Persistence = {}
    for job in jobs:
        if not job.versions:
            truth.missing(job)
            continue
        det = dets[job.detector]
        # Every fourth image gets an unflagged cold pixel next to a target, every fifth a lost packet.
        quirks = {"unflagged_cold": artifacts and truth.n_files % 4 == 1,
                  "lost_packet": artifacts and truth.n_files % 5 == 2}
        before = dict(persistence)
        rendered: dict[bool, render.Rendered] = {}
        for r7_layout in dict.fromkeys(v.r7 for v in job.versions):
            # One render per layout; a reprocessing of the same exposure starts from the same persistence.
            state = dict(before) if rendered else persistence
            rendered[r7_layout] = render.render(
                job.exposure, det, job.where, sources, seed=seed, noise=noise, artifacts=artifacts,
                persistence=state, psf_variant=job.psf_variant and not r7_layout, r7=r7_layout, **quirks,
            )
        for vi, proc in enumerate(job.versions):
            rel = proc.relpath(job.exposure.obs_id, job.detector)
            gain_error = SUPERSEDED_GAIN if releases.fixed_by_later_qr2(job.versions, vi) else 1.0
            l3 = det.l3_factors if with_l3 and not proc.r7 else 1.0
            gain = gain_error / l3 if with_l3 and not proc.r7 else gain_error
            r = rendered[proc.r7]
            total_bytes += _write_file(root / rel, job, det, r, proc, seed, gain)
            written.append(rel)
            truth.add(job, rel, proc, vi < len(job.versions) - 1, r, gain, gain_error, l3)

    cal_files, cal_rows = _write_calibration(root, dets, release) if calibration else ([], [])
    paths = truth.write(root, sources, cal_rows)
    return ArchiveInfo(
        root=root,
        files=written,
        calibration_files=cal_files,
        catalog=paths["catalog"],
        truth=paths,
        ra=ra0,
        dec=dec0,
        npix=npix,
        seed=seed,
        field=field,
        deep=deep,
        noise=noise,
        release=release,
        bytes_written=total_bytes,
        extras={"collection_card": COLLECTION_CARD, "n_exposures": len(exposures)},
    )


def _write_file(path: Path, job: releases.FileJob, det: Detector, r: render.Rendered, proc: releases.Processing,
                seed: int, gain: float | np.ndarray) -> int:
    """Write one Level-2 file of a rendered image in its processing's layout; IMAGE and VARIANCE x `gain`."""
    date = processing_date(proc.tag)
    primary = headers.primary_cards(job, date, proc, seed)
    cards = headers.image_cards(job, det, r.flags, date, proc.r7)
    if proc.r7:
        return mef.write_r7(path, primary=primary, image_cards=cards, image=r.image * gain, flags=r.flags,
                            flag_names=r7.mskn_cards(), variance=r.variance * gain**2, zodi=r.zodi,
                            epsf_table=det.epsf_table, wave=det.wave_table_r7)
    return mef.write_l2(
        path,
        primary=primary,
        image_cards=cards,
        image=r.image * gain,
        flags=r.flags,
        variance=r.variance * gain**2,
        zodi=r.zodi,
        psf_cube=det.psf_cube_variant if job.psf_variant else det.psf_cube,
        psf_cards=psf.header_cards(det.npix, swapped=proc.version == "6.5.4"),
        wave=det.wave_table,
    )


def _write_calibration(root: Path, dets: dict[int, Detector], release: str) -> tuple[list[str], list[dict]]:
    """The calibration products of the release(s) and their truth rows."""
    files, rows = [], []
    if release in ("qr2", "mixed"):
        files += calib.write_all(root, dets)
        rows += [{"product": p, "detector": d, "release": "qr2", "tag": tag, "current": True,
                  "relpath": strip_ibe(calibration_relpath(p, d))}
                 for d in dets for p, (_, _, tag) in CALIBRATION_PRODUCTS.items()]
    if release in ("qr3", "mixed"):
        files += calib_qr3.write_all(root, dets)
        rows += [dict(r, release="qr3") for r in calib_qr3.catalogue(dets)]
    return files, rows
