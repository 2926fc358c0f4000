"""Forced PSF fits at fixed positions: every source's flux and one constant background per group, by
inverse-variance weighted linear least squares over the usable pixels of a fixed box around each source.

Sources whose PSF tile reaches another's box are one group (connected components) and are fitted jointly;
groups with the same number of members are solved together as stacked normal matrices. A group's numbers
depend only on its members and the pixels of their boxes: every array of a group has a shape and layout
fixed by the group alone, so a crop, a strip and the frame give the same bits.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

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
    out.group_size[:] = sizes[labels]
    for k in np.unique(sizes):
        g = np.flatnonzero(sizes == k)
        members = order[starts[g][:, None] + np.arange(k)]
        _fit_batch(out, data, var, bad, ix, iy, tiles, members, half)
    return out


def _fit_batch(out: PsfFit, data: np.ndarray, var: np.ndarray, bad: np.ndarray, ix: np.ndarray, iy: np.ndarray,
               tiles: np.ndarray, members: np.ndarray, half: int) -> None:
    """Fit G groups of k members (G, k); write into `out`.

    A group's pixels are its members' boxes, listed box after box (G, k, B): a pixel in m boxes is listed m
    times with 1/m of its weight, so the sums over the list are the sums over the union, in an order that
    the group alone decides."""
    g, k = members.shape
    ny, nx = data.shape
    mh = (tiles.shape[1] - 1) // 2
    off = np.arange(-half, half + 1)
    oy, ox = (a.ravel() for a in np.meshgrid(off, off, indexing="ij"))
    mx, my = ix[members], iy[members]
    px = mx[:, :, None] + ox  # (G, k, B): pixel b of member i's box
    py = my[:, :, None] + oy
    inside = (px >= 0) & (px < nx) & (py >= 0) & (py < ny)
    flat = np.clip(py, 0, ny - 1) * nx + np.clip(px, 0, nx - 1)
    d, v, bd = data.ravel()[flat], var.ravel()[flat], bad.ravel()[flat]
    with np.errstate(invalid="ignore"):
        usable = inside & ~bd & (v > 0) & np.isfinite(v) & np.isfinite(d)
    ivar = np.where(usable, 1.0 / np.where(usable, v, 1.0), 0.0)
    d0 = np.where(usable, d, 0.0)
    dx = px[:, :, None, :] - mx[:, None, :, None]  # (G, k box, k source, B)
    dy = py[:, :, None, :] - my[:, None, :, None]
    copies = ((np.abs(dx) <= half) & (np.abs(dy) <= half)).sum(axis=2)  # boxes holding each listed pixel
    in_tile = (np.abs(dx) <= mh) & (np.abs(dy) <= mh)
    psf = np.where(in_tile, tiles[members[:, None, :, None], np.clip(dy + mh, 0, 2 * mh),
                                  np.clip(dx + mh, 0, 2 * mh)], 0.0)  # (G, k box, k source, B)
    design = np.concatenate([psf, np.ones((g, k, 1, off.size**2))], axis=2).transpose(0, 2, 1, 3).reshape(g, k + 1, -1)
    w = (ivar / copies).reshape(g, -1)
    weighted = design * w[:, None, :]
    normal = (weighted[:, :, None, :] * design[:, None, :, :]).sum(axis=3)
    rhs = (weighted * d0.reshape(g, 1, -1)).sum(axis=2)
    npix = np.rint((usable / copies).reshape(g, -1).sum(axis=1))  # usable pixels of the union
    diag = np.einsum("gii->gi", normal)
    failed = np.any(diag <= 0, axis=1) | (npix <= k + 1)
    scale = np.sqrt(np.where(diag > 0, diag, 1.0))
    eig = np.linalg.eigvalsh(normal / (scale[:, :, None] * scale[:, None, :]))
    failed |= eig[:, 0] < MIN_EIGEN_RATIO * eig[:, -1]
    normal[failed] = np.eye(k + 1)
    cov = np.linalg.inv(normal)
    coef = (cov * rhs[:, None, :]).sum(axis=2)
    flux, err = coef[:, :k], np.sqrt(np.einsum("gii->gi", cov)[:, :k])
    model = (coef[:, :, None] * design).sum(axis=1).reshape(d0.shape)
    resid2 = ivar * (d0 - model) ** 2  # (G, k, B): over each member's own box
    n_own = usable.sum(axis=2)
    dof = n_own * ((npix - (k + 1)) / np.maximum(npix, 1))[:, None]
    own = np.einsum("giib->gib", psf)
    with np.errstate(invalid="ignore", divide="ignore"):
        chi2 = resid2.sum(axis=2) / dof
        light = psf.sum(axis=3) * np.abs(flux)[:, None, :]  # (G, box i, source j)
        blend = 1.0 - np.einsum("gii->gi", light) / light.sum(axis=2)
        unmasked = (own * usable).sum(axis=2) / own.sum(axis=2)
    rows = members.ravel()
    bad_fit = np.repeat(failed, k)
    out.flux[rows] = np.where(bad_fit, np.nan, flux.ravel())
    out.flux_err[rows] = np.where(bad_fit, np.nan, err.ravel())
    out.chi2[rows] = np.where(bad_fit, np.nan, chi2.ravel())
    out.blendedness[rows] = np.where(bad_fit, np.nan, blend.ravel())
    out.unmasked[rows] = unmasked.ravel()
    out.failed[rows] = bad_fit
