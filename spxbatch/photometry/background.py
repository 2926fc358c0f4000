"""Local background: sigma-clipped statistics of many pixel sets at once, annulus and window selection.

Clipping keeps a contiguous range of the SORTED values, so each row is sorted once and every iteration
only moves two indices per row (the median is read at the range's middle, mean and std are masked sums):
the same result as astropy's `sigma_clipped_stats(sigma, maxiters, cenfunc='median', stdfunc='std')`,
vectorised.
"""

from __future__ import annotations

import numpy as np
import sep


def clipped_stats(
    values: np.ndarray, sigma: float = 3.0, iters: int = 3, statistic: str = "median"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre, std, n) per row of `values` (N, M) over finite entries, after sigma clipping.

    Each iteration clips to [median - sigma*std, median + sigma*std] of the kept values (ddof=0), as
    astropy does; the returned centre is the median (or mean) of the finally kept values. NaN if n == 0.
    """
    v = np.sort(values, axis=1)  # NaN sorts last
    n_rows, m = v.shape
    rows = np.arange(n_rows)
    cols = np.arange(m)[None, :]
    hi = np.isfinite(v).sum(axis=1)
    lo = np.zeros(n_rows, dtype=np.int64)
    ref = np.where(hi > 0, v[rows, np.maximum(hi - 1, 0) // 2], 0.0)
    # centred (no cancellation in the sums); non-finite -> +inf, still sorted last, never counted
    d = np.where(np.isfinite(v), v - ref[:, None], np.inf)
    fin = np.where(np.isfinite(d), d, 0.0)
    fin2 = fin * fin

    def stats(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n = hi - lo
        nn = np.maximum(n, 1)
        i1 = np.clip(lo + (nn - 1) // 2, 0, m - 1)
        i2 = np.clip(lo + nn // 2, 0, m - 1)
        med = 0.5 * (d[rows, i1] + d[rows, i2])
        keep = ((cols >= lo[:, None]) & (cols < hi[:, None])).astype(float)
        mean = np.einsum("ij,ij->i", fin, keep) / nn  # masked sums: ~10x faster than row-wise cumsum
        var = np.maximum(np.einsum("ij,ij->i", fin2, keep) / nn - mean**2, 0.0)
        return med, mean, np.sqrt(var), n

    for _ in range(iters):
        med, _mean, std, n = stats(lo, hi)
        lo_v = med - sigma * std
        hi_v = med + sigma * std
        lo = np.maximum(lo, (d < lo_v[:, None]).sum(axis=1) * (n > 0))
        hi_new = (d <= hi_v[:, None]).sum(axis=1)
        hi = np.where(n > 0, np.minimum(hi, hi_new), hi)
        hi = np.maximum(hi, lo)
    med, mean, std, n = stats(lo, hi)
    centre = (med if statistic == "median" else mean) + ref
    bad = n == 0
    centre[bad] = np.nan
    std[bad] = np.nan
    return centre, std, n


def annulus_choice(
    dist: np.ndarray,
    usable: np.ndarray,
    r_in: np.ndarray,
    r_out: np.ndarray,
    step: float,
    steps: int,
    min_pixels: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per source, the first widening k (0..steps) whose annulus [r_in, r_out + k*step] holds at least
    `min_pixels` usable pixel centres; returns (selection (N, M), k) with k = -1 when none does."""
    inner = dist >= r_in[:, None]
    k_sel = np.full(dist.shape[0], -1, dtype=np.int64)
    for k in range(steps, -1, -1):
        sel = usable & inner & (dist <= (r_out + k * step)[:, None])
        ok = sel.sum(axis=1) >= min_pixels
        k_sel = np.where(ok, k, k_sel)
    chosen = np.maximum(k_sel, 0)
    sel = usable & inner & (dist <= (r_out + chosen * step)[:, None]) & (k_sel >= 0)[:, None]
    return sel, k_sel


def window_selection(dist: np.ndarray, usable: np.ndarray, r_excl: np.ndarray) -> np.ndarray:
    """Box pixels whose centre lies beyond r_excl of the source (the box itself is the gather box)."""
    return usable & (dist > r_excl[:, None])


def global_background(image: np.ndarray, mask: np.ndarray, mesh: int) -> tuple[np.ndarray, np.ndarray]:
    """sep.Background of a region (masked pixels ignored): (level map, rms map). Not region-local."""
    data = np.where(mask, 0.0, image).astype(np.float32)
    bw = max(8, min(mesh, image.shape[1]))
    bh = max(8, min(mesh, image.shape[0]))
    bkg = sep.Background(data, mask=mask, bw=bw, bh=bh)
    return bkg.back(), bkg.rms()
