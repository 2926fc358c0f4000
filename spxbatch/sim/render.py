"""Render one detector image: sources with the zone PSF, sky, noise, artifacts, FLAGS and its truth rows.

The order follows the physics: light (sources, sky, airglow, dark corners, persistence) makes the true
rate; noise is drawn from it; then detector effects alter the read-out (cosmic rays, bad pixels, a lost
packet, the rare unflagged cold pixel); VARIANCE comes from the observed rate. Every altered pixel is
recorded as a defect so the tests can check that each FLAGS bit is exactly the one planted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.ndimage import maximum_filter

from spxbatch.level2.constants import (
    FLAG_BITS,
    MJY_PER_SR_TO_UJY_PER_ARCSEC2,
    PIXEL_SCALE_ARCSEC,
    PSF_ZONES,
    QR2_DEFAULT_BAD_FLAGS,
)
from spxbatch.level2.flags import flag_mask
from spxbatch.sim import lvf, optics, psf, r7_artifacts, scene, sky
from spxbatch.sim.frame import Frame
from spxbatch.sim.instrument import Detector
from spxbatch.sim.r7 import R7_ONLY_MASK
from spxbatch.sim.rng import rng_for
from spxbatch.sim.survey import Exposure

#: Persistence of a bright star's image lasts into exposures starting within this time (d).
PERSIST_DAYS = 1.0 / 24.0
#: Persistent signal as a fraction of the star's peak surface brightness.
PERSIST_FRACTION = 0.003
_BAD_MASK = flag_mask(QR2_DEFAULT_BAD_FLAGS, FLAG_BITS)

#: Per detector: (end MJD of its last exposure, [(x, y, persistent MJy/sr)] of the bright stars it saw).
Persistence = dict[int, tuple[float, list[tuple[float, float, float]]]]


@dataclass
class Placement:
    """Where the sources fall on one detector image: indices into the source table and 0-based x, y."""

    crval: tuple[float, float]
    near: np.ndarray
    x: np.ndarray
    y: np.ndarray

    def on_image(self, npix: int) -> np.ndarray:
        """Which placed sources have their centre on the image."""
        return (self.x >= -0.5) & (self.x < npix - 0.5) & (self.y >= -0.5) & (self.y < npix - 0.5)


@dataclass
class Rendered:
    """The planes of one image, its truth rows, the defects planted and the sky parameters."""

    image: np.ndarray
    flags: np.ndarray
    variance: np.ndarray
    zodi: np.ndarray
    truth: pd.DataFrame
    defects: list[dict]
    sky: dict


def place(det: Detector, crval: tuple[float, float], pa: float, sources: pd.DataFrame,
          mjd: float | None = None) -> Placement:
    """0-based pixel positions (exact SIP inverse) of the sources whose light can reach the image, at `mjd`
    for sources with proper motions."""
    ra0, dec0 = crval
    wcs = optics.make_wcs(det.optics, ra0, dec0, pa)
    ra, dec = sky.positions_at(sources, mjd) if mjd is not None else (sources["ra"].to_numpy(),
                                                                       sources["dec"].to_numpy())
    ra, dec = np.radians(ra), np.radians(dec)
    r0, d0 = np.radians(ra0), np.radians(dec0)
    # Angular pre-selection (TAN is meaningless far away), then the exact SIP inverse.
    cosd = np.sin(dec) * np.sin(d0) + np.cos(dec) * np.cos(d0) * np.cos(ra - r0)
    reach = np.radians((det.npix * 0.75 + 20) * PIXEL_SCALE_ARCSEC / 3600.0)
    near = np.flatnonzero(cosd > np.cos(reach))
    x = np.full(len(sources), np.nan)
    y = np.full(len(sources), np.nan)
    if near.size:
        world = np.column_stack([np.degrees(ra[near]), np.degrees(dec[near])])
        px = wcs.all_world2pix(world, 0, tolerance=1e-9, maxiter=100)
        x[near], y[near] = px[:, 0], px[:, 1]
    m, n = psf.STAMP_HALF + 1, det.npix
    near = np.flatnonzero((x > -m) & (x < n - 1 + m) & (y > -m) & (y < n - 1 + m))
    return Placement(crval, near, x[near], y[near])


def zone_of(x: np.ndarray, y: np.ndarray, npix: int) -> np.ndarray:
    """0-based PSF plane (iy * 11 + ix) of positions: the zone with the nearest centre."""
    return psf.zone_index(y, npix) * PSF_ZONES + psf.zone_index(x, npix)


def render_sources(
    det: Detector, x: np.ndarray, y: np.ndarray, flux: np.ndarray, variant: bool = False, r7: bool = False
) -> np.ndarray:
    """Surface brightness (MJy/sr) of point sources of total flux `flux` (uJy) at 0-based (x, y).

    QR2: each pixel is the zone model integrated over it; R7 (`r7`): the file's ePSF at the pixel centre.
    """
    n = det.npix
    if x.size == 0:
        return np.zeros((n, n))
    if r7:
        st, x0, y0 = det.epsf.stamps(x, y)
    else:
        params = det.psf_params_variant if variant else det.psf_params
        st, x0, y0 = psf.stamps(params[zone_of(x, y, n)], x, y)
    pad = 2 * psf.STAMP_HALF + 3
    k = np.arange(st.shape[1])
    rows = y0[:, None, None] + k[None, :, None] + pad
    cols = x0[:, None, None] + k[None, None, :] + pad
    m = n + 2 * pad
    canvas = np.bincount((rows * m + cols).ravel(), weights=(st * flux[:, None, None]).ravel(), minlength=m * m)
    img = canvas.reshape(m, m)[pad : pad + n, pad : pad + n]
    return img / (MJY_PER_SR_TO_UJY_PER_ARCSEC2 * det.solid_angle)


def render(
    exp: Exposure,
    det: Detector,
    where: Placement,
    sources: pd.DataFrame,
    *,
    seed: int,
    noise: bool,
    artifacts: bool,
    persistence: Persistence,
    unflagged_cold: bool = False,
    lost_packet: bool = False,
    psf_variant: bool = False,
    r7: bool = False,
) -> Rendered:
    """Render one detector image of one exposure; updates `persistence` for the detector's next image.

    `r7` renders it as an R7 file: stars from the detector's ePSF, BLOOM, and (with `artifacts`) the
    R7-only artifacts of `r7_artifacts`, drawn from their own stream so the noise stays the QR2 file's.
    """
    d, n = det.number, det.npix
    rng = rng_for(seed, "file", f"{exp.obs_id}/D{d}")
    src = sources.iloc[where.near]
    lam = lvf.wavelength_um(d, where.x, where.y, n)
    flux = sky.flux_ujy(src, lam, exp.mjd_avg)
    src_img = render_sources(det, where.x, where.y, flux, psf_variant, r7)
    true_sky, zodi, sky_par = scene.sky(d, n, seed, exp.obs_id, det.wave_images[0])
    f = Frame(true=true_sky + src_img, flags=np.zeros((n, n), np.int32))
    f.flags[src_img > scene.SOURCE_LEVEL] |= scene.bit("SOURCE")
    f.flags[f.true > scene.NONLINEAR_LEVEL] |= scene.bit("NONLINEAR")
    f.flags[f.true > scene.OVERFLOW_LEVEL] |= scene.bit("OVERFLOW") | scene.bit("SUR_ERROR")
    on = where.on_image(n)
    peak = flux / (MJY_PER_SR_TO_UJY_PER_ARCSEC2 * det.omega_median) * 0.2
    bright = on & (peak > scene.NONLINEAR_LEVEL)
    stars = [(float(a), float(b), float(p)) for a, b, p in zip(where.x[bright], where.y[bright], peak[bright],
                                                              strict=True)]
    r7_rng = rng_for(seed, "r7-artifacts", f"{exp.obs_id}/D{d}")
    if r7:
        r7_artifacts.bloom(f.flags)
    if artifacts:
        _dark_corners(f, det)
        _persistence(f, persistence, d, exp, rng)
        if r7:
            r7_artifacts.optical(f, stars, r7_rng)
    f.obs, _ = scene.noisy(f.true, rng if noise else None)
    f.nan_var = np.zeros((n, n), bool)
    f.unflagged = np.zeros((n, n), bool)
    if artifacts:
        _cosmic_rays(f, rng)
        _bad_pixels(f, det)
        _phantoms(f, rng)
        if r7:
            r7_artifacts.electronic(f, stars, r7_rng)
    if lost_packet:
        _lost_packet(f, rng)
    if unflagged_cold:
        _unflagged_cold(f, where, on, rng)
    var = scene.READ_VAR + scene.PHOTON_GAIN * np.clip(np.nan_to_num(f.obs), 0, None)
    var[f.nan_var] = np.nan
    persistence[d] = (exp.mjd_end, [(x, y, p * PERSIST_FRACTION) for x, y, p in stars])
    zones = det.epsf.zone_of(where.x[on], where.y[on]) if r7 else zone_of(where.x[on], where.y[on], n)
    truth = _truth(f, var, exp, d, src, where, on, lam, flux, zones)
    truth["psf_variant"] = psf_variant
    for dd in f.defects:
        dd["bits"] = int(f.flags[dd["y"], dd["x"]])
        dd["nan_variance"] = bool(f.nan_var[dd["y"], dd["x"]])
        dd["nan_image"] = bool(~np.isfinite(f.obs[dd["y"], dd["x"]]))
    return Rendered(f.obs, f.flags, var, zodi, truth, f.defects, sky_par)


def _dark_corners(f: Frame, det: Detector) -> None:
    """Bands 3 and 4: the dichroic darkens two corners (light lost before the detector)."""
    if det.dichroic is not None:
        f.true = np.where(det.dichroic, f.true * 0.3, f.true)
        f.flags[det.dichroic] |= scene.bit("DICHROIC")


def _persistence(f: Frame, persistence: Persistence, d: int, exp: Exposure, rng: np.random.Generator) -> None:
    """Trails left by the bright stars of the detector's previous exposure, if it was recent."""
    n = f.true.shape[0]
    prev_end, trails = persistence.get(d, (-np.inf, []))
    if exp.mjd_beg - prev_end >= PERSIST_DAYS:
        return
    for px, py, amp in trails:
        ang = rng.uniform(0, np.pi)
        steps = np.arange(int(rng.integers(6, 25)))
        tx = np.rint(px + steps * np.cos(ang)).astype(int)
        ty = np.rint(py + steps * np.sin(ang)).astype(int)
        ok = (tx >= 0) & (tx < n) & (ty >= 0) & (ty < n)
        f.true[ty[ok], tx[ok]] += amp
        f.mark(ty[ok], tx[ok], "PERSIST")


