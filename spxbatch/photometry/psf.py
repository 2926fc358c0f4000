"""The PSF: FWHM per zone, each star's light on native pixels (tiles) and the aperture fractions read from
them (zones from `level2.psf_zones`); one model per PSF content, cached. A PSF is a QR2 cube
(`PSFModel`, here) or an R7 ePSF table (`epsf.EPSFModel`); both models answer the same questions.

The QR2 cube holds 11x11 zone planes oversampled OVERSAMP times; fine pixel k of a plane is centred at
(k - c) / OVERSAMP native pixels from the declared PSF centre, c = (size - 1) / 2. A star's native pixel
is the integral of the plane over that pixel, so the fraction of the light an aperture sum collects is
computed per star by binning the plane at the star's exact sub-pixel phase and summing the binned image
through the same exact-overlap circle (sep): it includes the PSF core offset and any asymmetry.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import sep

from spxbatch.level2.epsf import EPSFTable
from spxbatch.level2.psf_zones import zone_index
from spxbatch.level2.region import PSFCube
from spxbatch.photometry.epsf import EPSFModel
from spxbatch.photometry.fwhm import plane_fwhm
from spxbatch.photometry.gather import chunks_of


def _low_rank(plane: np.ndarray, rtol: float, rank: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SVD of a nearly low-rank plane by a randomized range finder (two power iterations; ~1 ms where
    LAPACK's full SVD takes 3-90 ms depending on thread contention); the full SVD when the plane's
    residual after `rank` terms exceeds rtol."""
    omega = np.random.default_rng(0).standard_normal((plane.shape[1], rank))
    y = plane @ omega
    for _ in range(2):
        y = plane @ (plane.T @ y)
    q, _ = np.linalg.qr(y)
    ub, sv, vt = np.linalg.svd(q.T @ plane, full_matrices=False)
    u = q @ ub
    keep = sv > rtol * sv[0]
    resid = plane - (u[:, keep] * sv[keep]) @ vt[keep]
    if np.abs(resid).max() > rtol * np.abs(plane).max():
        return np.linalg.svd(plane)
    return u, sv, vt


