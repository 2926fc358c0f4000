"""The PSF fit's core on arrays: exact fluxes of isolated and blended sources on noiseless images, errors that
are the scatter, failed fits flagged, masked pixels, groups, and the same bits whatever else is fitted."""

from __future__ import annotations

import numpy as np
import pytest

from spxbatch.photometry.psf_fit import fit_psf, psf_groups

MH = 5
HALF = 3


def gaussian_tiles(px: np.ndarray, py: np.ndarray, sigma: float = 0.9) -> np.ndarray:
    """Unit-flux pixel-centre Gaussians (N, 2MH+1, 2MH+1), the star at (MH + px, MH + py)."""
    m = np.arange(-MH, MH + 1)
    gx = np.exp(-0.5 * ((m[None, :] - px[:, None]) / sigma) ** 2)
    gy = np.exp(-0.5 * ((m[None, :] - py[:, None]) / sigma) ** 2)
    t = gy[:, :, None] * gx[:, None, :]
    return t / t.sum(axis=(1, 2), keepdims=True)


def render(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, flux: np.ndarray, sky: float = 2.0):
    """A noiseless image of the stars on a flat sky; (image, ix, iy, tiles)."""
    ix, iy = np.floor(x + 0.5).astype(int), np.floor(y + 0.5).astype(int)
    tiles = gaussian_tiles(x - ix, y - iy)
    img = np.full(shape, sky)
    for k in range(x.size):
        img[iy[k] - MH: iy[k] + MH + 1, ix[k] - MH: ix[k] + MH + 1] += flux[k] * tiles[k]
    return img, ix, iy, tiles


def field(seed: int = 1):
    """30 well-separated stars on a grid, three of them with a companion 1.3-1.8 px away, one negative."""
    rng = np.random.default_rng(seed)
    g = np.arange(12, 190, 30.0)
    gx, gy = np.meshgrid(g, g)
    x = gx.ravel()[:30] + rng.uniform(-0.5, 0.5, 30)
    y = gy.ravel()[:30] + rng.uniform(-0.5, 0.5, 30)
    x = np.concatenate([x, x[:3] + np.array([1.3, 0.0, 1.2])])
    y = np.concatenate([y, y[:3] + np.array([0.0, 1.8, 1.0])])
    flux = rng.uniform(10, 100, x.size)
    flux[5] = -8.0
    return x, y, flux


def fit_field(img, ix, iy, tiles, var=None, bad=None, max_group=25):
    var = np.ones_like(img) if var is None else var
    bad = np.zeros(img.shape, dtype=bool) if bad is None else bad
    return fit_psf(img, var, bad, ix, iy, tiles, psf_groups(ix, iy, HALF + MH), HALF, HALF + MH, max_group)


def test_noiseless_fluxes_are_exact_isolated_blended_and_negative():
    x, y, flux = field()
    img, ix, iy, tiles = render((200, 200), x, y, flux)
    fit = fit_field(img, ix, iy, tiles)
    np.testing.assert_allclose(fit.flux, flux, rtol=1e-10, atol=1e-10)
    assert fit.flux[5] < 0 and not fit.failed.any()
    assert np.all(fit.chi2 < 1e-15)
    assert list(fit.group_size[[0, 1, 2, 30, 31, 32]]) == [2] * 6 and np.all(fit.group_size[3:30] == 1)
    assert np.all(fit.blendedness[3:30] == 0) and np.all((fit.blendedness[[0, 30]] > 0.2)
                                                          & (fit.blendedness[[0, 30]] < 0.8))
    assert np.all(fit.unmasked == 1)
    # a blend's shared light shows as larger errors than an isolated source's
    assert np.all(fit.flux_err[[0, 1, 2]] > np.max(fit.flux_err[3:30])) and fit.flux_err[0] > 1.1 * fit.flux_err[3]


def test_errors_are_the_scatter_of_the_fluxes():
    """1200 noisy copies of an isolated star and of a 1.3 px pair (unit variance): pulls of width 1."""
    rng = np.random.default_rng(4)
    n = 40
    g = np.arange(10, 10 + 20 * n, 20.0)
    gx, gy = (a.ravel() for a in np.meshgrid(g, g))
    x = gx + rng.uniform(-0.5, 0.5, gx.size)
    y = gy + rng.uniform(-0.5, 0.5, gy.size)
    pair = np.arange(x.size) % 2 == 0
    x = np.concatenate([x, x[pair] + 1.3])
    y = np.concatenate([y, y[pair]])
    flux = np.full(x.size, 30.0)
    img, ix, iy, tiles = render((20 * n + 10, 20 * n + 10), x, y, flux)
    img += rng.standard_normal(img.shape)
    fit = fit_field(img, ix, iy, tiles)
    pull = (fit.flux - flux) / fit.flux_err
    for sel in (fit.group_size == 1, fit.group_size == 2):
        assert sel.sum() >= 800
        assert abs(np.mean(pull[sel])) < 0.1 and 0.93 < np.std(pull[sel]) < 1.07
        assert 0.85 < np.mean(fit.chi2[sel]) < 1.15