def _cosmic_rays(f: Frame, rng: np.random.Generator) -> None:
    """Cosmic-ray tracks: charge added to the read-out, flagged TRANSIENT or OUTLIER."""
    for xs, ys, dep, name in scene.cosmic_rays(f.obs.shape[0], rng):
        f.obs[ys, xs] += dep
        f.mark(ys, xs, name)


def _bad_pixels(f: Frame, det: Detector) -> None:
    """The detector's fixed HOT / COLD / NONFUNC pixels, some with NaN variance (NONFUNC: NaN image)."""
    for px, py, kind, nan_var, nan_img in det.defects:
        if kind == "HOT":
            f.obs[py, px] += 2.0 + 40.0 * ((px * 7919 + py * 104729) % 1000) / 1000.0
        elif kind == "COLD":
            f.obs[py, px] *= 0.05
        else:
            f.obs[py, px] = np.nan if nan_img else 0.0
        f.mark(py, px, kind)
        f.nan_var[py, px] = nan_var


def _phantoms(f: Frame, rng: np.random.Generator) -> None:
    """Sparse PHANTOM flags (informational: not a bad bit), pixel values untouched."""
    n = f.obs.shape[0]
    p = rng.integers(0, n, (max(1, n * n // 2000), 2))
    f.mark(p[:, 1], p[:, 0], "PHANTOM")


def _lost_packet(f: Frame, rng: np.random.Generator) -> None:
    """A corrupted downlink packet: a run of pixels along one row with no data (NaN image and variance)."""
    n = f.obs.shape[0]
    py, px = (int(c) for c in rng.integers(0, n, 2))
    xs = np.arange(px, min(n, px + max(8, n // 8)))
    f.obs[py, xs] = np.nan
    f.nan_var[py, xs] = True
    f.mark(np.full(xs.size, py), xs, "MISSING_DATA")


def _unflagged_cold(f: Frame, where: Placement, on: np.ndarray, rng: np.random.Generator) -> None:
    """A cold pixel next to a target that the pipeline failed to flag (value x0.1, no FLAGS bit)."""
    n = f.obs.shape[0]
    x, y = where.x, where.y
    inner = np.flatnonzero(on & (x > 8) & (x < n - 9) & (y > 8) & (y < n - 9))
    for i in rng.permutation(inner):
        ux, uy = int(np.rint(x[i])) + 1, int(np.rint(y[i]))
        if f.flags[uy, ux] & ~scene.bit("SOURCE") == 0:
            f.obs[uy, ux] *= 0.1
            f.unflagged[uy, ux] = True
            f.defects.append({"x": ux, "y": uy, "kind": "UNFLAGGED_COLD"})
            return


def _truth(f: Frame, var, exp: Exposure, d: int, src, where: Placement, on, lam, flux, zones) -> pd.DataFrame:
    """One truth row per source whose centre is on the image, with the pixel-quality summary near it.

    `zones` are the sources' 0-based PSF zones (QR2 cube plane or R7 ePSF table row); `psf_zone` is 1-based.
    """
    bad = ((f.flags & _BAD_MASK) != 0) | f.unflagged | ~np.isfinite(f.obs) | ~np.isfinite(var)
    ix, iy = np.rint(where.x[on]).astype(int), np.rint(where.y[on]).astype(int)
    return pd.DataFrame(
        {
            "name": src["name"].to_numpy()[on],
            "obs_id": exp.obs_id,
            "detector": d,
            "x": where.x[on],
            "y": where.y[on],
            "wavelength_um": lam[on],
            "bandwidth_um": lvf.bandwidth_um(d, lam[on]),
            "mjd": exp.mjd_avg,
            "flux_ujy": flux[on],
            "psf_zone": zones + 1,
            "collection": exp.collection,
            "bad_pixel_near": maximum_filter(bad, size=9, mode="constant")[iy, ix],
            "unflagged_defect_near": maximum_filter(f.unflagged, size=9, mode="constant")[iy, ix],
            "flags_near": or_near(f.flags, ix, iy, 3),
            "artifact_bits_near": or_near(f.flags & R7_ONLY_MASK, ix, iy, 4),
        }
    )


def or_near(flags: np.ndarray, ix: np.ndarray, iy: np.ndarray, half: int) -> np.ndarray:
    """Bitwise OR of `flags` over the (2 half + 1)^2 box around each pixel (ix, iy) (outside: 0)."""
    padded = np.pad(flags, half)
    k = np.arange(2 * half + 1)
    block = padded[iy[:, None, None] + k[None, :, None], ix[:, None, None] + k[None, None, :]]
    return np.bitwise_or.reduce(block.reshape(len(ix), -1), axis=1) if len(ix) else np.zeros(0, flags.dtype)
