"""The PSF phase of measure_region: the measured sources and the catalog neighbours whose PSF reaches them
are grouped (`psf_fit.psf_groups`), each group is fitted on a crop holding its members' boxes, in uJy.

The data is IMAGE - ZODI (scale 1: the fitted constant per group takes the level, the plane its gradient;
with zodi='none', IMAGE), masked and variance-repaired as for apertures (`masks.region_pixels`). A group
reads only its members' boxes, so any region holding them gives the same numbers; a group whose boxes
reach beyond the region (inside the frame) is flagged PSF_CLIPPED.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from astropy.wcs import WCS
from scipy.spatial import cKDTree

from spxbatch.level2.epsf import EPSFTable
from spxbatch.level2.region import ImageRegion, PSFCube
from spxbatch.photometry.config import PhotometryConfig
from spxbatch.photometry.crops import region_crops
from spxbatch.photometry.masks import region_pixels
from spxbatch.photometry.neighbours import SELF_TOL
from spxbatch.photometry.positions import local_pixels
from spxbatch.photometry.psf import AnyPSFModel, psf_tiles, source_psf
from spxbatch.photometry.psf_fit import fit_psf, psf_groups
from spxbatch.photometry.units import source_solid_angle, ujy_per_mjysr_pixel


class PsfColumns(NamedTuple):
    """Per measured source: the PSF columns (uJy fluxes), and where the fit failed, was clipped or local."""

    columns: dict[str, np.ndarray]
    failed: np.ndarray
    clipped: np.ndarray
    local: np.ndarray


class _Components(NamedTuple):
    """What is fitted: parent pixels, PSF tiles, the measured row each is (-1: a neighbour only), and the
    reach that groups them."""

    x: np.ndarray
    y: np.ndarray
    tiles: np.ndarray
    row: np.ndarray
    reach: int


#: Half-size (px) of the largest tile of the archive's PSFs (QR2 cubes: 101 fine px at x10, 6; R7 ePSF: 33 at
#: x5, 4): bounds the fit's reach before the PSF is known.
MAX_TILE_HALF = 6


def psf_reach(config: PhotometryConfig, model: AnyPSFModel) -> int:
    """Chebyshev distance (px) within which two sources are fitted together: one's tile touches the
    other's box."""
    return config.psf_fit_halfsize + model.tile_half()


def psf_neighbourhood(config: PhotometryConfig, model: AnyPSFModel | None) -> int:
    """Half-size (px) of what a source's fit reads through a neighbour within reach: that neighbour's box
    and its variance repair. A chain of neighbours may reach farther; a region too small for it is
    flagged PSF_CLIPPED."""
    tile = MAX_TILE_HALF if model is None else model.tile_half()
    return tile + 2 * config.psf_fit_halfsize + config.variance_repair_halfsize + 1


