"""Forced PSF fits at fixed positions: every source's flux and one constant background per group, by
inverse-variance weighted linear least squares over the usable pixels of a fixed box around each source.

Sources whose PSF tile reaches another's box are one group (connected components) and are fitted jointly;
groups with the same number of members are solved together as stacked normal matrices. A group larger than
`max_group` (a crowded field percolates into one) is not solved whole: each of its sources is fitted with
its direct neighbours only (a local group, `local`). A group's numbers depend only on its members and the
pixels of their boxes: every array of a group has a shape and layout fixed by the group alone, so a crop,
a strip and the frame give the same bits.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from spxbatch.photometry.gather import chunks_of

#: Normal matrices whose scaled form has an eigenvalue ratio below this are singular: the fit failed.
MIN_EIGEN_RATIO = 1e-10


class PsfFit(NamedTuple):
    """Per source: `flux` (image units x px: the PSF amplitude), `flux_err` (from the covariance), `chi2`
    (reduced, over its own box), `blendedness` (share of the model light in its box that is others'),
    `unmasked` (PSF-weighted usable fraction of its box), `group_size` (of the group it was fitted in),
    `failed` (singular or no dof), `local` (fitted with its direct neighbours only: its group was too large)."""

    flux: np.ndarray
    flux_err: np.ndarray
    chi2: np.ndarray
    blendedness: np.ndarray
    unmasked: np.ndarray
    group_size: np.ndarray
    failed: np.ndarray
    local: np.ndarray


def _reach_pairs(ix: np.ndarray, iy: np.ndarray, reach: int) -> np.ndarray:
    """The pairs (i < j) of sources at integer pixels (ix, iy) within Chebyshev `reach`, (P, 2)."""
    if ix.size < 2:
        return np.empty((0, 2), dtype=np.int64)
    return cKDTree(np.column_stack([ix, iy]).astype(float)).query_pairs(reach + 0.5, p=np.inf, output_type="ndarray")


def _graph(pairs: np.ndarray, n: int) -> coo_matrix:
    """The graph (n x n, upper triangle) of the given pairs."""
    return coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))


def psf_groups(ix: np.ndarray, iy: np.ndarray, reach: int) -> np.ndarray:
    """Group label (0..G-1) of sources at integer pixels (ix, iy): connected where the Chebyshev distance
    is <= reach (one's tile touches the other's box); with no pair within reach, each its own group (the
    labels the graph would give, without building it: the common case of a sparse field's regions)."""
    pairs = _reach_pairs(ix, iy, reach)
    if not len(pairs):
        return np.arange(ix.size, dtype=np.int64)
    return connected_components(_graph(pairs, ix.size), directed=False)[1].astype(np.int64)


def fit_psf(data: np.ndarray, var: np.ndarray, bad: np.ndarray, ix: np.ndarray, iy: np.ndarray,
            tiles: np.ndarray, labels: np.ndarray, half: int, reach: int, max_group: int) -> PsfFit:
    """Fit sources at local pixels (ix, iy) with their PSF `tiles` (N, t, t; the star at the tile centre
    pixel + its phase) on `data` (background-level free), `var` and `bad` planes, over boxes of half-size
    `half`, group by group (`labels` from psf_groups with `reach`; members in their given order); the
    sources of groups larger than `max_group` in local groups (each with its neighbours within reach)."""
    n = ix.size
    out = PsfFit(*(np.full(n, np.nan) for _ in range(5)), np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool),
                 np.zeros(n, dtype=bool))
    if n == 0:
        return out
    sizes = np.bincount(labels)
    order = np.argsort(labels, kind="stable")
    starts = np.cumsum(sizes) - sizes
    fit = (data, var, bad, ix, iy, tiles, half)
    for k in np.unique(sizes[sizes <= max_group]):
        g = np.flatnonzero(sizes == k)
        _fit_groups(out, fit, order[starts[g][:, None] + np.arange(k)], centre_only=False)
    big = np.flatnonzero(sizes[labels] > max_group)
    if big.size:
        out.local[big] = True
        adj = _graph(_reach_pairs(ix[big], iy[big], reach), big.size)
        adj = (adj + adj.T).tocsr()
        adj.sort_indices()
        degree = np.diff(adj.indptr)
        for d in np.unique(degree):
            rows = np.flatnonzero(degree == d)
            local = np.column_stack([rows, adj.indices[adj.indptr[rows][:, None] + np.arange(d)]])
            _fit_groups(out, fit, big[local], centre_only=True)
    return out


def _fit_groups(out: PsfFit, fit: tuple, members: np.ndarray, centre_only: bool) -> None:
    """Fit groups of equal size (G, k), in chunks of bounded memory; write every member's results, or with
    `centre_only` the first member's (a local group)."""
    g, k = members.shape
    box = (2 * fit[-1] + 1) ** 2
    for sl in chunks_of(g, (k + 1) ** 2 * k * box):
        results = _fit_batch(*fit, members[sl])
        take = slice(0, 1) if centre_only else slice(None)
        rows = members[sl, take].ravel()
        for name, values in zip(("flux", "flux_err", "chi2", "blendedness", "unmasked", "failed"), results,
                                strict=True):
            getattr(out, name)[rows] = values[:, take].ravel()
        out.group_size[rows] = k


def _fit_batch(data: np.ndarray, var: np.ndarray, bad: np.ndarray, ix: np.ndarray, iy: np.ndarray,
               tiles: np.ndarray, half: int, members: np.ndarray) -> tuple[np.ndarray, ...]:
    """Fit G groups of k members (G, k): (flux, flux_err, chi2, blendedness, unmasked, failed), each (G, k).

    A group's pixels are its members' boxes, listed box after box (G, k, B): a pixel in m boxes is listed m
    times with 1/m of its weight, so the sums over the list are the sums over the union, in an order that
    the group alone decides."""
    g, k = members.shape
    ny, nx = data.shape
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
    psf = _psf_in_boxes(tiles, members, mx, my, half)  # (G, k source j, k box i, B)
    design = psf.reshape(g, k, -1)  # the PSF columns of the design; the background's is all ones
    rx, ry = mx[:, :, None] - mx[:, None, :], my[:, :, None] - my[:, None, :]  # (G, box i, box j)
    near_x, near_y = ((np.abs(r[..., None] + off) <= half).astype(float) for r in (rx, ry))  # (G, i, j, 2h+1)
    # boxes holding each listed pixel: a box is a product of row and column ranges (exact small integers)
    copies = (near_y.transpose(0, 1, 3, 2) @ near_x).reshape(g, k, -1)
    w = (ivar / copies).reshape(g, -1)
    wd = w * d0.reshape(g, -1)
    weighted = design * w[:, None, :]
    normal = np.empty((g, k + 1, k + 1))  # one matrix product per group, the background's row and column
    normal[:, :k, :k] = weighted @ design.transpose(0, 2, 1)
    normal[:, :k, k] = normal[:, k, :k] = weighted.sum(axis=2)
    normal[:, k, k] = w.sum(axis=1)
    rhs = np.concatenate([(design @ wd[:, :, None])[:, :, 0], wd.sum(axis=1)[:, None]], axis=1)
    npix = np.rint((usable / copies).reshape(g, -1).sum(axis=1))  # usable pixels of the union
    diag = np.einsum("gii->gi", normal)
    failed = np.any(diag <= 0, axis=1) | (npix <= k + 1)
    scale = np.sqrt(np.where(diag > 0, diag, 1.0))
    eig = np.linalg.eigvalsh(normal / (scale[:, :, None] * scale[:, None, :]))
    failed |= eig[:, 0] < MIN_EIGEN_RATIO * eig[:, -1]
    normal[failed] = np.eye(k + 1)
    cov = np.linalg.inv(normal)
    coef = (cov @ rhs[:, :, None])[:, :, 0]
    flux, err = coef[:, :k], np.sqrt(np.einsum("gii->gi", cov)[:, :k])
    model = ((coef[:, None, :k] @ design)[:, 0] + coef[:, k:]).reshape(d0.shape)
    resid2 = ivar * (d0 - model) ** 2  # (G, k, B): over each member's own box
    n_own = usable.sum(axis=2)
    dof = n_own * ((npix - (k + 1)) / np.maximum(npix, 1))[:, None]
    own = np.einsum("giib->gib", psf)  # each source's PSF in its own box
    with np.errstate(invalid="ignore", divide="ignore"):
        chi2 = resid2.sum(axis=2) / dof
        light = psf.sum(axis=3).transpose(0, 2, 1) * np.abs(flux)[:, None, :]  # (G, box i, source j)
        blend = 1.0 - np.einsum("gii->gi", light) / light.sum(axis=2)
        unmasked = (own * usable).sum(axis=2) / own.sum(axis=2)
    bad_fit = np.repeat(failed[:, None], k, axis=1)
    return (np.where(bad_fit, np.nan, flux), np.where(bad_fit, np.nan, err), np.where(bad_fit, np.nan, chi2),
            np.where(bad_fit, np.nan, blend), unmasked, bad_fit)


def _psf_in_boxes(tiles: np.ndarray, members: np.ndarray, mx: np.ndarray, my: np.ndarray,
                  half: int) -> np.ndarray:
    """Each member's PSF tile over every member's box (G, k source, k box, B), 0 off its tile.

    One gather of box-sized windows (a view) of the tiles zero-padded by a box plus one pixel: a box whose
    offset from a source is clipped to just past the tile's reach reads only the padding, so no pixel needs
    a test of its own."""
    g, k = members.shape
    t = tiles.shape[1]
    mh, pad = (t - 1) // 2, 2 * half + 1
    width = t + 2 * pad
    padded = np.zeros((g * k, width, width))
    padded[:, pad:pad + t, pad:pad + t] = tiles[members.ravel()]
    reach = half + mh + 1
    # corner of box i's window in source j's padded tile (G, j, i)
    cx = np.clip(mx[:, None, :] - mx[:, :, None], -reach, reach) + mh + pad - half
    cy = np.clip(my[:, None, :] - my[:, :, None], -reach, reach) + mh + pad - half
    windows = np.lib.stride_tricks.sliding_window_view(padded, (2 * half + 1, 2 * half + 1), axis=(1, 2))
    source = np.arange(g * k).reshape(g, k, 1)
    return windows[source, cy, cx].reshape(g, k, k, -1)
