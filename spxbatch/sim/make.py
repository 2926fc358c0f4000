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
from scipy.ndimage import maximum_filter

from spxbatch.sim import calib, lvf, mef, optics, psf, scene, sky, survey
from spxbatch.sim.instrument import Detector
from spxbatch.sim.paths import processing_date, strip_ibe
from spxbatch.sim.rng import rng_for
from spxbatch.spherex import (
    DEFAULT_BAD_FLAGS,
    EXPOSURE_S,
    FLAG_BITS,
    MJY_PER_SR_TO_UJY_PER_ARCSEC2,
    PIXEL_SCALE_ARCSEC,
    flag_mask,
    level2_relpath,
)

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
_BAD_MASK = flag_mask(DEFAULT_BAD_FLAGS, FLAG_BITS)


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
    return survey.mjd_to_datetime(mjd).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def _on_detector(det: Detector, ra0: float, dec0: float, sources: pd.DataFrame, pa: float):
    """WCS of a detector pointed at (ra0, dec0) and the 0-based pixel positions of sources near it."""
    wcs = optics.make_wcs(det.optics, ra0, dec0, pa)
    ra, dec = sources["ra"].to_numpy(), sources["dec"].to_numpy()
    # Angular pre-selection (TAN is meaningless far away), then the exact SIP inverse.
    cosd = np.sin(np.radians(dec)) * np.sin(np.radians(dec0)) + np.cos(np.radians(dec)) * np.cos(
        np.radians(dec0)
    ) * np.cos(np.radians(ra - ra0))
    reach = np.radians((det.npix * 0.75 + 20) * PIXEL_SCALE_ARCSEC / 3600.0)
    near = np.flatnonzero(cosd > np.cos(reach))
    x = np.full(len(sources), np.nan)
    y = np.full(len(sources), np.nan)
    if near.size:
        px = wcs.all_world2pix(np.column_stack([ra[near], dec[near]]), 0, tolerance=1e-9, maxiter=100)
        x[near], y[near] = px[:, 0], px[:, 1]
    margin = psf.STAMP_HALF + 1
    near = np.flatnonzero((x > -margin) & (x < det.npix - 1 + margin) & (y > -margin) & (y < det.npix - 1 + margin))
    return wcs, near, x, y


def _render_sources(det: Detector, x: np.ndarray, y: np.ndarray, flux: np.ndarray) -> np.ndarray:
    """Source surface brightness (MJy/sr) of sources with total fluxes `flux` (uJy) at (x, y)."""
    n = det.npix
    if x.size == 0:
        return np.zeros((n, n))
    zones = psf.zone_index(y, n) * 11 + psf.zone_index(x, n)
    st, x0, y0 = psf.stamps(det.psf_params[zones], x, y)
    size = st.shape[1]
    pad = 2 * psf.STAMP_HALF + 3
    k = np.arange(size)
    rows = y0[:, None, None] + k[None, :, None] + pad
    cols = x0[:, None, None] + k[None, None, :] + pad
    m = n + 2 * pad
    canvas = np.bincount((rows * m + cols).ravel(), weights=(st * flux[:, None, None]).ravel(), minlength=m * m)
    img = canvas.reshape(m, m)[pad : pad + n, pad : pad + n]
    return img / (MJY_PER_SR_TO_UJY_PER_ARCSEC2 * det.solid_angle)


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
    exposure: survey.Exposure
    detector: int
    crval: tuple[float, float]
    near: np.ndarray
    x: np.ndarray
    y: np.ndarray
    versions: list[tuple[str, str]]


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

    jobs = _plan_files(exposures, sources, dets, ra0, dec0, seed, field)
    truth_rows: list[pd.DataFrame] = []
    defect_rows: list[dict] = []
    file_rows: list[dict] = []
    written: list[str] = []
    total_bytes = 0
    persistence: dict[int, list[tuple[float, float, float]]] = {}
    for job in jobs:
        if not job.versions:
            file_rows.append(_file_row(job, None, None, npix))
            continue
        # Every fourth image gets an unflagged cold pixel next to a target.
        plant = artifacts and len(written) % 4 == 1
        rendered = _render_file(job, sources, dets[job.detector], seed, noise, artifacts, persistence, plant)
        for vi, (vdir, version) in enumerate(job.versions):
            rel = strip_ibe(level2_relpath(job.exposure.obs_id, job.detector, vdir))
            total_bytes += _write_file(root / rel, job, dets[job.detector], rendered, vdir, version, seed)
            written.append(rel)
            row = _file_row(job, rel, (vdir, version), npix)
            row["superseded"] = vi < len(job.versions) - 1
            row["n_sources_on"] = len(rendered["truth"])
            file_rows.append(row)
            t = rendered["truth"].copy()
            t["relpath"] = rel
            t["version"] = vdir
            t["pipeline_version"] = version
            t["superseded"] = row["superseded"]
            truth_rows.append(t)
            defect_rows += [dict(d, relpath=rel) for d in rendered["defects"]]

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


