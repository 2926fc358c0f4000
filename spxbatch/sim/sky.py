"""The simulated sky: point sources with spectra (continua, lines, ice absorption) and variability.

`make_sources` draws the source list of a field; `flux_ujy` evaluates the true flux of any source at any
wavelength and time. Lines are Gaussians of about the instrument's resolution, so the flux at the LVF's
central wavelength is what the detector sees; the simulator renders exactly that value and records it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from astropy.wcs import WCS

from spxbatch.level2.constants import PIXEL_SCALE_ARCSEC
from spxbatch.sim.rng import rng_for

#: Rest wavelengths (um) of lines an emission-line source may carry: H-alpha, Pa-beta, Pa-alpha, PAH 3.3.
LINES_REST_UM = (0.6563, 1.2818, 1.8751, 3.29)
#: Pivot wavelength of the continuum normalisation (um).
PIVOT_UM = 2.0
#: Kinds of source, drawn with these weights (bright stars are added separately).
KINDS = {"powerlaw": 0.4, "star": 0.3, "emission": 0.2, "ice": 0.1}


def field_wcs(ra: float, dec: float) -> WCS:
    """A TAN tangent plane on the field centre in arcsec (x towards +RA/east, y north); valid at the poles."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra % 360.0, dec]
    w.wcs.crpix = [0.0, 0.0]
    w.wcs.cdelt = [1 / 3600.0, 1 / 3600.0]
    return w