@dataclass
class PSFModel:
    """A PSF cube with cached per-zone FWHM and separable (SVD) forms of each zone plane, computed per zone
    when first asked for (a cube read in part holds only the planes its images' sources use).

    Binning a plane over native pixels at an arbitrary sub-pixel phase: with plane = sum_k s_k u_k v_k^T,
    each native pixel's integral is sum_k s_k dU_k dV_k, dU and dV from the cumulative sums of u_k and
    v_k (exact at fine-cell edges) interpolated by a cubic at the pixel edges (a linear interpolation,
    i.e. light spread evenly inside a 0.1-px cell, errs by ~3e-3 of a pixel for a 2-px FWHM).
    Everything is a function of the cube only: one model serves every image sharing it.
    """

    psf: PSFCube
    oversamp: int = 10
    #: singular values below this fraction of the largest are dropped (plane error ~ this).
    svd_rtol: float = 1e-7
    _fwhm: dict[int, float] = field(default_factory=dict)
    #: _fwhm as an array over all zones (NaN where not yet computed), rebuilt when a zone is added.
    _fwhm_lut: np.ndarray | None = None
    #: Per zone: the cumulative profiles (rows, columns) of its kept SVD terms (`_zone_profiles`).
    _profiles: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    #: The profiles of the zones computed so far, stacked (Z, K, n+1), K their largest rank (zero-padded).
    _stacked: tuple[np.ndarray, np.ndarray] | None = None
    #: Held while zones are added: a fetch thread may prepare zones (`prepare`) while photometry reads others.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def from_cube(cls, psf: PSFCube) -> PSFModel:
        """Model of one PSF HDU (OVERSAMP from its header, default 10)."""
        return cls(psf=psf, oversamp=psf.oversampling)

    @property
    def nzones(self) -> int:
        """Number of zone planes."""
        return self.psf.cube.shape[0]

    def _plane(self, zone: int) -> np.ndarray:
        """Zone plane `zone` of the cube; a plane the cube does not hold (read in part) is an error, never
        zeros."""
        self.psf.require([zone])
        return self.psf.cube[zone]

    def fwhm(self, zones: np.ndarray) -> np.ndarray:
        """FWHM (native px) of each given zone (cached per zone)."""
        zones = np.asarray(zones, dtype=int)
        if self._fwhm_lut is None or np.isnan(self._fwhm_lut[zones]).any():
            with self._lock:
                new = [int(z) for z in np.unique(zones) if int(z) not in self._fwhm]
                for z in new:
                    self._fwhm[z] = plane_fwhm(self._plane(z), self.oversamp)
                if new or self._fwhm_lut is None:
                    self._fwhm_lut = np.array([self._fwhm.get(z, np.nan) for z in range(self.nzones)])
        return self._fwhm_lut[zones]

    def max_fwhm(self, zones: np.ndarray | None = None) -> float:
        """Largest FWHM over `zones` (default all: a cube read in part must name its zones): bounds the
        neighbourhood of FWHM-based apertures."""
        return float(np.nanmax(self.fwhm(np.arange(self.nzones) if zones is None else np.unique(zones))))

    def tile_half(self) -> int:
        """Half-size (native px) of a binned tile: holds the whole plane (+-5.05 px) at any phase."""
        n = self.psf.cube.shape[1]
        return int(np.ceil((n / 2) / self.oversamp + 0.5))

    def _zone_profiles(self, zone: int) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative sums (k, n) of s_k u_k (rows, y) and v_k (columns, x) of one normalised plane."""
        plane = np.asarray(self._plane(zone), dtype=float)
        plane = plane / plane.sum()
        u, sv, vt = _low_rank(plane, self.svd_rtol)
        k = max(1, int(np.sum(sv > self.svd_rtol * sv[0])))
        return np.cumsum((u[:, :k] * sv[:k]).T, axis=1), np.cumsum(vt[:k], axis=1)

    def _separable(self, zones: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The cumulative profiles (Z, K, n+1) of every zone computed so far, `zones` among them (each plane's
        terms zero-padded to the largest rank K: padding adds exact zeros to a tile's sum over k)."""
        with self._lock:
            new = [int(z) for z in np.unique(zones) if int(z) not in self._profiles]
            for z in new:
                self._profiles[z] = self._zone_profiles(z)
            if new or self._stacked is None:
                kmax = max(a.shape[0] for a, _ in self._profiles.values())
                n = self.psf.cube.shape[1]
                cu = np.zeros((self.nzones, kmax, n + 1))
                cv = np.zeros((self.nzones, kmax, n + 1))
                for z, (a, b) in self._profiles.items():
                    cu[z, : a.shape[0], 1:] = a
                    cv[z, : b.shape[0], 1:] = b
                self._stacked = (cu, cv)
            return self._stacked

    def prepare(self, zones: np.ndarray) -> None:
        """Compute the FWHM and profiles of `zones` now (a fetch thread does, while the link is busy), so the
        measurement finds them done."""
        zones = np.asarray(zones, dtype=np.int64)
        if zones.size:
            self.fwhm(zones)
            self._separable(zones)

    def _edge_integrals(self, cum: np.ndarray, zones: np.ndarray, phase: np.ndarray, mh: int) -> np.ndarray:
        """Integrals (N, K, 2mh+1) over native pixels m = -mh..mh (centred at integers) of the cumulative
        profiles cum[zone] (Z, K, n+1), for stars at sub-pixel `phase` from pixel 0's centre."""
        n = cum.shape[2] - 1
        c = (n - 1) / 2.0
        o = self.oversamp
        m = np.arange(-mh, mh + 2) - 0.5
        u = np.clip((m[None, :] - phase[:, None]) * o + c + 0.5, 0.0, float(n))  # fine-cell units
        i0 = np.minimum(np.floor(u).astype(np.int64), n - 1)
        t = (u - i0)[:, None, :]
        # cubic (4-point Lagrange) interpolation of the cumulative, exact at cell edges
        w = (-t * (t - 1) * (t - 2) / 6, (t + 1) * (t - 1) * (t - 2) / 2,
             -(t + 1) * t * (t - 2) / 2, (t + 1) * t * (t - 1) / 6)
        zz = zones[:, None, None]
        kk = np.arange(cum.shape[1])[None, :, None]
        val = sum(cum[zz, kk, np.clip(i0 + j - 1, 0, n)[:, None, :]] * w[j] for j in range(4))  # (N, K, E)
        return np.diff(val, axis=2)

    def tiles(self, zones: np.ndarray, phase_x: np.ndarray, phase_y: np.ndarray, mh: int) -> np.ndarray:
        """Each star's light binned onto native pixels around its nearest pixel: (N, 2mh+1, 2mh+1), the
        star at tile position (mh + phase_x, mh + phase_y), normalised to a total of 1 over the plane."""
        zones = np.asarray(zones, dtype=np.int64)
        cu, cv = self._separable(zones)
        gy = self._edge_integrals(cu, zones, np.asarray(phase_y, dtype=float), mh)
        gx = self._edge_integrals(cv, zones, np.asarray(phase_x, dtype=float), mh)
        # terms added one k at a time (not einsum/BLAS, nor a pairwise sum): the same bits whatever the batch
        # size, and whatever rank the zones computed before padded K to (a zero term adds exactly nothing)
        out = gy[:, 0, :, None] * gx[:, 0, None, :]
        for k in range(1, gy.shape[1]):
            out += gy[:, k, :, None] * gx[:, k, None, :]
        return out


