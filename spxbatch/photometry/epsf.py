"""The R7 ePSF model: a star's native pixel is its flux times its zone's ePSF at that pixel's centre.

The ePSF is already pixel-convolved, so it is sampled at pixel centres, never integrated over pixels again
(that would widen it a second time). It is evaluated as photutils' `ImagePSF(data, oversampling)` does: the
cubic interpolating spline (s=0) through the array over its own indices, the star at the array centre,
zero outside the array. The spline is linear in the samples, so a value is w_y @ array @ w_x with 1-D
weights w per axis: one small product per star, the same for every zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
from scipy.interpolate import BSpline

from spxbatch.level2.epsf import EPSFTable
from spxbatch.photometry.fwhm import plane_fwhm
from spxbatch.photometry.gather import chunks_of


@lru_cache(maxsize=4)
def _spline_pieces(n: int) -> np.ndarray:
    """(n - 1, 4, n): on each unit interval [i, i + 1] of 0..n-1, the coefficients of t^0..t^3 (t = u - i) of
    the weights by which the cubic interpolating spline through samples at 0..n-1 (FITPACK's knots for s=0,
    as RectBivariateSpline's) combines the samples at u. Exact: the spline is a cubic on every interval."""
    k = np.arange(n, dtype=float)
    knots = np.concatenate([np.zeros(4), k[2:-2], np.full(4, n - 1.0)])
    inverse = np.linalg.inv(BSpline.design_matrix(k, knots, 3).toarray())  # samples -> B-spline coefficients
    t = np.array([0.0, 1 / 3, 2 / 3, 1.0])
    at = np.minimum((k[:-1, None] + t[None, :]).ravel(), n - 1.0)
    w = (BSpline.design_matrix(at, knots, 3).toarray() @ inverse).reshape(n - 1, 4, n)
    return np.linalg.solve(np.vander(t, 4, increasing=True), w)


def spline_weights(u: np.ndarray, n: int) -> np.ndarray:
    """Weights (..., n) such that the interpolating cubic spline through samples f at 0..n-1 is
    weights @ f at positions `u` (fine-pixel indices); all zero outside [0, n - 1] (ImagePSF's fill)."""
    pieces = _spline_pieces(n)
    u = np.asarray(u, dtype=float)
    i = np.clip(np.floor(u), 0, n - 2).astype(np.int64)
    t = (u - i)[..., None]
    c = pieces[i]
    w = c[..., 0, :] + t * (c[..., 1, :] + t * (c[..., 2, :] + t * c[..., 3, :]))
    w[(u < 0) | (u > n - 1)] = 0.0
    return w


@dataclass
class EPSFModel:
    """An ePSF table as photometry asks it: zone FWHMs and each star's pixel-centre image (a tile).

    Every zone is normalised so that its oversampled array sums to OVERSAMP^2, i.e. its pixel-centre
    values sum to ~1: a star's amplitude is its flux (the R7 files' own normalisation is not trusted).
    """

    psf: EPSFTable

    @property
    def oversamp(self) -> int:
        """Fine cells per native pixel (OVSMPX)."""
        return self.psf.oversampling

    @property
    def nzones(self) -> int:
        """Number of zones (table rows)."""
        return self.psf.nzones

    @cached_property
    def arrays(self) -> np.ndarray:
        """The zone arrays (Z, ny, nx), each normalised to sum OVERSAMP^2."""
        a = np.asarray(self.psf.arrays, dtype=float)
        return a * (self.oversamp**2 / a.sum(axis=(1, 2), keepdims=True))

    @cached_property
    def _fwhm(self) -> np.ndarray:
        """FWHM (native px) of every zone's ePSF (the star's pixel-convolved profile)."""
        return np.array([plane_fwhm(a, self.oversamp) for a in self.arrays])

    def fwhm(self, zones: np.ndarray) -> np.ndarray:
        """FWHM (native px) of each given zone."""
        return self._fwhm[np.asarray(zones, dtype=int)]

    def max_fwhm(self, zones: np.ndarray | None = None) -> float:
        """Largest FWHM over `zones` (default all): bounds the neighbourhood of FWHM-based apertures."""
        return float(np.nanmax(self._fwhm if zones is None else self.fwhm(np.unique(zones))))

    def tile_half(self) -> int:
        """Half-size (native px) of a tile: every pixel centre the array reaches at any phase."""
        n = max(self.psf.arrays.shape[1:])
        return int(np.ceil((n / 2) / self.oversamp + 0.5))

    def tiles(self, zones: np.ndarray, phase_x: np.ndarray, phase_y: np.ndarray, mh: int) -> np.ndarray:
        """Each star's unit-flux image on the native pixels around its nearest pixel, (N, 2mh+1, 2mh+1): the
        ePSF at the pixel centres, the star at tile position (mh + phase_x, mh + phase_y)."""
        zones = np.asarray(zones, dtype=np.int64)
        _, ny, nx = self.arrays.shape
        m = np.arange(-mh, mh + 1, dtype=float)
        phase_x = np.asarray(phase_x, dtype=float)
        phase_y = np.asarray(phase_y, dtype=float)
        out = np.empty((zones.size, m.size, m.size))
        for sl in chunks_of(zones.size, 4 * m.size * max(nx, ny)):
            # fine-pixel index of each pixel centre, as ImagePSF: oversampling * offset + array centre
            wx = spline_weights(self.oversamp * (m[None, :] - phase_x[sl, None]) + (nx - 1) / 2, nx)
            wy = spline_weights(self.oversamp * (m[None, :] - phase_y[sl, None]) + (ny - 1) / 2, ny)
            z = zones[sl]
            order = np.argsort(z, kind="stable")
            for rows in np.split(order, np.flatnonzero(np.diff(z[order])) + 1):
                # one (t, n) x (n, n) x (n, t) product per star: its bits do not depend on the batch
                out[sl.start + rows] = (wy[rows] @ self.arrays[z[rows[0]]]) @ wx[rows].transpose(0, 2, 1)
        return out
