"""Background under each source: the level of I - s Z from a clipped annulus, a window, a region-wide map
or none, with its error and the star's own PSF light in the same pixels.

The kernel is sigma-clipped statistics of many pixel sets at once. Clipping keeps a contiguous range of
the SORTED values, so each row is sorted once and every iteration only moves two indices per row (the
median is read at the range's middle, mean and std are masked sums): the same result as astropy's
`sigma_clipped_stats(sigma, maxiters, cenfunc='median', stdfunc='std')`, vectorised.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import sep

from spxbatch.photometry.aperture import annulus_radii, background_extent
from spxbatch.photometry.config import PhotometryConfig
from spxbatch.photometry.gather import Boxes, chunks_of, ring_size
from spxbatch.photometry.masks import Pixels
from spxbatch.photometry.neighbours import NeighbourMask
from spxbatch.photometry.positions import LocalPixels
from spxbatch.photometry.psf import PsfTiles
from spxbatch.photometry.wavelength import sample_map


def clipped_stats(
    values: np.ndarray, sigma: float = 3.0, iters: int = 3, statistic: str = "median"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre, std, n) per row of `values` (N, M) over finite entries, after sigma clipping.

    Each iteration clips to [median - sigma*std, median + sigma*std] of the kept values (ddof=0), as
    astropy does; the returned centre is the median (or mean) of the finally kept values. NaN if n == 0.
    """
    d = np.sort(values, axis=1)  # NaN sorts last
    n_rows, m = d.shape
    rows = np.arange(n_rows)
    cols = np.arange(m)[None, :]
    finite = np.isfinite(d)
    hi = finite.sum(axis=1)
    lo = np.zeros(n_rows, dtype=np.int64)
    ref = np.where(hi > 0, d[rows, np.maximum(hi - 1, 0) // 2], 0.0)
    # centred (no cancellation in the sums); non-finite -> +inf, still sorted last, never counted; in place
    np.subtract(d, ref[:, None], out=d)
    d[~finite] = np.inf
    fin = np.where(np.isfinite(d), d, 0.0)
    fin2 = fin * fin
    # the kept-range masks of every call share these buffers (fresh arrays this size cost their page faults)
    inside, below = np.empty(d.shape, dtype=bool), np.empty(d.shape, dtype=bool)
    keep_buf = np.empty(d.shape)

    def stats(r: np.ndarray | slice, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                          np.ndarray]:
        """(median, mean, std, n) of the rows `r` kept in [lo, hi) (each row on its own: same bits for a
        row whichever rows come with it)."""
        dr = d[r]
        k = np.arange(dr.shape[0])
        n = hi - lo
        nn = np.maximum(n, 1)
        i1 = np.clip(lo + (nn - 1) // 2, 0, m - 1)
        i2 = np.clip(lo + nn // 2, 0, m - 1)
        med = 0.5 * (dr[k, i1] + dr[k, i2])
        keep = keep_buf[: k.size]
        np.greater_equal(cols, lo[:, None], out=inside[: k.size])
        np.less(cols, hi[:, None], out=below[: k.size])
        np.logical_and(inside[: k.size], below[: k.size], out=inside[: k.size])
        np.copyto(keep, inside[: k.size])
        mean = np.einsum("ij,ij->i", fin[r], keep) / nn  # masked sums: ~10x faster than row-wise cumsum
        var = np.maximum(np.einsum("ij,ij->i", fin2[r], keep) / nn - mean**2, 0.0)
        return med, mean, np.sqrt(var), n

    # a row whose kept range did not move stays put (the next iteration computes the same numbers), so
    # each iteration clips only the rows the previous one moved: the same result in fewer passes
    active = rows
    for it in range(iters):
        r = slice(None) if it == 0 else active
        lo_a, hi_a = lo[r], hi[r]
        med, _mean, std, n = stats(r, lo_a, hi_a)
        lo_v = med - sigma * std
        hi_v = med + sigma * std
        d_a = d[r]
        new_lo = np.maximum(lo_a, (d_a < lo_v[:, None]).sum(axis=1) * (n > 0))
        new_hi = np.where(n > 0, np.minimum(hi_a, (d_a <= hi_v[:, None]).sum(axis=1)), hi_a)
        new_hi = np.maximum(new_hi, new_lo)
        moved = (new_lo != lo_a) | (new_hi != hi_a)
        lo[active] = new_lo
        hi[active] = new_hi
        active = active[moved]
        if active.size == 0:
            break
    med, mean, std, n = stats(slice(None), lo, hi)
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


class Background(NamedTuple):
    """Per source: `level` of I - s Z (MJy/sr per pixel), the clipped `std` of its pixels, the `err` of the
    level, `npix` pixels used, `failed` (no usable level: not measured), `own_light` (mean of the star's own
    normalised PSF light over the same pixels, 0 without a PSF) and the condition bits it raises."""

    level: np.ndarray
    std: np.ndarray
    err: np.ndarray
    npix: np.ndarray
    failed: np.ndarray
    own_light: np.ndarray
    conditions: dict[str, np.ndarray]


def source_background(config: PhotometryConfig, pix: Pixels, at: LocalPixels, radius: np.ndarray,
                      zodi_scale: np.ndarray, tiles: PsfTiles | None, mask: NeighbourMask | None,
                      r_max: float) -> Background:
    """The background of each source by `config.background`; `mask` (catalog neighbours) is needed by the
    local methods, 'annulus' and 'window', only."""
    k = at.xl.size
    if config.background == "none":
        return Background(np.zeros(k), np.zeros(k), np.zeros(k), np.zeros(k, dtype=np.int64), np.zeros(k, dtype=bool),
                          np.zeros(k), {})
    if config.background == "global":
        return _global_background(config, pix, at, zodi_scale)
    return _local_background(config, pix, at, radius, zodi_scale, tiles, mask, r_max)


def _global_background(config: PhotometryConfig, pix: Pixels, at: LocalPixels, zodi_scale: np.ndarray) -> Background:
    """The sep.Background map of the region (of I - Z) at each source, corrected to its own zodi scale."""
    with_zodi = config.zodi != "none"
    data = pix.image - (pix.zodi if with_zodi else 0.0)
    back, rms = global_background(data, pix.bad, config.global_mesh)
    level = sample_map(back, at.xl, at.yl)
    if with_zodi:
        level = level + (1.0 - zodi_scale) * sample_map(np.where(pix.bad, 0.0, pix.zodi), at.xl, at.yl)
    err = sample_map(rms, at.xl, at.yl) / config.global_mesh
    k = at.xl.size
    return Background(level, err, err, np.ones(k, dtype=np.int64), ~np.isfinite(level), np.zeros(k), {})


def _pixel_code(pix: Pixels, count: np.ndarray) -> np.ndarray:
    """Per pixel: 2 = usable, 1 = usable unless another source's disk (count 1: maybe our own), 0 = not;
    plus 4 where background_avoid_flags are set."""
    code = np.minimum(count, 2).astype(np.int8)  # counts are >= 0: 2 - min(count, 2) is 2, 1 or 0
    np.subtract(2, code, out=code)
    code[pix.bad] = 0
    if pix.avoid is not None:
        code = code | (pix.avoid.astype(np.int8) << 2)
    return code


class _Selection(NamedTuple):
    """One chunk's background pixels: `sel` (sources x pixel set), the annulus widening `k` per source (-1:
    too few pixels; 0 for a window), and where background_avoid_flags had to be allowed back (`relaxed`)."""

    sel: np.ndarray
    k: np.ndarray
    relaxed: np.ndarray


def _annulus_selection(config: PhotometryConfig, dist: np.ndarray, usable: np.ndarray, strict: np.ndarray,
                       r_in: np.ndarray, r_out: np.ndarray, widen: bool, relax: bool) -> _Selection:
    """The first annulus (widened up to annulus_steps when `widen`) with enough strict pixels; where none
    has, and `relax`, the first with enough usable pixels (avoided flags allowed back)."""
    steps = config.annulus_steps if widen else 0
    sel, k = annulus_choice(dist, strict, r_in, r_out, config.annulus_step, steps, config.background_min_pixels)
    relaxed = np.zeros(k.size, dtype=bool)
    if relax and np.any(k < 0):
        sel2, k2 = annulus_choice(dist, usable, r_in, r_out, config.annulus_step, steps,
                                  config.background_min_pixels)
        relaxed = (k < 0) & (k2 >= 0)
        sel[relaxed] = sel2[relaxed]
        k = np.where(relaxed, k2, k)
    return _Selection(sel, k, relaxed)


def _window_selection(config: PhotometryConfig, dist: np.ndarray, usable: np.ndarray, strict: np.ndarray,
                      radius: np.ndarray, relax: bool) -> _Selection:
    """The window's strict pixels beyond radius + window_gap; where too few, and `relax`, its usable ones."""
    excl = radius + config.window_gap
    sel = window_selection(dist, strict, excl)
    few = sel.sum(axis=1) < config.background_min_pixels
    relaxed = np.zeros(few.size, dtype=bool)
    if relax and np.any(few):
        sel2 = window_selection(dist, usable, excl)
        relaxed = few & (sel2.sum(axis=1) >= config.background_min_pixels)
        sel[relaxed] = sel2[relaxed]
    k = np.where(sel.sum(axis=1) < config.background_min_pixels, -1, 0)
    return _Selection(sel, k, relaxed)


def _local_background(config: PhotometryConfig, pix: Pixels, at: LocalPixels, radius: np.ndarray,
                      zodi_scale: np.ndarray, tiles: PsfTiles | None, mask: NeighbourMask, r_max: float,
                      ) -> Background:
    """Clipped statistics over each source's annulus or window of usable pixels (neighbours' disks out).

    Annulus: first the initial annulus of every source (a small ring), then, for those with too few
    pixels, the widened ones (the full ring)."""
    code = _pixel_code(pix, mask.count)
    annulus = config.background == "annulus"
    if annulus:
        r_in, r_out = annulus_radii(config, radius)
        r_lo, r_first, r_last = float(np.min(r_in)), float(np.max(r_out)), background_extent(config, r_max)
    else:
        r_in = r_out = None
        r_lo = float(np.min(radius)) + config.window_gap
        r_first = r_last = float(config.window_halfsize)
    k = at.xl.size
    out = _LocalResult.empty(k)
    todo = np.arange(k)
    for r_hi, last in ((r_first, r_first >= r_last), (r_last, True)):
        if todo.size == 0:
            break
        retry = []
        for sl in chunks_of(todo.size, ring_size(r_hi)):
            j = todo[sl]
            b = (Boxes.ring(at.ix[j], at.iy[j], r_lo, r_hi, pix.image.shape) if annulus
                 else Boxes.around(at.ix[j], at.iy[j], config.window_halfsize, pix.image.shape))
            dist = b.centre_distance(at.xl[j], at.yl[j])
            usable, strict = _usable(b.take(code), b.inside, dist, mask, j)
            if annulus:
                choice = _annulus_selection(config, dist, usable, strict, r_in[j], r_out[j], last,
                                            last and pix.avoid is not None)
            else:
                choice = _window_selection(config, dist, usable, strict, radius[j], pix.avoid is not None)
            out.relaxed[j] = choice.relaxed
            rows = slice(None)
            if not last:
                retry.append(j[choice.k < 0])
                rows = choice.k >= 0
                j, choice = j[rows], _Selection(choice.sel[rows], choice.k[rows], choice.relaxed[rows])
            out.widened[j] = choice.k > 0
            out.failed[j] = choice.k < 0
            out.measure(j, config, pix, b, rows, choice.sel, zodi_scale, tiles)
        todo = np.concatenate(retry) if retry else np.empty(0, dtype=np.int64)
    return out.result(config)


def _usable(code: np.ndarray, inside: np.ndarray, dist: np.ndarray, mask: NeighbourMask,
            j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(usable, strict) of gathered pixels: usable = not bad and no other source's disk (a disk of one
    source within our own disk radius may be our own); strict = usable and no avoided flag."""
    own = (dist < mask.radius) & (mask.self_count[j, None] > 0)
    usable = inside & (((code & 3) == 2) | (((code & 3) == 1) & own))
    strict = usable & ((code & 4) == 0)
    return usable, strict


class _LocalResult(NamedTuple):
    """The per-source arrays a local background fills, chunk by chunk."""

    level: np.ndarray
    std: np.ndarray
    npix: np.ndarray
    failed: np.ndarray
    widened: np.ndarray
    relaxed: np.ndarray
    own_light: np.ndarray

    @classmethod
    def empty(cls, k: int) -> _LocalResult:
        """Arrays for k sources: NaN levels, nothing counted, nothing flagged."""
        flags = [np.zeros(k, dtype=bool) for _ in range(3)]
        return cls(np.full(k, np.nan), np.full(k, np.nan), np.zeros(k, dtype=np.int64), *flags, np.zeros(k))

    def measure(self, j: np.ndarray, config: PhotometryConfig, pix: Pixels, b: Boxes, rows: slice | np.ndarray,
                sel: np.ndarray, zodi_scale: np.ndarray, tiles: PsfTiles | None) -> None:
        """Fill sources `j` from their selected pixels `sel` of the gathered boxes `b` (its `rows`)."""
        flat = b.flat[rows]
        vals = np.take(pix.image.reshape(-1), flat).astype(float)
        if config.zodi != "none":
            vals -= zodi_scale[j, None] * np.take(pix.zodi.reshape(-1), flat)
        unused = ~sel
        vals[unused] = np.nan
        self.level[j], self.std[j], self.npix[j] = clipped_stats(vals, config.clip_sigma, config.clip_iters,
                                                                 config.background_statistic)
        if tiles is not None:
            th = (tiles.tiles.shape[1] - 1) // 2
            on_tile = (np.abs(b.ox) <= th) & (np.abs(b.oy) <= th)
            pv = np.zeros(vals.shape)
            pv[:, on_tile] = tiles.tiles[j][:, b.oy[on_tile] + th, b.ox[on_tile] + th]
            pv[unused] = np.nan
            # the mean: with noise, a median shifts by the mean of small added values
            self.own_light[j] = clipped_stats(pv, 0.0, 0, "mean")[0]

    def result(self, config: PhotometryConfig) -> Background:
        """The Background of the filled arrays: failed also where no finite level came out."""
        failed = self.failed | ~np.isfinite(self.level)
        err = config.bkg_error_factor * self.std / np.sqrt(np.maximum(self.npix, 1))
        own = np.where(np.isfinite(self.own_light), self.own_light, 0.0)
        conditions = {"BACKGROUND_FAILED": failed, "BACKGROUND_WIDENED": self.widened,
                      "BACKGROUND_RELAXED": self.relaxed}
        return Background(self.level, self.std, err, self.npix, failed, own, conditions)