def aperture_fractions(
    tiles: np.ndarray, phase_x: np.ndarray, phase_y: np.ndarray, radius: np.ndarray,
    missing: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(enclosed, kept): the fraction of each star's total light that an exact-overlap circle of
    `radius` collects from its `tiles` (N, t, t) (a model's tiles at the same phases: the star's light on
    native pixels, a QR2 plane binned or an ePSF sampled at pixel centres), and the part of it on pixels
    not `missing` ((N, t, t) booleans, or None: kept = enclosed)."""
    k, t, _ = tiles.shape
    mh = (t - 1) // 2
    radius = np.broadcast_to(np.asarray(radius, dtype=float), (k,))
    cx = mh + np.asarray(phase_x)
    cy = np.arange(k) * t + mh + np.asarray(phase_y)
    full, _, _ = sep.sum_circle(np.ascontiguousarray(tiles.reshape(k * t, t)), cx, cy, radius, subpix=0)
    if missing is None:
        return full, full
    kept, _, _ = sep.sum_circle(np.ascontiguousarray((tiles * ~missing).reshape(k * t, t)), cx, cy, radius,
                                subpix=0)
    return full, kept


def phases(v: np.ndarray) -> np.ndarray:
    """Sub-pixel phase v - round(v) in [-0.5, 0.5], on a 2^-30 px grid: exact at any mosaic offset, so a
    star's numbers do not depend on its place in a batch."""
    v = np.asarray(v, dtype=float)
    return np.round((v - np.floor(v + 0.5)) * 2.0**30) / 2.0**30


#: The model of either PSF: what photometry asks of a PSF (zones' FWHM, tiles).
AnyPSFModel = PSFModel | EPSFModel

#: PSF models by content, the most recently used first out: (kind, digest, shape, dtype, OVERSAMP) -> model.
_MODELS: OrderedDict[tuple, AnyPSFModel] = OrderedDict()
_MAX_MODELS = 8


def psf_model_for(psf: PSFCube | EPSFTable) -> AnyPSFModel:
    """The cached model of a QR2 cube (PSFModel) or an R7 ePSF table (EPSFModel), keyed by its CONTENT
    digest (the same PSF ships with every exposure of a detector; one detector was seen shipping two cubes
    under one version), LRU of 8; a cube read in part also by its array, which the fetch layer fills with
    planes as later images need them (the model keeps the array alive, so its id is not reused)."""
    planes = psf.arrays if isinstance(psf, EPSFTable) else psf.cube
    key = (type(psf).__name__, psf.digest, planes.shape, planes.dtype.str, psf.oversampling)
    if isinstance(psf, PSFCube) and psf.held is not None:  # read in part: the model reads this array's planes
        key += (id(planes),)
    model = _MODELS.get(key)
    if model is None:
        model = EPSFModel(psf) if isinstance(psf, EPSFTable) else PSFModel.from_cube(psf)
        _MODELS[key] = model
    _MODELS.move_to_end(key)
    while len(_MODELS) > _MAX_MODELS:
        _MODELS.popitem(last=False)
    return model


def prepare_psf(psf: PSFCube | EPSFTable | None) -> None:
    """Compute the model of a PSF read in part for the planes it holds, before the measurement asks (a cube
    held whole, or an ePSF table, is left to the measurement: it may need only a few of its zones)."""
    if isinstance(psf, PSFCube) and psf.held is not None:
        psf_model_for(psf).prepare(np.array(sorted(psf.held), dtype=np.int64))


class SourcePSF(NamedTuple):
    """Each source's PSF zone and that zone's FWHM (native px); zone 0 and fwhm None without a PSF."""

    zones: np.ndarray
    fwhm: np.ndarray | None


def source_psf(model: AnyPSFModel | None, psf: PSFCube | EPSFTable | None, x: np.ndarray, y: np.ndarray,
               version: str | None, method: str) -> SourcePSF:
    """Zone (from `psf`'s own zone cards: equal cubes may carry other cards) and FWHM of sources at parent
    pixels (x, y)."""
    if model is None:
        return SourcePSF(np.zeros(x.size, dtype=np.int64), None)
    zones = zone_index(psf, x, y, version=version, method=method)
    return SourcePSF(zones, model.fwhm(zones))


class PsfTiles(NamedTuple):
    """Each star's light on the native pixels around its nearest pixel, (N, t, t) float32, and its phases."""

    tiles: np.ndarray
    phase_x: np.ndarray
    phase_y: np.ndarray


def psf_tiles(model: AnyPSFModel, zones: np.ndarray, xl: np.ndarray, yl: np.ndarray) -> PsfTiles:
    """The PSF tiles of stars at region-local (xl, yl) in their zones (aperture correction, masked pixels,
    and the star's own light in its background pixels read them)."""
    phx, phy = phases(xl), phases(yl)
    mh = model.tile_half()
    t = 2 * mh + 1
    tiles = np.empty((xl.size, t, t), dtype=np.float32)
    for sl in chunks_of(xl.size, t * t):
        tiles[sl] = model.tiles(zones[sl], phx[sl], phy[sl], mh)
    return PsfTiles(tiles, phx, phy)
