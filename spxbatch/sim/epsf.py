"""The R7 ePSF of a detector: the simulator's PSF model, pixel-convolved, sampled x5 on 33 x 33 per zone.

Each zone's array samples the zone model convolved with the unit pixel box (`psf.pixel_convolved`) at
offsets ((i - 16) / 5, (j - 16) / 5) native pixels and is normalised to sum 25 (r7.EPSF_SUM). R7 stars
are rendered from these arrays, evaluated at pixel centres exactly as photutils' `ImagePSF` evaluates them
(a cubic `RectBivariateSpline`, s=0, zero outside the array): a star's pixel is its flux times the file's
ePSF at that pixel's centre, so the ePSF in the file is the PSF the stars were drawn with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits
from scipy.interpolate import RectBivariateSpline

from spxbatch.sim import lvf, psf
from spxbatch.sim.r7 import EPSF_OVERSAMPLE, EPSF_SIZE, EPSF_SUM, epsf_zones
from spxbatch.sim.rng import INSTRUMENT_SEED, rng_for

#: Array index of the PSF centre.
CENTRE = EPSF_SIZE // 2
#: Stamp half-size (native pixels) when rendering: the array reaches +-3.2 px, so +-4 px holds all of it.
STAMP_HALF = 4
#: Informational cards of the EPSF table header, as IRSA's file has them (real-headers/).
_TABLE_CARDS = [
    ("MAXIT", 10, ""),
    ("SMOOTH", "quartic", ""),
    ("JUNKCLN", 1, ""),
    ("KEEPNAT", 3.5, ""),
    ("KEEPOS", 17.5, ""),
    ("DETCOORD", "sky", "MWIR pixels flipped on X to match SWIR view"),
    ("ORDERING", "x-fast then y", ""),
    ("BINSRC", "filename", ""),
    ("GEOMSRC", "uniform active-pixel tiling", ""),
    ("NEFFSRC", "stats table exact filename match", ""),
    ("WVMSRC", "stats table exact filename match", ""),
    ("CWAVESRC", "spectral_wcs CWAVE", ""),
    ("CBANDSRC", "spectral_wcs CBAND", ""),
]


@dataclass
class Epsf:
    """One detector's ePSF: zone grid (centres as the file's float32 columns) and one array per zone."""

    detector: int
    npix: int
    nzx: int
    nzy: int
    xcenter: np.ndarray
    ycenter: np.ndarray
    arrays: np.ndarray  # (nzy * nzx, 33, 33) float64, zone k = iy * nzx + ix
    _splines: dict[int, RectBivariateSpline] = field(default_factory=dict, repr=False)

    @property
    def n_zones(self) -> int:
        return self.nzx * self.nzy

    def zone_of(self, x, y) -> np.ndarray:
        """Zone (table row) of 0-based positions: the nearest zone centre along each axis."""
        ix = np.abs(np.asarray(x, float)[:, None] - self.xcenter[None, :]).argmin(axis=1)
        iy = np.abs(np.asarray(y, float)[:, None] - self.ycenter[None, :]).argmin(axis=1)
        return iy * self.nzx + ix

    def spline(self, zone: int) -> RectBivariateSpline:
        """photutils ImagePSF's interpolator of one zone: x first, over the array's own indices."""
        if zone not in self._splines:
            k = np.arange(EPSF_SIZE)
            self._splines[zone] = RectBivariateSpline(k, k, self.arrays[zone].T, kx=3, ky=3, s=0)
        return self._splines[zone]

    def evaluate(self, zone: int, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """The zone's ePSF at offsets (dx, dy) native pixels from the star (ImagePSF's arithmetic)."""
        xi = EPSF_OVERSAMPLE * np.asarray(dx, float)
        yi = EPSF_OVERSAMPLE * np.asarray(dy, float)
        xi += float(CENTRE)
        yi += float(CENTRE)
        out = self.spline(zone)(xi, yi, grid=False)
        out[(xi < 0) | (xi > EPSF_SIZE - 1) | (yi < 0) | (yi > EPSF_SIZE - 1)] = 0.0
        return out

    def stamps(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit-flux stamps (n, 9, 9) of sources at 0-based (x, y), and each stamp's first column and row.

        Pixel (r, c) of a stamp is the source's zone ePSF at that pixel's centre, offset (c - x, r - y).
        """
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        x0 = np.rint(x).astype(int) - STAMP_HALF
        y0 = np.rint(y).astype(int) - STAMP_HALF
        k = np.arange(2 * STAMP_HALF + 1)
        cols = np.broadcast_to(x0[:, None, None] + k[None, None, :], (x.size, k.size, k.size))
        rows = np.broadcast_to(y0[:, None, None] + k[None, :, None], (x.size, k.size, k.size))
        out = np.zeros((x.size, k.size, k.size))
        zones = self.zone_of(x, y)
        for zone in np.unique(zones):
            sel = np.flatnonzero(zones == zone)
            dx = cols[sel] - x[sel, None, None]
            dy = rows[sel] - y[sel, None, None]
            out[sel] = self.evaluate(int(zone), dx.ravel(), dy.ravel()).reshape(dx.shape)
        return out, x0, y0


