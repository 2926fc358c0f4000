"""Forced PSF fits at fixed positions: every source's flux and one constant background per group, by
inverse-variance weighted linear least squares over the usable pixels of a fixed box around each source.

Sources whose PSF tile reaches another's box are one group (connected components) and are fitted jointly;
groups with the same number of members and the same (padded) box are solved together as stacked normal
matrices. A group's numbers depend only on its members and the pixels of their boxes: every array of a
group has a shape and layout fixed by the group alone, so a crop, a strip and the frame give the same bits.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

#: A group's box side is padded up to a multiple of this (fewer batches; the padding depends on the group only).
PAD = 4
#: Normal matrices whose scaled form has an eigenvalue ratio below this are singular: the fit failed.
MIN_EIGEN_RATIO = 1e-10


class PsfFit(NamedTuple):
    """Per source: `flux` (image units x px: the PSF amplitude), `flux_err` (from the covariance), `chi2`
    (reduced, over its own box), `blendedness` (share of the model light in its box that is others'),
    `unmasked` (PSF-weighted usable fraction of its box), `group_size`, `failed` (singular or no dof)."""

    flux: np.ndarray
    flux_err: np.ndarray
    chi2: np.ndarray
    blendedness: np.ndarray
    unmasked: np.ndarray
    group_size: np.ndarray
    failed: np.ndarray


def psf_groups(ix: np.ndarray, iy: np.ndarray, reach: int) -> np.ndarray:
    """Group label (0..G-1) of sources at integer pixels (ix, iy): connected where the Chebyshev distance
    is <= reach (one's tile touches the other's box)."""
    n = ix.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    pairs = cKDTree(np.column_stack([ix, iy]).astype(float)).query_pairs(reach + 0.5, p=np.inf,
                                                                         output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def fit_psf(data: np.ndarray, var: np.ndarray, bad: np.ndarray, ix: np.ndarray, iy: np.ndarray,
            tiles: np.ndarray, labels: np.ndarray, half: int) -> PsfFit:
    """Fit sources at local pixels (ix, iy) with their PSF `tiles` (N, t, t; the star at the tile centre
    pixel + its phase) on `data` (background-level free), `var` and `bad` planes, over boxes of half-size
    `half`, group by group (`labels` from psf_groups; members in their given order)."""
    n = ix.size
    out = PsfFit(*(np.full(n, np.nan) for _ in range(5)), np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool))
    if n == 0:
        return out
    sizes = np.bincount(labels)
    order = np.argsort(labels, kind="stable")
    starts = np.cumsum(sizes) - sizes
    x0 = np.minimum.reduceat(ix[order], starts) - half
    y0 = np.minimum.reduceat(iy[order], starts) - half
    sx = -(-(np.maximum.reduceat(ix[order], starts) + half + 1 - x0) // PAD) * PAD
    sy = -(-(np.maximum.reduceat(iy[order], starts) + half + 1 - y0) // PAD) * PAD
    out.group_size[:] = sizes[labels]
    batch = np.stack([sizes, sx, sy], axis=1)
    keys, inverse = np.unique(batch, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    for b, (k, bx, by) in enumerate(keys):
        g = np.flatnonzero(inverse == b)
        members = order[starts[g][:, None] + np.arange(k)]
        _fit_batch(out, data, var, bad, ix, iy, tiles, members, x0[g], y0[g], int(bx), int(by), half)
    return out


def _fit_batch(out: PsfFit, data: np.ndarray, var: np.ndarray, bad: np.ndarray, ix: np.ndarray, iy: np.ndarray,
               tiles: np.ndarray, members: np.ndarray, x0: np.ndarray, y0: np.ndarray, sx: int, sy: int,
               half: int) -> None:
    """Fit G groups of k members (G, k) on boxes (G, sy, sx) at local origins (x0, y0); write into `out`."""
    g, k = members.shape
    ny, nx = data.shape
    mh = (tiles.shape[1] - 1) // 2
    px = x0[:, None] + np.arange(sx)  # (G, sx)
    py = y0[:, None] + np.arange(sy)  # (G, sy)
    inside = ((px >= 0) & (px < nx))[:, None, :] & ((py >= 0) & (py < ny))[:, :, None]
    flat = (np.clip(py, 0, ny - 1) * nx)[:, :, None] + np.clip(px, 0, nx - 1)[:, None, :]
    d, v, bd = data.ravel()[flat], var.ravel()[flat], bad.ravel()[flat]
    dx = px[:, None, None, :] - ix[members][:, :, None, None]  # (G, k, 1, sx)
    dy = py[:, None, :, None] - iy[members][:, :, None, None]  # (G, k, sy, 1)
    own = (np.abs(dx) <= half) & (np.abs(dy) <= half)  # (G, k, sy, sx)
    with np.errstate(invalid="ignore"):
        usable = own.any(axis=1) & inside & ~bd & (v > 0) & np.isfinite(v) & np.isfinite(d)
    w = np.where(usable, 1.0 / np.where(usable, v, 1.0), 0.0).reshape(g, -1)
    d0 = np.where(usable, d, 0.0).reshape(g, -1)
    in_tile = (np.abs(dx) <= mh) & (np.abs(dy) <= mh)
    psf = np.where(in_tile, tiles[members[:, :, None, None], np.clip(dy + mh, 0, 2 * mh),
                                  np.clip(dx + mh, 0, 2 * mh)], 0.0).reshape(g, k, -1)
    design = np.concatenate([psf, np.ones((g, 1, psf.shape[2]))], axis=1)  # (G, k+1, P)
    weighted = design * w[:, None, :]
    normal = (weighted[:, :, None, :] * design[:, None, :, :]).sum(axis=3)
    rhs = (weighted * d0[:, None, :]).sum(axis=2)
    npix = usable.reshape(g, -1).sum(axis=1)
    diag = np.einsum("gii->gi", normal)
    failed = np.any(diag <= 0, axis=1) | (npix <= k + 1)
    scale = np.sqrt(np.where(diag > 0, diag, 1.0))
    eig = np.linalg.eigvalsh(normal / (scale[:, :, None] * scale[:, None, :]))
    failed |= eig[:, 0] < MIN_EIGEN_RATIO * eig[:, -1]
    normal[failed] = np.eye(k + 1)
    cov = np.linalg.inv(normal)
    coef = (cov * rhs[:, None, :]).sum(axis=2)
    flux, err = coef[:, :k], np.sqrt(np.einsum("gii->gi", cov)[:, :k])
    resid2 = w * (d0 - (coef[:, :, None] * design).sum(axis=1)) ** 2
    own_use = own.reshape(g, k, -1) & usable.reshape(g, 1, -1)
    n_own = own_use.sum(axis=2)
    dof = n_own * (npix - (k + 1))[:, None] / np.maximum(npix, 1)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        chi2 = (own_use * resid2[:, None, :]).sum(axis=2) / dof
        light = (own.reshape(g, k, 1, -1) * psf[:, None, :, :]).sum(axis=3) * np.abs(flux)[:, None, :]  # (G,i,j)
        mine = np.einsum("gii->gi", light)
        blend = 1.0 - mine / light.sum(axis=2)
        unmasked = (psf * own_use).sum(axis=2) / (psf * own.reshape(g, k, -1)).sum(axis=2)
    rows = members.ravel()
    bad_fit = np.repeat(failed, k)
    out.flux[rows] = np.where(bad_fit, np.nan, flux.ravel())
    out.flux_err[rows] = np.where(bad_fit, np.nan, err.ravel())
    out.chi2[rows] = np.where(bad_fit, np.nan, chi2.ravel())
    out.blendedness[rows] = np.where(bad_fit, np.nan, blend.ravel())
    out.unmasked[rows] = unmasked.ravel()
    out.failed[rows] = bad_fit