def test_masked_pixels_are_left_out_and_weighted_by_the_psf():
    x, y, flux = field()
    img, ix, iy, tiles = render((200, 200), x, y, flux)
    bad = np.zeros(img.shape, dtype=bool)
    bad[iy[7], ix[7]] = True  # the core pixel of star 7
    img[iy[7], ix[7]] = 1e9  # whatever a bad pixel holds never enters the fit
    var = np.ones_like(img)
    var[iy[8], ix[8] + 1] = np.nan  # an unusable variance is masked as well
    fit = fit_field(img, ix, iy, tiles, var, bad)
    np.testing.assert_allclose(fit.flux, flux, rtol=1e-9, atol=1e-9)
    box = tiles[7, MH - HALF: MH + HALF + 1, MH - HALF: MH + HALF + 1]
    assert fit.unmasked[7] == pytest.approx(1 - tiles[7, MH, MH] / box.sum(), rel=1e-12)
    assert fit.unmasked[8] < 1 and np.all(fit.unmasked[9:30] == 1)


def test_singular_and_empty_fits_fail():
    x = np.array([50.0, 50.0, 120.0])
    y = np.array([50.0, 50.0, 120.0])
    img, ix, iy, tiles = render((200, 200), x, y, np.array([10.0, 10.0, 10.0]))
    bad = np.zeros(img.shape, dtype=bool)
    bad[110:131, 110:131] = True
    fit = fit_field(img, ix, iy, tiles, bad=bad)
    # two sources on one position: degenerate; a source whose box is all masked: no pixels
    assert fit.failed.all() and np.isnan(fit.flux).all() and np.isnan(fit.flux_err).all()
    assert list(fit.group_size) == [2, 2, 1] and fit.unmasked[2] == 0


def test_groups_join_sources_within_reach_transitively():
    ix = np.array([0, 8, 16, 40, 49, 49])
    iy = np.array([0, 0, 8, 0, 0, 8])
    labels = psf_groups(ix, iy, 8)
    assert labels[0] == labels[1] == labels[2]  # a chain
    assert labels[3] != labels[4] and labels[4] == labels[5]  # 9 px apart: not within reach 8; 8 px: within
    assert len(set(labels)) == 3
    # no pair within reach (the graph is not built): each its own group, labelled as the graph labels them
    assert psf_groups(ix[[0, 2, 3]], iy[[0, 2, 3]], 8).tolist() == [0, 1, 2]
    assert psf_groups(ix[:1], iy[:1], 8).tolist() == [0] and psf_groups(ix[:0], iy[:0], 8).tolist() == []


def test_a_group_has_the_same_bits_alone_on_a_cutout_and_among_others():
    x, y, flux = field(seed=2)
    img, ix, iy, tiles = render((200, 200), x, y, flux)
    img = img + np.random.default_rng(3).standard_normal(img.shape)
    var = np.full(img.shape, 1.3)
    full = fit_field(img, ix, iy, tiles, var)
    for k in (0, 10):  # a pair (0 with 30) and a single
        sel = np.flatnonzero((np.abs(ix - ix[k]) <= 12) & (np.abs(iy - iy[k]) <= 12))
        x0, y0 = ix[k] - 12, iy[k] - 12
        sub = fit_field(img[y0:y0 + 30, x0:x0 + 30], ix[sel] - x0, iy[sel] - y0, tiles[sel],
                        var[y0:y0 + 30, x0:x0 + 30])
        for a, b in zip(sub, full, strict=True):
            assert np.array_equal(a, b[sel], equal_nan=True)