def make_epsf(detector: int, npix: int, zones: tuple[int, int] | None = None) -> Epsf:
    """The ePSF of a detector on its R7 zone grid (or on `zones` = (nx, ny), e.g. an older delivery's)."""
    nzx, nzy = zones or epsf_zones(detector)
    params = psf.grid_params(detector, npix, nzx, nzy)
    offsets = (np.arange(EPSF_SIZE) - CENTRE) / EPSF_OVERSAMPLE
    arrays = psf.pixel_convolved(params, offsets)
    arrays *= EPSF_SUM / arrays.sum(axis=(1, 2), keepdims=True)
    xc = psf.zone_centres(npix, nzx).astype(np.float32).astype(float)
    yc = psf.zone_centres(npix, nzy).astype(np.float32).astype(float)
    return Epsf(detector, npix, nzx, nzy, xc, yc, arrays)


def neff(arrays: np.ndarray) -> np.ndarray:
    """Noise-equivalent area (pixels) of each zone, 1 / sum(p^2) over pixel centres at zero phase."""
    sub = arrays[:, CENTRE % EPSF_OVERSAMPLE :: EPSF_OVERSAMPLE, CENTRE % EPSF_OVERSAMPLE :: EPSF_OVERSAMPLE]
    return 1.0 / (sub**2).sum(axis=(1, 2))


def table_hdu(model: Epsf) -> fits.BinTableHDU:
    """The EPSF binary table (one row per zone, x fastest) with IRSA's columns and header cards."""
    nzx, nzy, n = model.nzx, model.nzy, model.npix
    ix, iy = np.meshgrid(np.arange(nzx), np.arange(nzy))
    ix, iy = ix.ravel(), iy.ravel()
    xc, yc = model.xcenter[ix], model.ycenter[iy]
    lam = lvf.wavelength_um(model.detector, xc, yc, n)
    nstar = rng_for(INSTRUMENT_SEED, "epsf-nstar", model.detector, nzx, nzy).integers(40, 400, model.n_zones)
    f32 = np.float32
    cols = [
        fits.Column(name="BINX", format="J", array=ix.astype(np.int32)),
        fits.Column(name="BINY", format="J", array=iy.astype(np.int32)),
        fits.Column(name="XCENTER", format="E", unit="pixel", array=xc.astype(f32)),
        fits.Column(name="YCENTER", format="E", unit="pixel", array=yc.astype(f32)),
        fits.Column(name="XWIDTH", format="E", unit="pixel", array=np.full(ix.size, n / nzx, f32)),
        fits.Column(name="YWIDTH", format="E", unit="pixel", array=np.full(ix.size, n / nzy, f32)),
        fits.Column(name="NSTAR", format="J", array=nstar.astype(np.int32)),
        fits.Column(name="NEFF_MEAN", format="E", array=neff(model.arrays).astype(f32)),
        fits.Column(name="CWAVE", format="E", unit="um", array=lam.astype(f32)),
        fits.Column(name="CBAND", format="E", unit="um", array=lvf.bandwidth_um(model.detector, lam).astype(f32)),
        fits.Column(name="EPSF", format=f"{EPSF_SIZE**2}D", dim=f"({EPSF_SIZE},{EPSF_SIZE})", array=model.arrays),
    ]
    hdu = fits.BinTableHDU.from_columns(cols, name="EPSF")
    hdu.header["DETECTOR"] = (str(model.detector), "1-3: SWIR, 4-6: MWIR")
    hdu.header["OVSMPX"] = EPSF_OVERSAMPLE
    hdu.header["OVSMPY"] = EPSF_OVERSAMPLE
    for key, value, comment in _TABLE_CARDS:
        hdu.header[key] = (value, comment)
    return hdu


def mosaic(model: Epsf, gutter: int = 1) -> np.ndarray:
    """All zone arrays tiled (x fastest) with `gutter` zero pixels between them: the EPSF_MOSAIC image."""
    step = EPSF_SIZE + gutter
    out = np.zeros((model.nzy * step - gutter, model.nzx * step - gutter))
    for k in range(model.n_zones):
        iy, ix = divmod(k, model.nzx)
        out[iy * step : iy * step + EPSF_SIZE, ix * step : ix * step + EPSF_SIZE] = model.arrays[k]
    return out