def _plan_files(exposures, sources, dets, ra0, dec0, seed, field) -> list[_FileJob]:
    """Which detector images exist: the centred pair always, the side pairs when they hold a source.

    Two centred-pair images are dropped (bands missing from an exposure) and the first centred short-wave
    image also exists in a later, superseding processing version.
    """
    rng = rng_for(seed, "archive-quirks", field)
    jobs: list[_FileJob] = []
    missing: set[tuple[int, int]] = set()
    if len(exposures) >= 3:
        for ei in rng.choice(np.arange(1, len(exposures)), size=2, replace=False):
            q = exposures[ei].centred_pair
            missing.add((int(ei), int(q if rng.uniform() < 0.5 else q + 3)))
    for ei, exp in enumerate(exposures):
        for q in (1, 2, 3):
            cra, cdec = sky.offsets_to_sky(ra0, dec0, *exp.pair_offsets[q - 1])
            for d in (q, q + 3):
                _, near, x, y = _on_detector(dets[d], float(cra), float(cdec), sources, exp.pa_deg)
                n = dets[d].npix
                on = (x[near] >= -0.5) & (x[near] < n - 0.5) & (y[near] >= -0.5) & (y[near] < n - 0.5)
                if q != exp.centred_pair and not on.any():
                    continue
                versions = [(exp.version_dir, exp.version)]
                if ei == 0 and d == q == exp.centred_pair:
                    versions.append(survey.SUPERSEDING)
                if (ei, d) in missing:
                    versions = []
                jobs.append(_FileJob(exp, d, (float(cra), float(cdec)), near, x[near], y[near], versions))
    return jobs


def _file_row(job: _FileJob, rel: str | None, version: tuple[str, str] | None, npix: int) -> dict:
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
        "crval1": job.crval[0],
        "crval2": job.crval[1],
        "pa_deg": exp.pa_deg,
        "npix": npix,
        "n_sources_on": 0,
    }