def test_a_group_too_large_is_fitted_source_by_source_with_its_neighbours():
    """A chain of 8 sources 6 px apart (one group) with max_group 3: each is fitted with its two direct
    neighbours; the light of the neighbours' neighbours is left to the background, so close, not exact."""
    x = 30.0 + 6.0 * np.arange(8) + np.linspace(0, 0.4, 8)
    y = np.full(8, 50.3)
    flux = np.linspace(20, 60, 8)
    img, ix, iy, tiles = render((100, 120), x, y, flux)
    joint = fit_field(img, ix, iy, tiles)
    local = fit_field(img, ix, iy, tiles, max_group=3)
    assert not joint.local.any() and np.all(joint.group_size == 8)
    np.testing.assert_allclose(joint.flux, flux, rtol=1e-10)
    assert local.local.all() and list(local.group_size) == [2, 3, 3, 3, 3, 3, 3, 2]
    assert np.all(np.abs(local.flux / flux - 1) < 2e-3) and not np.allclose(local.flux, flux, rtol=1e-6)


def reference_fit(img, var, bad, ix, iy, tiles, members):
    """A group's (flux, flux_err) the plain way: the design matrix row by row over the union of its members'
    boxes (usable pixels only), the PSF columns plus a constant, solved by weighted least squares."""
    pixels = sorted({(py, px) for i in members for py in range(iy[i] - HALF, iy[i] + HALF + 1)
                     for px in range(ix[i] - HALF, ix[i] + HALF + 1)
                     if 0 <= py < img.shape[0] and 0 <= px < img.shape[1] and not bad[py, px]})
    design = np.zeros((len(pixels), len(members) + 1))
    for r, (py, px) in enumerate(pixels):
        for c, j in enumerate(members):
            ty, tx = py - iy[j] + MH, px - ix[j] + MH
            if 0 <= ty <= 2 * MH and 0 <= tx <= 2 * MH:
                design[r, c] = tiles[j, ty, tx]
        design[r, -1] = 1.0
    w = np.array([1 / var[p] for p in pixels])
    data = np.array([img[p] for p in pixels])
    cov = np.linalg.inv(design.T @ (w[:, None] * design))
    coef = cov @ (design.T @ (w * data))
    return coef[:-1], np.sqrt(np.diag(cov))[:-1]


def test_joint_and_local_fits_match_a_plain_per_group_least_squares():
    """Blended groups of 2-5 (one clipped by the frame's edge), noisy data, uneven variance and masked
    pixels: every joint fit, and every local fit of a group too large, is the plain least-squares solution
    over its group's pixels."""
    rng = np.random.default_rng(7)
    centres = np.array([[20.0, 20.0], [60.0, 25.0], [30.0, 70.0], [75.0, 75.0], [1.5, 50.0]])
    members = [2, 3, 4, 5, 2]
    x = np.concatenate([c[0] + rng.uniform(-4, 4, m) for c, m in zip(centres, members, strict=True)])
    y = np.concatenate([c[1] + rng.uniform(-4, 4, m) for c, m in zip(centres, members, strict=True)])
    keep = (x > 0.5) & (y > 0.5)
    x, y = x[keep], y[keep]
    flux = rng.uniform(5, 80, x.size)
    img, ix, iy, tiles = render((120, 120), np.clip(x, MH, None), y, flux)
    ix, iy = np.floor(x + 0.5).astype(int), np.floor(y + 0.5).astype(int)
    tiles = gaussian_tiles(x - ix, y - iy)
    img = img + rng.standard_normal(img.shape)
    var = rng.uniform(0.5, 2.0, img.shape)
    bad = rng.random(img.shape) < 0.05
    labels = psf_groups(ix, iy, HALF + MH)
    sizes = np.bincount(labels)
    assert sorted(sizes) == sorted(members) and ix.min() < HALF  # the groups meant, one at the edge
    for max_group in (25, 3):
        fit = fit_psf(img, var, bad, ix, iy, tiles, labels, HALF, HALF + MH, max_group)
        assert not fit.failed.any()
        for i in range(ix.size):
            near = np.flatnonzero(np.maximum(np.abs(ix - ix[i]), np.abs(iy - iy[i])) <= HALF + MH)
            group = (np.flatnonzero(labels == labels[i]) if sizes[labels[i]] <= max_group
                     else np.concatenate([[i], near[near != i]]))
            ref_flux, ref_err = reference_fit(img, var, bad, ix, iy, tiles, group)
            at = list(group).index(i)
            assert fit.flux[i] == pytest.approx(ref_flux[at], rel=1e-10, abs=1e-10 * ref_err[at])
            assert fit.flux_err[i] == pytest.approx(ref_err[at], rel=1e-10)
            assert fit.group_size[i] == group.size and fit.local[i] == (sizes[labels[i]] > max_group)
