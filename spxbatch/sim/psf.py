"""The simulated PSF: one analytic model per (detector, zone), sampled into the cube and used to render.

The model of a zone is a sum of axis-aligned elliptical Gaussians (a core with an offset of a few hundredths
of a pixel and a wider, displaced wing that makes it asymmetric). Its integral over any rectangle is exact
(products of normal CDFs), so the same function gives both the pixels of a rendered source (integral over
each native pixel at the source's sub-pixel phase) and the cube (integral over each 1/10-pixel cell). It
integrates to 1 over the plane and keeps more than 99.99% of its light inside the cube's 10.1 x 10.1 pixels.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from spxbatch.level2.constants import PSF_OVERSAMP, PSF_SIZE, PSF_ZONES
from spxbatch.sim import lvf

#: Stamp half-size (native pixels) used when rendering a source: beyond it the model holds < 1e-6.
STAMP_HALF = 7
#: Wing weight and width relative to the core.
_WING_WEIGHT = 0.15
_WING_SCALE = 1.4
#: Wing weight of the variant PSF.
_VARIANT_WING_WEIGHT = 0.22


def fwhm_px(wavelength_um) -> np.ndarray:
    """Core FWHM (native pixels) at a wavelength: about 1.7 px at 0.75 um growing to 2.3 px at 5 um."""
    return 1.6 + 0.14 * np.asarray(wavelength_um, dtype=float)


def zone_width(npix: int, zones: int = PSF_ZONES) -> float:
    """Width of one PSF zone (pixels): the image split into `zones` equal zones per axis (QR2: 11)."""
    return npix / zones


def zone_centres(npix: int, zones: int = PSF_ZONES) -> np.ndarray:
    """0-based pixel centres of the zones along one axis."""
    return (np.arange(zones) + 0.5) * zone_width(npix, zones) - 0.5


def zone_index(x, npix: int) -> np.ndarray:
    """Zone index (0..10) along one axis of 0-based pixel positions: the zone with the nearest centre."""
    i = np.floor((np.asarray(x, dtype=float) + 0.5) / zone_width(npix)).astype(int)
    return np.clip(i, 0, PSF_ZONES - 1)


def zone_params(detector: int, npix: int, variant: bool = False) -> np.ndarray:
    """Model parameters of every QR2 zone, shape (121, 2, 5): per component (weight, mux, muy, sigx, sigy).

    Zone k = iy * 11 + ix (the cube's plane order). Offsets are in native pixels from the declared centre.
    `variant` gives the second PSF some files ship under the same detector and version (stronger,
    further displaced wing): real archives were seen doing that, so a PSF must be cached by content.
    """
    return grid_params(detector, npix, PSF_ZONES, PSF_ZONES, variant)


def grid_params(detector: int, npix: int, nzx: int, nzy: int, variant: bool = False) -> np.ndarray:
    """The model at the centres of an nzx x nzy zone grid, shape (nzx * nzy, 2, 5), zone k = iy * nzx + ix.

    One function of the position on the detector: the QR2 cube (11 x 11) and the R7 ePSF (21 x 21, D3
    11 x 41) sample the same optics.
    """
    cx, cy = zone_centres(npix, nzx), zone_centres(npix, nzy)
    ix, iy = np.meshgrid(np.arange(nzx), np.arange(nzy))
    ix, iy = ix.ravel(), iy.ravel()
    u = (cx[ix] - (npix - 1) / 2) / (npix / 2)  # -1..1 across the detector
    v = (cy[iy] - (npix - 1) / 2) / (npix / 2)
    lam = lvf.wavelength_um(detector, cx[ix], cy[iy], npix)
    sig = fwhm_px(lam) / (2 * np.sqrt(2 * np.log(2)))
    ell = 0.04 + 0.03 * (detector % 3)
    out = np.empty((nzx * nzy, 2, 5))
    # Core: slightly elliptical, offset by a few hundredths of a pixel.
    out[:, 0, 0] = 1.0 - _WING_WEIGHT
    out[:, 0, 1] = 0.02 + 0.025 * u
    out[:, 0, 2] = -0.015 + 0.025 * v
    out[:, 0, 3] = sig * (1 + ell * (1 + 0.5 * u))
    out[:, 0, 4] = sig * (1 - ell * (1 + 0.5 * v))
    # Wing: wider and displaced outward from the detector centre (coma-like asymmetry).
    out[:, 1, 0] = _WING_WEIGHT
    out[:, 1, 1] = 0.12 + 0.2 * u
    out[:, 1, 2] = -0.08 + 0.2 * v
    out[:, 1, 3] = _WING_SCALE * sig
    out[:, 1, 4] = _WING_SCALE * sig * (1 + 0.05 * detector / 6)
    if variant:
        out[:, 0, 0], out[:, 1, 0] = 1.0 - _VARIANT_WING_WEIGHT, _VARIANT_WING_WEIGHT
        out[:, 1, 1] += 0.08
    return out


def _cell_integrals(edges: np.ndarray, mu: np.ndarray, sig: np.ndarray) -> np.ndarray:
    """Integrals of unit 1-D Gaussians (N(mu, sig), one per row) over consecutive cells.

    edges: (n, m+1) cell edges per row (offsets from the declared centre); returns (n, m).
    """
    cdf = ndtr((edges - mu[:, None]) / sig[:, None])
    return np.diff(cdf, axis=1)


def integrate(params: np.ndarray, x_edges: np.ndarray, y_edges: np.ndarray) -> np.ndarray:
    """The model integrated over rectangular cells, vectorised over n models.

    params: (n, 2, 5); x_edges (n, mx+1), y_edges (n, my+1): cell edges as offsets (native pixels) from the
    declared PSF centre. Returns (n, my, mx): the fraction of the total light in each cell.
    """
    out = 0.0
    for c in range(params.shape[1]):
        w, mux, muy, sx, sy = (params[:, c, j] for j in range(5))
        gx = _cell_integrals(x_edges, mux, sx)
        gy = _cell_integrals(y_edges, muy, sy)
        out = out + w[:, None, None] * gy[:, :, None] * gx[:, None, :]
    return out


def pixel_convolved(params: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The model convolved with the unit pixel box on a square grid of offsets, vectorised over n models.

    Returns (n, m, m): element [j, i] is the model integrated over the native pixel centred at
    (offsets[i], offsets[j]) from the declared centre, i.e. the fraction of the light that a pixel centred
    there collects (the R7 ePSF's meaning).
    """
    lo, hi = offsets - 0.5, offsets + 0.5
    out = 0.0
    for c in range(params.shape[1]):
        w, mux, muy, sx, sy = (params[:, c, j] for j in range(5))
        gx = ndtr((hi[None, :] - mux[:, None]) / sx[:, None]) - ndtr((lo[None, :] - mux[:, None]) / sx[:, None])
        gy = ndtr((hi[None, :] - muy[:, None]) / sy[:, None]) - ndtr((lo[None, :] - muy[:, None]) / sy[:, None])
        out = out + w[:, None, None] * gy[:, :, None] * gx[:, None, :]
    return out


def cube(detector: int, npix: int, variant: bool = False) -> np.ndarray:
    """The (121, 101, 101) PSF cube of a detector: each plane the zone model over 0.1-px cells, sum 1.

    Cell (j, i) of a plane covers offsets ((i - 50.5)/10 .. (i - 49.5)/10) in x (likewise j in y) native
    pixels from the declared centre, which is the centre of cell (50, 50).
    """
    params = zone_params(detector, npix, variant)
    half = PSF_SIZE // 2
    edges = (np.arange(PSF_SIZE + 1) - half - 0.5) / PSF_OVERSAMP
    e = np.broadcast_to(edges, (params.shape[0], edges.size))
    planes = integrate(params, e, e)
    planes /= planes.sum(axis=(1, 2), keepdims=True)
    return planes.astype(np.float32)


def stamps(params: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rendered unit-flux stamps of sources at 0-based positions (x, y) with per-source model params.

    Returns (stamps (n, 2H+1, 2H+1), x0 (n,), y0 (n,)) where x0, y0 are the 0-based pixel indices of each
    stamp's first column and row. Each stamp pixel is the model integrated over that native pixel.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    x0 = np.rint(x).astype(int) - STAMP_HALF
    y0 = np.rint(y).astype(int) - STAMP_HALF
    k = np.arange(2 * STAMP_HALF + 2) - 0.5
    x_edges = (x0 - x)[:, None] + k[None, :]
    y_edges = (y0 - y)[:, None] + k[None, :]
    return integrate(params, x_edges, y_edges), x0, y0


def header_cards(npix: int, swapped: bool = False) -> list[tuple[str, object, str]]:
    """PSF HDU cards: OVERSAMP and the zone cards XCTR_k, YCTR_k, XWID_k, YWID_k (0-based centres).

    `swapped` reproduces the erratum of pipeline versions <= 6.5.5: x and y exchanged in the zone cards.
    """
    c = zone_centres(npix)
    w = zone_width(npix)
    cards: list[tuple[str, object, str]] = [("OVERSAMP", PSF_OVERSAMP, "PSF oversampling factor")]
    for iy in range(PSF_ZONES):
        for ix in range(PSF_ZONES):
            k = iy * PSF_ZONES + ix + 1
            xc, yc = (c[iy], c[ix]) if swapped else (c[ix], c[iy])
            cards += [
                (f"XCTR_{k}", float(xc), f"Center of x zone ({ix}, {iy})"),
                (f"YCTR_{k}", float(yc), f"Center of y zone ({ix}, {iy})"),
                (f"XWID_{k}", float(w), f"Width of x zone ({ix}, {iy})"),
                (f"YWID_{k}", float(w), f"Width of y zone ({ix}, {iy})"),
            ]
    return cards