def _render_file(
    job: _FileJob,
    sources,
    det: Detector,
    seed: int,
    noise: bool,
    artifacts: bool,
    persistence: dict,
    plant_unflagged: bool,
) -> dict:
    """Pixels, flags and truth of one detector image."""
    exp, d, n = job.exposure, job.detector, det.npix
    key = f"{exp.obs_id}/D{d}"
    rng = rng_for(seed, "file", key)
    cwave, _ = det.wave_images
    src = sources.iloc[job.near]
    lam = lvf.wavelength_um(d, job.x, job.y, n)
    flux = sky.flux_ujy(src, lam, exp.mjd_avg)
    src_img = _render_sources(det, job.x, job.y, flux)
    true_sky, zodi, sky_par = scene.sky(d, n, seed, exp.obs_id, cwave)
    true = true_sky + src_img
    flags = np.zeros((n, n), np.int32)
    flags[src_img > scene.SOURCE_LEVEL] |= scene.bit("SOURCE")
    flags[true > scene.NONLINEAR_LEVEL] |= scene.bit("NONLINEAR")
    flags[true > scene.OVERFLOW_LEVEL] |= scene.bit("OVERFLOW")
    defects: list[dict] = []
    unflagged = np.zeros((n, n), bool)
    if artifacts:
        if det.dichroic is not None:
            true = np.where(det.dichroic, true * 0.3, true)
            flags[det.dichroic] |= scene.bit("DICHROIC")
        for px, py, amp in persistence.get(d, []):
            ang = rng.uniform(0, np.pi)
            steps = np.arange(int(rng.integers(6, 25)))
            tx = np.rint(px + steps * np.cos(ang)).astype(int)
            ty = np.rint(py + steps * np.sin(ang)).astype(int)
            ok = (tx >= 0) & (tx < n) & (ty >= 0) & (ty < n)
            true[ty[ok], tx[ok]] += amp
            flags[ty[ok], tx[ok]] |= scene.bit("PERSIST")
            defects += [{"x": int(a), "y": int(b), "kind": "PERSIST"} for a, b in zip(tx[ok], ty[ok], strict=True)]
    obs, _ = scene.noisy(true, rng if noise else None)
    nan_var = np.zeros((n, n), bool)
    if artifacts:
        for xs, ys, dep, name in scene.cosmic_rays(n, rng):
            obs[ys, xs] += dep
            flags[ys, xs] |= scene.bit(name)
            defects += [{"x": int(a), "y": int(b), "kind": name} for a, b in zip(xs, ys, strict=True)]
        for px, py, kind, nv, nimg in det.defects:
            if kind == "HOT":
                obs[py, px] += 2.0 + 40.0 * ((px * 7919 + py * 104729) % 1000) / 1000.0
            elif kind == "COLD":
                obs[py, px] *= 0.05
            else:
                obs[py, px] = np.nan if nimg else 0.0
            flags[py, px] |= scene.bit(kind)
            nan_var[py, px] = nv
            defects.append({"x": px, "y": py, "kind": kind})
        phantom = rng.integers(0, n, (max(1, n * n // 2000), 2))
        flags[phantom[:, 1], phantom[:, 0]] |= scene.bit("PHANTOM")
        defects += [{"x": int(a), "y": int(b), "kind": "PHANTOM"} for a, b in phantom]
    on = (job.x >= -0.5) & (job.x < n - 0.5) & (job.y >= -0.5) & (job.y < n - 0.5)
    if plant_unflagged:
        inner = np.flatnonzero(on & (job.x > 8) & (job.x < n - 9) & (job.y > 8) & (job.y < n - 9))
        for i in rng.permutation(inner):
            ux, uy = int(np.rint(job.x[i])) + 1, int(np.rint(job.y[i]))
            if flags[uy, ux] & ~scene.bit("SOURCE") == 0:
                obs[uy, ux] *= 0.1
                unflagged[uy, ux] = True
                defects.append({"x": ux, "y": uy, "kind": "UNFLAGGED_COLD"})
                break
    var = scene.READ_VAR + scene.PHOTON_GAIN * np.clip(np.nan_to_num(obs), 0, None)
    var[nan_var] = np.nan
    bad = ((flags & _BAD_MASK) != 0) | unflagged | ~np.isfinite(obs) | ~np.isfinite(var)
    bad_near = maximum_filter(bad, size=9, mode="constant")
    unflagged_near = maximum_filter(unflagged, size=9, mode="constant")
    flags_near = maximum_filter(flags, size=7, mode="constant")
    # Persistence for the next exposure of this detector: bright stars seen now.
    peak = flux / (MJY_PER_SR_TO_UJY_PER_ARCSEC2 * det.omega_median) * 0.2
    bright = on & (peak > scene.NONLINEAR_LEVEL)
    persistence[d] = [
        (float(a), float(b), float(p) * 0.003)
        for a, b, p in zip(job.x[bright], job.y[bright], peak[bright], strict=True)
    ]
    ix, iy = np.rint(job.x[on]).astype(int), np.rint(job.y[on]).astype(int)
    truth = pd.DataFrame(
        {
            "name": src["name"].to_numpy()[on],
            "obs_id": exp.obs_id,
            "detector": d,
            "x": job.x[on],
            "y": job.y[on],
            "wavelength_um": lam[on],
            "bandwidth_um": lvf.bandwidth_um(d, lam[on]),
            "mjd": exp.mjd_avg,
            "flux_ujy": flux[on],
            "psf_zone": psf.zone_index(job.y[on], n) * 11 + psf.zone_index(job.x[on], n) + 1,
            "collection": exp.collection,
            "bad_pixel_near": bad_near[iy, ix],
            "unflagged_defect_near": unflagged_near[iy, ix],
            "flags_near": flags_near[iy, ix],
        }
    )
    for i, dd in enumerate(defects):
        dd["bits"] = int(flags[dd["y"], dd["x"]])
        dd["nan_variance"] = bool(nan_var[dd["y"], dd["x"]])
        dd["nan_image"] = bool(~np.isfinite(obs[dd["y"], dd["x"]]))
        defects[i] = dd
    return {
        "image": obs,
        "flags": flags,
        "variance": var,
        "zodi": zodi,
        "truth": truth,
        "defects": defects,
        "sky": sky_par,
    }


def _write_file(path: Path, job: _FileJob, det: Detector, r: dict, vdir: str, version: str, seed: int) -> int:
    exp, d = job.exposure, job.detector
    date = processing_date(vdir)
    primary = [
        ("TELESCOP", "SPHEREx", ""),
        ("INSTRUME", "SPHEREx", ""),
        ("ORIGIN", "spxbatch.sim", "Simulated IRSA QR2 Level-2 image"),
        ("DATE", date, "File creation date (processing date)"),
        ("VERSION", version, "Pipeline version"),
        (COLLECTION_CARD, exp.collection, "IRSA collection (wide or deep survey)"),
        ("OBSID", exp.obs_id, "Observation ID"),
        ("DETECTOR", d, "Detector (band) number"),
        ("PROCTAG", vdir, "Processing version directory"),
        ("SIMSEED", seed, "Simulator seed"),
    ]
    counts = [
        (f"L2 N_{name}", int(np.count_nonzero(r["flags"] & (1 << b))), f"Pixels flagged {name}")
        for name, b in FLAG_BITS.items()
    ]
    image_cards = [
        ("DETECTOR", d, "Detector (band) number"),
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
        *optics.celestial_cards(det.optics, job.crval[0], job.crval[1], exp.pa_deg),
        *optics.pixel_cards(),
        *mef.spectral_cards(),
        *counts,
    ]
    return mef.write_l2(
        path,
        primary=primary,
        image_cards=image_cards,
        image=r["image"],
        flags=r["flags"],
        variance=r["variance"],
        zodi=r["zodi"],
        psf_cube=det.psf_cube,
        psf_cards=psf.header_cards(det.npix, swapped=version == "6.5.4"),
        wave=det.wave_table,
    )


def _write_truth(root: Path, sources: pd.DataFrame, truth_rows, defect_rows, file_rows) -> dict[str, Path]:
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
    meas = pd.concat(truth_rows, ignore_index=True) if truth_rows else pd.DataFrame()
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
    ]
    meas[cols].to_parquet(paths["measurements"], index=False)
    defects = pd.DataFrame(defect_rows, columns=["relpath", "x", "y", "kind", "bits", "nan_variance", "nan_image"])
    defects.to_parquet(paths["defects"], index=False)
    pd.DataFrame(file_rows).to_csv(paths["files"], index=False)
    return paths
