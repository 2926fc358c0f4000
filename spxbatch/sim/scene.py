"""What one detector sees in one exposure besides the sources: zodiacal light, the residual sky the ZODI
model misses, He I airglow, noise, and the detector's defects and artifacts with their FLAGS bits.

The ZODI plane is the smooth model; the true sky is ZODI x a scale (not 1) + a residual structure + in
D1/D2 He I 1.083 um airglow along lines of constant wavelength. Noise is drawn from the true rate;
VARIANCE is a read-noise floor plus a photon term from the observed rate.
"""

from __future__ import annotations

import numpy as np

from spxbatch.sim import lvf
from spxbatch.sim.r7 import R7_FLAG_BITS
from spxbatch.sim.rng import INSTRUMENT_SEED, rng_for

#: Zodi level (MJy/sr) per band at the reference ecliptic latitude.
ZODI_LEVEL = {1: 0.35, 2: 0.30, 3: 0.22, 4: 0.12, 5: 0.25, 6: 0.55}
#: Read-noise variance floor ((MJy/sr)^2) and photon-noise gain ((MJy/sr) per unit rate).
READ_VAR = 1.0e-5
PHOTON_GAIN = 5.0e-5
#: Thresholds on the true surface brightness (MJy/sr) for NONLINEAR and OVERFLOW.
NONLINEAR_LEVEL = 100.0
OVERFLOW_LEVEL = 500.0
#: SOURCE is set where the source model exceeds this (MJy/sr).
SOURCE_LEVEL = 0.002
#: He I airglow line (um).
HEI_UM = 1.083


def bit(name: str) -> int:
    """The FLAGS value of one named bit (QR2's bits, or the ones only R7 files have)."""
    return 1 << R7_FLAG_BITS[name]


def sky(detector: int, npix: int, seed: int, key: str, cwave: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """(true sky, ZODI model, parameters) in MJy/sr for one exposure of one detector."""
    rng = rng_for(seed, "sky", key, detector)
    g = (np.arange(npix) - (npix - 1) / 2) / (npix / 2)
    u, v = g[None, :], g[:, None]
    level = ZODI_LEVEL[detector] * float(rng.uniform(0.6, 1.6))
    gx, gy, gxy = rng.uniform(-0.08, 0.08, 3)
    zodi = level * (1 + gx * u + gy * v + gxy * u * v)
    scale = float(rng.uniform(0.96, 1.06))
    # Residual structure: a few low-order waves, 1-3% of the zodi level, that the smooth model lacks
    # (cos(a + b) expanded so each wave is two outer products).
    resid = np.zeros_like(zodi)
    for _ in range(3):
        kx, ky = rng.uniform(1.0, 4.0, 2) * np.pi
        ph = rng.uniform(0, 2 * np.pi)
        amp = rng.uniform(0.005, 0.012) * level
        a, b = kx * g + ph, ky * g
        resid += amp * (np.cos(b)[:, None] * np.cos(a)[None, :] - np.sin(b)[:, None] * np.sin(a)[None, :])
    true = zodi * scale + resid
    airglow = 0.0
    if detector in (1, 2):
        airglow = float(rng.uniform(0.02, 0.15))
        sig = lvf.bandwidth_um(detector, cwave) / 2.3548
        true = true + airglow * np.exp(-0.5 * ((cwave - HEI_UM) / sig) ** 2)
    return true, zodi, {"zodi_scale": scale, "zodi_level": level, "airglow_mjysr": airglow}


def defect_map(detector: int, npix: int) -> list[tuple[int, int, str, bool, bool]]:
    """Fixed bad pixels of a detector: (x, y, kind, nan_variance, nan_image), kind HOT/COLD/NONFUNC."""
    rng = rng_for(INSTRUMENT_SEED, "defects", detector, npix)
    out = []
    used: set[tuple[int, int]] = set()
    for kind, frac in (("HOT", 1.5e-4), ("COLD", 1.5e-4), ("NONFUNC", 1.0e-4)):
        n = max(3, round(frac * npix * npix))
        for _ in range(n):
            x, y = (int(c) for c in rng.integers(0, npix, 2))
            if (x, y) in used:
                continue
            used.add((x, y))
            nan_var = bool(rng.uniform() < 0.5)
            out.append((x, y, kind, nan_var, kind == "NONFUNC" and nan_var))
    return out


def dichroic_mask(detector: int, npix: int) -> np.ndarray | None:
    """Dark corners of bands 3 and 4 (two quarter discs of radius ~9% of the frame), or None."""
    if detector not in (3, 4):
        return None
    yy, xx = np.mgrid[0:npix, 0:npix]
    r = 0.09 * npix
    corners = ((0, 0), (npix - 1, 0)) if detector == 3 else ((0, npix - 1), (npix - 1, npix - 1))
    mask = np.zeros((npix, npix), bool)
    for cx, cy in corners:
        mask |= (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
    return mask


def cosmic_rays(npix: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, float, str]]:
    """Cosmic-ray hits: (x pixels, y pixels, deposit MJy/sr, flag name) for short tracks."""
    n = max(2, round(5e-5 * npix * npix))
    hits = []
    for _ in range(n):
        x, y = rng.integers(2, npix - 6, 2)
        length = int(rng.integers(1, 5))
        dx, dy = (int(c) for c in rng.integers(-1, 2, 2))
        xs = np.clip(x + dx * np.arange(length), 0, npix - 1)
        ys = np.clip(y + dy * np.arange(length), 0, npix - 1)
        hits.append((xs, ys, float(rng.uniform(5, 150)), "TRANSIENT" if rng.uniform() < 0.75 else "OUTLIER"))
    return hits


def noisy(true: np.ndarray, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
    """(observed image, VARIANCE): noise drawn from the true rate, variance from the observed rate."""
    if rng is None:
        obs = true.copy()
    else:
        sigma = np.sqrt(READ_VAR + PHOTON_GAIN * np.clip(true, 0, None))
        obs = true + sigma * rng.standard_normal(true.shape)
    var = READ_VAR + PHOTON_GAIN * np.clip(np.nan_to_num(obs), 0, None)
    return obs, var