def _components(x: np.ndarray, y: np.ndarray, nb_x: np.ndarray, nb_y: np.ndarray, region: ImageRegion,
                margin: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The measured sources (parent x, y) and the catalog neighbours on the frame that are not one of them
    and lie within `margin` of the region, in a canonical order (by y, then x): (x, y, measured row or -1).
    A neighbour off the frame is left out: nothing but its wings would constrain its flux."""
    nyp, nxp = region.parent_shape
    lo_x, hi_x = max(region.x0 - margin, 0), min(region.x0 + region.shape[1] + margin, nxp)
    lo_y, hi_y = max(region.y0 - margin, 0), min(region.y0 + region.shape[0] + margin, nyp)
    near = (nb_x >= lo_x - 0.5) & (nb_x < hi_x - 0.5) & (nb_y >= lo_y - 0.5) & (nb_y < hi_y - 0.5)
    ex, ey = nb_x[near], nb_y[near]
    if ex.size and x.size:
        same = cKDTree(np.column_stack([x, y])).query_ball_point(np.column_stack([ex, ey]), SELF_TOL,
                                                                 return_length=True) > 0
        ex, ey = ex[~same], ey[~same]
    cx, cy = np.concatenate([x, ex]), np.concatenate([y, ey])
    row = np.concatenate([np.arange(x.size), np.full(ex.size, -1)])
    order = np.lexsort((cx, cy))
    return cx[order], cy[order], row[order]


def measure_psf(region: ImageRegion, wcs: WCS, config: PhotometryConfig, bits: dict[str, int], model: AnyPSFModel,
                psf: PSFCube | EPSFTable, version: str | None, x: np.ndarray, y: np.ndarray, tiles: np.ndarray,
                neighbours: tuple[np.ndarray, np.ndarray]) -> PsfColumns:
    """PSF fluxes of the sources at parent pixels (x, y) with PSF `tiles` (`psf.psf_tiles`), fitted with the
    catalog `neighbours` (parent x, y) whose PSF reaches them; the PSF columns of the output table, per
    source (at least one)."""
    n = x.size
    half = config.psf_fit_halfsize
    reach = psf_reach(config, model)
    cx, cy, row = _components(x, y, neighbours[0], neighbours[1], region, reach)
    labels = psf_groups(np.floor(cx + 0.5).astype(np.int64), np.floor(cy + 0.5).astype(np.int64), reach)
    keep = np.isin(labels, labels[row >= 0])
    cx, cy, row = cx[keep], cy[keep], row[keep]
    labels = np.unique(labels[keep], return_inverse=True)[1].ravel()
    extra = row < 0
    comp_tiles = np.empty((cx.size, *tiles.shape[1:]), dtype=tiles.dtype)
    comp_tiles[~extra] = tiles[row[~extra]]
    if extra.any():
        zones = source_psf(model, psf, cx[extra], cy[extra], version, config.psf_zone_lookup).zones
        comp_tiles[extra] = psf_tiles(model, zones, cx[extra], cy[extra]).tiles
    comps = _Components(cx, cy, comp_tiles, row, reach)
    cols = {name: np.full(n, np.nan) for name in ("flux_psf", "flux_psf_err", "psf_chi2", "psf_blendedness",
                                                   "psf_unmasked_fraction")}
    cols["psf_group_size"] = np.zeros(n, dtype=np.int32)
    failed = np.ones(n, dtype=bool)
    clipped = np.zeros(n, dtype=bool)
    local = np.zeros(n, dtype=bool)
    # each group is cropped around its first member, grown by the farthest member's distance from it
    first = np.unique(labels, return_index=True)[1]
    extent = np.max(np.maximum(np.abs(cx - cx[first][labels]), np.abs(cy - cy[first][labels])))
    grow = half + config.variance_repair_halfsize + 1 + int(np.ceil(extent)) + 1
    ax, ay = cx[first] - region.x0, cy[first] - region.y0
    by_label = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[by_label], np.arange(labels.max() + 2))
    for groups, crop in region_crops(region, ax, ay, grow, False):
        sel = np.sort(by_label[_ranges(bounds[groups], bounds[groups + 1])])
        _fit_crop(crop, wcs, config, bits, comps, labels, sel, cols, (failed, clipped, local))
    return PsfColumns(cols, failed, clipped, local)


def _ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The concatenated integer ranges lo[i] .. hi[i] - 1."""
    n = hi - lo
    return np.repeat(lo - np.cumsum(n) + n, n) + np.arange(n.sum())


def _fit_crop(crop: ImageRegion, wcs: WCS, config: PhotometryConfig, bits: dict[str, int], comps: _Components,
              labels: np.ndarray, sel: np.ndarray, cols: dict[str, np.ndarray],
              flags: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """Fit the components `sel` (whole groups) on one crop; write the measured ones' columns and `flags`
    (failed, clipped, local)."""
    half = config.psf_fit_halfsize
    x, y, row = comps.x[sel], comps.y[sel], comps.row[sel]
    lab = np.unique(labels[sel], return_inverse=True)[1].ravel()
    pix = region_pixels(crop, config, bits)
    data = pix.image if config.zodi == "none" else pix.image - pix.zodi
    at = local_pixels(crop, x, y, half + config.variance_repair_halfsize, False)
    fit = fit_psf(data, pix.variance, pix.bad, at.ix, at.iy, comps.tiles[sel].astype(float), lab, half,
                  comps.reach, config.psf_max_group)
    # a local fit reads only its neighbours' boxes, yet flagging the whole group keeps the rule simple
    group_clipped = np.bincount(lab, weights=at.clipped).astype(bool)[lab]
    m = row >= 0
    r = row[m]
    to_ujy = ujy_per_mjysr_pixel(source_solid_angle(crop, wcs, at.xl[m], at.yl[m], x[m], y[m]))
    cols["flux_psf"][r] = fit.flux[m] * to_ujy
    cols["flux_psf_err"][r] = fit.flux_err[m] * to_ujy
    cols["psf_chi2"][r] = fit.chi2[m]
    cols["psf_blendedness"][r] = fit.blendedness[m]
    cols["psf_unmasked_fraction"][r] = fit.unmasked[m]
    cols["psf_group_size"][r] = fit.group_size[m]
    for flag, values in zip(flags, (fit.failed, group_clipped, fit.local), strict=True):
        flag[r] = values[m]
