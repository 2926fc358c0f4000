"""The FLAGS only R7 files carry, planted in a rendered frame: BLOOM on saturated cores, and around bright
stars a HALO, a GHOST, a STREAK and CROSSTALK, plus a SNOWBALL.

BLOOM marks OVERFLOW pixels and the rows the charge bleeds into (pixel values untouched, as OVERFLOW's).
Every other artifact alters the pixels it flags (light before the noise is drawn, charge after) and is
recorded as a defect of its kind, so the truth knows which measurements it touches. Draws come from the
frame's own R7 stream, so an R7 reprocessing keeps the noise of the QR2 file of the same exposure.
"""

from __future__ import annotations

import numpy as np

from spxbatch.sim import scene
from spxbatch.sim.frame import Frame

#: Rows above and below a saturated pixel that bloom.
BLOOM_BLEED = 2
#: Halo ring radii (px) and surface brightness relative to the star's peak.
HALO_RADII = (4.0, 7.0)
HALO_LEVEL = 2e-3
#: Ghost (reflected through the array centre): radius (px) and level relative to the peak.
GHOST_RADIUS = 2.5
GHOST_LEVEL = 1e-3
#: Streak from the brightest star: length (fraction of the image), surface brightness (MJy/sr).
STREAK_LENGTH = 0.25
STREAK_LEVEL = 0.05
#: Crosstalk: a negative echo of the star's 3x3 core one readout channel (1/32 of the row) away.
CROSSTALK_LEVEL = -2e-3
READOUT_CHANNELS = 32
#: Snowball: a round charge deposit of this radius (px) and level (MJy/sr).
SNOWBALL_RADIUS = 2.0
SNOWBALL_LEVEL = 40.0

#: A bright star on the image: (x, y, peak surface brightness MJy/sr).
Star = tuple[float, float, float]


def bloom(flags: np.ndarray) -> None:
    """BLOOM on every OVERFLOW pixel and on the BLOOM_BLEED rows above and below it."""
    over = (flags & scene.bit("OVERFLOW")) != 0
    spread = over.copy()
    for s in range(1, BLOOM_BLEED + 1):
        spread[s:] |= over[:-s]
        spread[:-s] |= over[s:]
    flags[spread] |= scene.bit("BLOOM")


def _disc(n: int, x: float, y: float, r_in: float, r_out: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (ys, xs) on the image whose centres lie at r_in <= distance < r_out from (x, y)."""
    lo_x, hi_x = max(0, int(np.floor(x - r_out))), min(n, int(np.ceil(x + r_out)) + 1)
    lo_y, hi_y = max(0, int(np.floor(y - r_out))), min(n, int(np.ceil(y + r_out)) + 1)
    yy, xx = np.mgrid[lo_y:hi_y, lo_x:hi_x]
    r = np.hypot(xx - x, yy - y)
    inside = (r >= r_in) & (r < r_out)
    return yy[inside], xx[inside]


def optical(f: Frame, stars: list[Star], rng: np.random.Generator) -> None:
    """Light that is not a source (before noise): a halo and a ghost per bright star, one streak."""
    n = f.true.shape[0]
    for x, y, peak in stars:
        ys, xs = _disc(n, x, y, *HALO_RADII)
        f.true[ys, xs] += HALO_LEVEL * peak
        f.mark(ys, xs, "HALO")
        ys, xs = _disc(n, n - 1 - x, n - 1 - y, 0.0, GHOST_RADIUS)
        f.true[ys, xs] += GHOST_LEVEL * peak
        f.mark(ys, xs, "GHOST")
    if stars:
        x, y, _ = max(stars, key=lambda s: s[2])
        ang = rng.uniform(0, 2 * np.pi)
        steps = np.arange(6, 6 + max(8, int(STREAK_LENGTH * n)))
        xs = np.rint(x + steps * np.cos(ang)).astype(int)
        ys = np.rint(y + steps * np.sin(ang)).astype(int)
        ok = (xs >= 0) & (xs < n) & (ys >= 0) & (ys < n)
        pix = np.unique(np.stack([ys[ok], xs[ok]]), axis=1)
        f.true[pix[0], pix[1]] += STREAK_LEVEL
        f.mark(pix[0], pix[1], "STREAK")


def electronic(f: Frame, stars: list[Star], rng: np.random.Generator) -> None:
    """Charge in the read-out (after noise): crosstalk echoes of bright stars and one snowball."""
    n = f.obs.shape[0]
    width = max(4, n // READOUT_CHANNELS)
    for x, y, _ in stars:
        cx, cy = int(np.rint(x)), int(np.rint(y))
        ex = cx + width if cx + width + 1 < n else cx - width
        ys, xs = np.mgrid[cy - 1 : cy + 2, ex - 1 : ex + 2]
        src = np.mgrid[cy - 1 : cy + 2, cx - 1 : cx + 2]
        ok = (ys >= 0) & (ys < n) & (xs >= 0) & (xs < n) & (src[0] >= 0) & (src[0] < n) & (src[1] >= 0)
        ok &= src[1] < n
        if ok.any():
            f.obs[ys[ok], xs[ok]] += CROSSTALK_LEVEL * f.true[src[0][ok], src[1][ok]]
            f.mark(ys[ok], xs[ok], "CROSSTALK")
    sx, sy = rng.uniform(SNOWBALL_RADIUS, n - 1 - SNOWBALL_RADIUS, 2)
    ys, xs = _disc(n, sx, sy, 0.0, SNOWBALL_RADIUS)
    f.obs[ys, xs] += SNOWBALL_LEVEL
    f.mark(ys, xs, "SNOWBALL")