def offsets_to_sky(ra: float, dec: float, dx_arcsec, dy_arcsec) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) of tangent-plane offsets (arcsec, east and north) from a field centre; RA in [0, 360)."""
    r, d = field_wcs(ra, dec).wcs_pix2world(np.asarray(dx_arcsec, float), np.asarray(dy_arcsec, float), 0)
    return np.mod(r, 360.0), d


def make_sources(ra: float, dec: float, radius_px: float, n: int, seed: int, field: str, t0_mjd: float) -> pd.DataFrame:
    """The source table of a field: n sources in a disc of `radius_px` native pixels around (ra, dec).

    Includes a few bright stars (saturating), close pairs (blends), and two sources far outside the field
    (a user catalog always has some without coverage).
    """
    rng = rng_for(seed, "sources", field)
    n_bright = max(2, n // 100)
    n_pair = max(1, n // 30)
    n_main = max(1, n - n_bright - n_pair - 2)
    rad = radius_px * PIXEL_SCALE_ARCSEC
    r = rad * np.sqrt(rng.uniform(0, 1, n_main + n_bright))
    # About 8% in a ring just beyond the disc: they fall near or over the image edges in some visits.
    ring = rng.uniform(0, 1, r.size) < 0.08
    r[ring] = rad * rng.uniform(1.05, 1.4, ring.sum())
    phi = rng.uniform(0, 2 * np.pi, r.size)
    dx, dy = r * np.cos(phi), r * np.sin(phi)
    # Companions 1.5-3 px from some of the main sources.
    host = rng.choice(n_main, n_pair, replace=False)
    sep = rng.uniform(1.5, 3.0, n_pair) * PIXEL_SCALE_ARCSEC
    ang = rng.uniform(0, 2 * np.pi, n_pair)
    dx = np.concatenate([dx, dx[host] + sep * np.cos(ang), [8 * rad, -8 * rad]])
    dy = np.concatenate([dy, dy[host] + sep * np.sin(ang), [6 * rad, -7 * rad]])
    total = dx.size
    kinds = rng.choice(list(KINDS), total, p=list(KINDS.values()))
    kinds[n_main : n_main + n_bright] = "star"
    # Log-uniform fluxes for SNR ~3 to >1000 per measurement; bright stars saturate.
    f0 = 10 ** rng.uniform(np.log10(60), np.log10(1.5e5), total)
    f0[n_main : n_main + n_bright] = 10 ** rng.uniform(np.log10(7e5), np.log10(6e6), n_bright)
    alpha = rng.uniform(-1.5, 1.0, total)
    alpha[kinds == "star"] = -2.0 + rng.normal(0, 0.1, (kinds == "star").sum())
    z = rng.uniform(0.0, 0.6, total)
    line_um = np.full((total, 2), np.nan)
    line_amp = np.zeros((total, 2))
    em = np.flatnonzero(kinds == "emission")
    for j in range(2):
        rest = rng.choice(LINES_REST_UM, em.size)
        line_um[em, j] = rest * (1 + z[em])
        line_amp[em, j] = rng.uniform(0.3, 2.0, em.size)
    ice = kinds == "ice"
    line_um[ice, 0] = 3.05
    line_amp[ice, 0] = -rng.uniform(0.2, 0.6, ice.sum())
    variable = rng.uniform(0, 1, total) < 0.12
    ra_s, dec_s = offsets_to_sky(ra, dec, dx, dy)
    df = pd.DataFrame(
        {
            "name": [f"{field}-{i + 1:05d}" for i in range(total)],
            "ra": ra_s,
            "dec": dec_s,
            "kind": kinds,
            "f0_ujy": f0,
            "pivot_um": PIVOT_UM,
            "alpha": alpha,
            "line1_um": line_um[:, 0],
            "line1_amp": line_amp[:, 0],
            "line2_um": line_um[:, 1],
            "line2_amp": line_amp[:, 1],
            "var_amp": np.where(variable, rng.uniform(0.05, 0.4, total), 0.0),
            "var_period_d": np.where(variable, rng.uniform(0.5, 40.0, total), 0.0),
            "var_phase": np.where(variable, rng.uniform(0, 2 * np.pi, total), 0.0),
            "var_t0_mjd": t0_mjd,
        }
    )
    return df


def flux_ujy(sources: pd.DataFrame, wavelength_um, mjd) -> np.ndarray:
    """True flux density (uJy) of each row of `sources` at the given wavelength(s) and time(s).

    Continuum f0 (lambda/pivot)^alpha (alpha = -2 is a Rayleigh-Jeans star), times (1 + line profiles),
    times (1 + A sin(2 pi (t - t0)/P + phase)). Line widths: lambda/40 FWHM (the LVF's resolution).
    """
    lam = np.asarray(wavelength_um, dtype=float)
    t = np.asarray(mjd, dtype=float)
    cont = sources["f0_ujy"].to_numpy() * (lam / sources["pivot_um"].to_numpy()) ** sources["alpha"].to_numpy()
    shape = np.ones_like(cont)
    for j in (1, 2):
        c = sources[f"line{j}_um"].to_numpy()
        a = sources[f"line{j}_amp"].to_numpy()
        has = np.isfinite(c) & (a != 0)
        sig = np.where(has, c, 1.0) / 40.0 / 2.3548
        shape = shape + np.where(has, a * np.exp(-0.5 * ((lam - np.where(has, c, 0)) / sig) ** 2), 0.0)
    amp = sources["var_amp"].to_numpy()
    per = np.where(amp > 0, sources["var_period_d"].to_numpy(), 1.0)
    var = 1 + amp * np.sin(2 * np.pi * (t - sources["var_t0_mjd"].to_numpy()) / per + sources["var_phase"].to_numpy())
    return cont * shape * var


#: High-proper-motion stars: total motion range (mas/yr; Barnard's star moves 10"/yr), flux range (uJy at the
#: pivot) and catalog epoch (Julian year).
MOVER_PM_MASYR = (3000.0, 6000.0)
MOVER_FLUX_UJY = (3.0e3, 6.0e4)
MOVER_EPOCH = 2016.0


def add_moving_stars(sources: pd.DataFrame, ra: float, dec: float, radius_px: float, seed: int, field: str,
                     mid_mjd: float, n: int) -> pd.DataFrame:
    """The source table with `n` bright, isolated high-proper-motion stars added (3-6"/yr in random
    directions, so several pixels from their catalog positions by the survey), each placed where it is
    farthest from every other source at `mid_mjd`, and proper-motion columns (pmra, pmdec in mas/yr, epoch in
    Julian years) for every source (zero motion for the others)."""
    rng = rng_for(seed, "movers", field)
    rad = radius_px * PIXEL_SCALE_ARCSEC
    cos_dec = np.cos(np.radians(dec))
    out = sources.assign(pmra=0.0, pmdec=0.0, epoch=MOVER_EPOCH)
    for k in range(n):
        r, phi = rad * np.sqrt(rng.uniform(0.02, 0.5, 64)), rng.uniform(0, 2 * np.pi, 64)
        cand_ra, cand_dec = offsets_to_sky(ra, dec, r * np.cos(phi), r * np.sin(phi))
        sep = np.hypot((cand_ra[:, None] - out["ra"].to_numpy()[None, :]) * cos_dec,
                       cand_dec[:, None] - out["dec"].to_numpy()[None, :])
        best = int(np.argmax(sep.min(axis=1)))
        pm, angle = rng.uniform(*MOVER_PM_MASYR), rng.uniform(0, 2 * np.pi)
        star = sources.iloc[[0]].assign(
            name=f"{field}-pm{k + 1:03d}", kind="star", f0_ujy=10 ** rng.uniform(*np.log10(MOVER_FLUX_UJY)),
            alpha=-2.0, line1_um=np.nan, line2_um=np.nan, line1_amp=0.0, line2_amp=0.0, var_amp=0.0,
            var_period_d=0.0, var_phase=0.0, pmra=pm * np.sin(angle), pmdec=pm * np.cos(angle),
            ra=cand_ra[best], dec=cand_dec[best], epoch=_jyear(mid_mjd))
        # its catalog position: where it was at the catalog epoch, so that it is at the chosen place at mid_mjd
        ra0, dec0 = positions_at(star, _mjd(MOVER_EPOCH))
        out = pd.concat([out, star.assign(ra=ra0, dec=dec0, epoch=MOVER_EPOCH)], ignore_index=True)
    return out


def positions_at(sources: pd.DataFrame, mjd: float) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) of the sources at `mjd`, moved by their proper motions from their epochs (astropy's space
    motion: an independent check of spxbatch's own propagation); the table's positions when it has none."""
    ra, dec = sources["ra"].to_numpy(float), sources["dec"].to_numpy(float)
    if "pmra" not in sources.columns:
        return ra, dec
    moving = (sources["pmra"].to_numpy(float) != 0) | (sources["pmdec"].to_numpy(float) != 0)
    if not moving.any():
        return ra, dec
    import warnings

    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from astropy.time import Time
    from erfa import ErfaWarning

    m = sources[moving]
    c = SkyCoord(m["ra"].to_numpy() * u.deg, m["dec"].to_numpy() * u.deg,
                 pm_ra_cosdec=m["pmra"].to_numpy() * u.mas / u.yr, pm_dec=m["pmdec"].to_numpy() * u.mas / u.yr,
                 distance=1e6 * u.pc, radial_velocity=0 * u.km / u.s,
                 obstime=Time(m["epoch"].to_numpy(float), format="jyear"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ErfaWarning)
        moved = c.apply_space_motion(new_obstime=Time(mjd, format="mjd"))
    ra, dec = ra.copy(), dec.copy()
    ra[moving], dec[moving] = moved.ra.deg % 360.0, moved.dec.deg
    return ra, dec


def _jyear(mjd: float) -> float:
    """A Julian-year epoch of an MJD."""
    return 2000.0 + (mjd - 51544.5) / 365.25


def _mjd(jyear: float) -> float:
    """The MJD of a Julian-year epoch."""
    return 51544.5 + (jyear - 2000.0) * 365.25
