"""measure_region: forced aperture photometry of every given source on one image region, vectorised.

One pass per region: positions (batch-independent), PSF zone / FWHM / radius, masks and variance repair,
per-source zodi scale, sep exact-overlap aperture sums, clipped local background, PSF aperture
correction (and masked-pixel correction), units, wavelength, flags, conditions and the `good` verdict.
Every number depends only on pixels within `neighbourhood_halfsize` of its source (background='global'
excepted), so a cutout, a row strip and the whole frame give the same results.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np
import sep
from scipy.spatial import cKDTree

from spxbatch.level2.constants import FLAG_BITS
from spxbatch.level2.flags import flag_bits_from_header, flag_mask
from spxbatch.level2.region import ImageRegion, PSFCube, parent_image_header
from spxbatch.level2.wcs import celestial_wcs, sky_to_parent_pixel
from spxbatch.photometry.aperture import (
    annulus_radii,
    aperture_radius,
    background_extent,
    max_radius,
    neighbourhood_halfsize,
)
from spxbatch.photometry.background import annulus_choice, clipped_stats, global_background, window_selection
from spxbatch.photometry.config import PhotometryConfig
from spxbatch.photometry.gather import Boxes, chunks
from spxbatch.photometry.overlap import circle_pixel_overlap
from spxbatch.photometry.psf import PSFModel, phases, zone_index
from spxbatch.photometry.quality import CONDITION_BITS, good_verdict
from spxbatch.photometry.units import ujy_per_mjysr_pixel, wcs_pixel_solid_angle
from spxbatch.photometry.wavelength import sample_map, wave_from_table
from spxbatch.photometry.zodi import zodi_scale

#: Elements per gathered (sources x pixels) array: bounds memory at ~32 MB per float64 array.
_CHUNK_ELEMENTS = 4_000_000
#: Two catalog positions closer than this (px) are the same source (self-matching of `neighbours`).
_SELF_TOL = 1e-3

_MODELS: OrderedDict[bytes, PSFModel] = OrderedDict()
#: id(cube array) -> (the array, its content key): held so the id cannot be reused while cached.
_KEYS: OrderedDict[int, tuple[np.ndarray, bytes]] = OrderedDict()


def psf_model_for(psf: PSFCube) -> PSFModel:
    """The cached PSFModel of a cube, keyed by CONTENT (the same cube ships with every exposure of a
    detector; one detector was seen shipping two cubes under one version), LRU of 8."""
    seen = _KEYS.get(id(psf.cube))
    if seen is not None and seen[0] is psf.cube:  # the same array object again: skip hashing 5 MB
        key = seen[1]
    else:
        cube = np.ascontiguousarray(psf.cube)
        key = hashlib.blake2b(cube.view(np.uint8).reshape(-1), digest_size=16).digest()
        key += str(psf.header.get("OVERSAMP", 10)).encode()
        _KEYS[id(psf.cube)] = (psf.cube, key)
        while len(_KEYS) > 64:
            _KEYS.popitem(last=False)
    model = _MODELS.get(key)
    if model is None:
        model = PSFModel.from_cube(psf)
        _MODELS[key] = model
    _MODELS.move_to_end(key)
    while len(_MODELS) > 8:
        _MODELS.popitem(last=False)
    return model


def _card(region: ImageRegion, key: str, default=None):
    """A header card from IMAGE, else PRIMARY."""
    for h in (region.image_header, region.primary_header):
        if key in h:
            return h[key]
    return default


def _bit(name: str) -> np.int64:
    return np.int64(1) << np.int64(CONDITION_BITS[name])


def _repair_variance(variance: np.ndarray, bad: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """VARIANCE with each non-finite or non-positive value on a not-bad pixel replaced by the median of
    the finite positive values within `half` px (NaN if none: that pixel is then masked); and the mask of
    repaired pixels. Bad pixels are masked anyway and left alone."""
    var = variance.astype(float)
    ok = np.isfinite(var) & (var > 0)
    todo = ~ok & ~bad
    if not np.any(todo):
        return var, todo
    iy, ix = np.nonzero(todo)
    for sl in chunks(ix.size, max(1, _CHUNK_ELEMENTS // (2 * half + 1) ** 2)):
        boxes = Boxes.around(ix[sl], iy[sl], half, var.shape)
        vals = np.where(boxes.inside & boxes.take(ok), boxes.take(var), np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN box: NaN, the pixel gets masked
            var[iy[sl], ix[sl]] = np.nanmedian(vals, axis=1)
    return var, todo


@dataclass
class _Context:
    """What every crop of one measure_region call shares."""

    cfg: PhotometryConfig
    model: PSFModel | None
    hdr: object
    wcs: object
    bits: dict[str, int]
    r_max: float
    halfsize: int
    nbx: np.ndarray
    nby: np.ndarray
    r_mask: float


def measure_region(
    region: ImageRegion,
    ra: np.ndarray,
    dec: np.ndarray,
    config: PhotometryConfig | None = None,
    source_index: np.ndarray | None = None,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    psf_model: PSFModel | None = None,
) -> dict[str, np.ndarray]:
    """Measure every source (ra, dec in deg) on `region`; one row per input source, in input order.

    `neighbours` (ra, dec) are all catalog sources near the region (default: the inputs themselves);
    they are masked out of each background region and decide BLENDED. `psf_model` overrides the cached
    model of region.psf. Fluxes are uJy; background and background_err are MJy/sr per pixel (after
    zodi subtraction). See quality.CONDITION_BITS for the condition word.

    Sparse sources are measured on crops of the region around them (same numbers: a measurement reads
    only its neighbourhood), so the cost follows the sources, not the region's size.
    """
    cfg = config or PhotometryConfig()
    ra = np.atleast_1d(np.asarray(ra, dtype=float))
    dec = np.atleast_1d(np.asarray(dec, dtype=float))
    n = ra.size
    sidx = np.arange(n) if source_index is None else np.asarray(source_index)
    hdr = parent_image_header(region.image_header)
    wcs = celestial_wcs(region.image_header)
    x, y = sky_to_parent_pixel(region.image_header, ra, dec, wcs=wcs)
    bits = _flag_bits(region)

    out = _empty_table(n, sidx, x, y, region)
    nyp, nxp = region.parent_shape
    ny, nx = region.shape
    xl, yl = x - region.x0, y - region.y0
    status = out["status"]
    finite = np.isfinite(x) & np.isfinite(y)
    with np.errstate(invalid="ignore"):
        in_frame = finite & (x >= -0.5) & (x < nxp - 0.5) & (y >= -0.5) & (y < nyp - 0.5)
        edge_dist = np.minimum.reduce([x + 0.5, nxp - 0.5 - x, y + 0.5, nyp - 0.5 - y])
        in_region = (xl >= -0.5) & (xl < nx - 0.5) & (yl >= -0.5) & (yl < ny - 0.5)
    status[~finite] = "bad_position"
    status[finite & ~in_frame] = "off_frame"
    status[in_frame & (edge_dist < cfg.min_edge_distance)] = "near_edge"
    status[in_frame & (edge_dist >= cfg.min_edge_distance) & ~in_region] = "outside_region"
    m = np.flatnonzero(status == "ok")
    cond = out["condition"]
    cond[status != "ok"] |= _bit("NOT_MEASURED")
    if m.size:
        # PSF zone, FWHM, radius
        model = psf_model if psf_model is not None else (
            psf_model_for(region.psf) if region.psf is not None else None)
        if model is not None:
            version = str(region.primary_header.get("VERSION", "")) or None
            zones = zone_index(model.psf.header, x[m], y[m], version=version, method=cfg.psf_zone_lookup)
            fwhm = model.fwhm(zones)
        else:
            zones = np.zeros(m.size, dtype=np.int64)
            fwhm = None
            cond[m] |= _bit("NO_PSF")
        radius = np.broadcast_to(aperture_radius(cfg, fwhm), m.shape).astype(float)
        r_max = max_radius(cfg, model)

        # catalog neighbours: BLENDED when apertures overlap; masked out of background regions
        if neighbours is None:
            nbx, nby = x, y
        else:
            nbx, nby = sky_to_parent_pixel(region.image_header, neighbours[0], neighbours[1], wcs=wcs)
        okn = np.isfinite(nbx) & np.isfinite(nby)
        nbx, nby = nbx[okn], nby[okn]
        self_count = np.zeros(m.size, dtype=np.int64)
        if nbx.size:
            tree = cKDTree(np.column_stack([nbx, nby]))
            pts = np.column_stack([x[m], y[m]])
            self_count = tree.query_ball_point(pts, _SELF_TOL, return_length=True)
            close = tree.query_ball_point(pts, 2.0 * radius, return_length=True) - self_count
            cond[m[close > 0]] |= _bit("BLENDED")
        r_mask = cfg.neighbour_mask_radius if cfg.neighbour_mask_radius is not None else r_max + cfg.annulus_gap
        ctx = _Context(cfg, model, hdr, wcs, bits, r_max, neighbourhood_halfsize(cfg, model), nbx, nby, r_mask)
        for rows, crop in _crops(region, xl[m], yl[m], ctx.halfsize, cfg.background == "global"):
            _measure_rows(ctx, crop, out, m[rows], zones[rows], None if fwhm is None else fwhm[rows],
                          radius[rows], self_count[rows])
    with np.errstate(invalid="ignore"):
        out["detected"] = out["measured"] & (out["snr"] >= cfg.snr_threshold)
    out["good"] = good_verdict(out, cfg, bits)
    return out


#: Cost model of a crop: fixed seconds per crop and seconds per pixel of the region-wide passes.
_CROP_COST_S = 3e-3
_PIXEL_COST_S = 3e-8


def _crops(region: ImageRegion, xl: np.ndarray, yl: np.ndarray, halfsize: int, whole: bool):
    """(rows, crop) pairs: the sources grouped by square tiles of the region, each with the tile grown by
    `halfsize` (clipped to the region). The tile side minimises an estimate of the cost; the whole region
    is one crop when that is cheapest (dense sources) or when `whole` (a global background)."""
    ny, nx = region.shape
    ix = np.floor(xl + 0.5).astype(np.int64)
    iy = np.floor(yl + 0.5).astype(np.int64)
    best_side, best_cost = 0, _CROP_COST_S + _PIXEL_COST_S * nx * ny
    if not whole:
        for side in (32, 64, 128, 256, 512, 1024):
            if side >= max(nx, ny):
                break
            keys = np.unique((iy // side) * (nx // side + 1) + ix // side)
            cost = keys.size * (_CROP_COST_S + _PIXEL_COST_S * (side + 2 * halfsize) ** 2)
            if cost < best_cost:
                best_side, best_cost = side, cost
    if best_side == 0:
        yield np.arange(xl.size), region
        return
    key = (iy // best_side) * (nx // best_side + 1) + ix // best_side
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    for rows in np.split(order, bounds):
        tx, ty = ix[rows[0]] // best_side, iy[rows[0]] // best_side
        x0 = max(tx * best_side - halfsize, 0)
        y0 = max(ty * best_side - halfsize, 0)
        x1 = min((tx + 1) * best_side + halfsize, nx)
        y1 = min((ty + 1) * best_side + halfsize, ny)
        yield rows, _crop(region, x0, y0, x1, y1)


def _crop(region: ImageRegion, x0: int, y0: int, x1: int, y1: int) -> ImageRegion:
    """The rectangle [x0, x1) x [y0, y1) of a region (region-local), as a region of the same parent."""

    def cut(a):
        return None if a is None else np.ascontiguousarray(a[y0:y1, x0:x1])

    return replace(
        region, image=cut(region.image), flags=cut(region.flags), variance=cut(region.variance),
        zodi=cut(region.zodi), x0=region.x0 + x0, y0=region.y0 + y0, solid_angle=cut(region.solid_angle),
        cwave=cut(region.cwave), cband=cut(region.cband),
    )


def _measure_rows(
    ctx: _Context, region: ImageRegion, out: dict, m: np.ndarray, zones: np.ndarray,
    fwhm: np.ndarray | None, radius: np.ndarray, self_count: np.ndarray,
) -> None:
    """Measure rows `m` of `out` (all inside `region`) and write their columns."""
    cfg, model, r_max, halfsize, bits = ctx.cfg, ctx.model, ctx.r_max, ctx.halfsize, ctx.bits
    cond = out["condition"]
    status = out["status"]
    nyp, nxp = region.parent_shape
    ny, nx = region.shape
    xm, ym = out["x"][m], out["y"][m]
    xlm, ylm = xm - region.x0, ym - region.y0
    ix = np.floor(xlm + 0.5).astype(np.int64)
    iy = np.floor(ylm + 0.5).astype(np.int64)

    # the neighbourhood must lie inside the region wherever it lies inside the frame
    lo_x = np.maximum(ix - halfsize, -region.x0)
    hi_x = np.minimum(ix + halfsize, nxp - 1 - region.x0)
    lo_y = np.maximum(iy - halfsize, -region.y0)
    hi_y = np.minimum(iy + halfsize, nyp - 1 - region.y0)
    clipped = (lo_x < 0) | (hi_x > nx - 1) | (lo_y < 0) | (hi_y > ny - 1)
    if cfg.background == "global":
        clipped[:] = False
    cond[m[clipped]] |= _bit("REGION_CLIPPED")

    # masks and variance
    flags = np.ascontiguousarray(region.flags)
    image = np.ascontiguousarray(region.image)
    zodi_plane = np.ascontiguousarray(region.zodi)
    bad = ((flags & _known_mask(cfg.bad_flags, bits)) != 0) | ~np.isfinite(image)
    if cfg.zodi != "none":
        bad |= ~np.isfinite(zodi_plane)
    var, repaired = _repair_variance(region.variance, bad, cfg.variance_repair_halfsize)
    bad |= ~np.isfinite(var)
    avoid = (flags & _known_mask(cfg.background_avoid_flags, bits)) != 0 if cfg.background_avoid_flags else None

    # aperture footprint: exact pixel weights w -> area and sum(w^2 var) of the unmasked pixels, flags OR,
    # masked pixels, repaired variance
    flags_or = np.zeros(m.size, dtype=np.int64)
    has_masked = np.zeros(m.size, dtype=bool)
    var_fixed = np.zeros(m.size, dtype=bool)
    area = np.zeros(m.size)
    var_sum = np.zeros(m.size)
    power = 2 if cfg.error_weights == "squared" else 1
    for sl in chunks(m.size, max(1, _CHUNK_ELEMENTS // _ring_size(r_max + 1.0))):
        # every pixel that can touch a circle of r_max centred anywhere in pixel (ix, iy)
        b = Boxes.ring(ix[sl], iy[sl], 0.0, r_max + 0.71, (ny, nx))
        # classify in float32 (touching / wholly inside), exact overlaps in float64 for the edge pixels
        cx = (ix[sl] - xlm[sl]).astype(np.float32)
        cy = (iy[sl] - ylm[sl]).astype(np.float32)
        adx = np.abs(cx[:, None] + b.ox.astype(np.float32)[None, :])
        ady = np.abs(cy[:, None] + b.oy.astype(np.float32)[None, :])
        r2 = (radius[sl, None] ** 2).astype(np.float32)
        near2 = np.maximum(adx - 0.5, 0) ** 2 + np.maximum(ady - 0.5, 0) ** 2
        pin = (near2 < r2) & b.inside
        w = pin.astype(float)
        edge = pin & ((adx + 0.5) ** 2 + (ady + 0.5) ** 2 > r2)
        er, ec = np.nonzero(edge)
        rows = er + sl.start
        w[edge] = circle_pixel_overlap((ix[rows] - xlm[rows]) + b.ox[ec], (iy[rows] - ylm[rows]) + b.oy[ec],
                                       radius[rows])
        badb = b.take(bad)
        flags_or[sl] = np.bitwise_or.reduce(np.where(pin, b.take(flags), 0), axis=1)
        has_masked[sl] = np.any(pin & badb, axis=1)
        var_fixed[sl] = np.any(pin & b.take(repaired), axis=1)
        wu = np.where(badb, 0.0, w)
        area[sl] = wu.sum(axis=1)
        var_sum[sl] = (wu**power * np.where(pin & ~badb, b.take(var), 0.0)).sum(axis=1)
    # frame edge: the aperture's bounding square crosses the parent frame's border
    at_edge = (
        (xm - radius < -0.5) | (xm + radius > nxp - 0.5) | (ym - radius < -0.5) | (ym + radius > nyp - 0.5)
    )
    cond[m[has_masked]] |= _bit("BAD_PIXEL")
    cond[m[at_edge]] |= _bit("EDGE")
    cond[m[var_fixed]] |= _bit("VARIANCE_REPAIRED")
    partial = has_masked | at_edge | clipped

    # PSF tiles: each star's light on the native pixels around it (aperture correction, masked pixels,
    # and the star's own light in its background pixels)
    tiles = phx = phy = None
    if model is not None:
        phx, phy = phases(xlm), phases(ylm)
        mh = model.tile_half()
        t = 2 * mh + 1
        tiles = np.empty((m.size, t, t), dtype=np.float32)
        for sl in chunks(m.size, max(1, _CHUNK_ELEMENTS // (t * t))):
            tiles[sl] = model.tiles(zones[sl], phx[sl], phy[sl], mh)

    # zodi scale
    if cfg.zodi == "fit":
        qualifies = ~bad & np.isfinite(zodi_plane)
        if "SOURCE" in bits:
            qualifies &= (flags & (1 << bits["SOURCE"])) == 0
        with np.errstate(divide="ignore"):
            weight = np.where(qualifies, 1.0 / var, 0.0)
        hz = cfg.zodi_halfsize
        pix, piy = ix + region.x0, iy + region.y0
        n_frame = (np.minimum(pix + hz, nxp - 1) - np.maximum(pix - hz, 0) + 1) * (
            np.minimum(piy + hz, nyp - 1) - np.maximum(piy - hz, 0) + 1
        )
        scale, fell = zodi_scale(image, zodi_plane, weight, qualifies, ix, iy, hz, n_frame,
                                 cfg.zodi_min_fraction, cfg.zodi_min_scale, cfg.zodi_max_scale)
        cond[m[fell]] |= _bit("ZODI_FALLBACK")
    else:
        scale = np.full(m.size, 1.0 if cfg.zodi == "fixed" else 0.0)

    # aperture sums (masked pixels contribute nothing; sep exact overlap)
    s_img, _, _ = sep.sum_circle(np.where(bad, 0.0, image), xlm, ylm, radius, subpix=0)
    s_zod = np.zeros(m.size)
    if cfg.zodi != "none":
        s_zod, _, _ = sep.sum_circle(np.where(bad, 0.0, zodi_plane.astype(float)), xlm, ylm, radius, subpix=0)

    # local background of I - s Z, per pixel (and the star's own PSF light per background pixel)
    bkg, bkg_std, bkg_n, failed, psf_in_bkg = _background(
        ctx, region, image, zodi_plane, bad, avoid, scale, xlm, ylm, ix, iy, radius, self_count, cond, m, tiles,
    )
    bkg_err = cfg.bkg_error_factor * bkg_std / np.sqrt(np.maximum(bkg_n, 1))
    if cfg.background in ("none", "global"):
        bkg_err = bkg_std

    f_sb = s_img - scale * s_zod - bkg * area
    e_sb = np.sqrt(var_sum + (bkg_err * area) ** 2)

    # aperture correction (and PSF correction of masked / clipped aperture pixels): the measured sum is
    # F * (kept - area * psf_in_bkg), kept = the PSF fraction on usable aperture pixels
    frac = np.ones(m.size)
    if model is not None:
        full = np.empty(m.size)
        kept = np.empty(m.size)
        t = tiles.shape[1]
        mh = (t - 1) // 2
        for sl in chunks(m.size, max(1, _CHUNK_ELEMENTS // (t * t))):
            missing = None
            if cfg.masked_aperture == "psf" and np.any(partial[sl]):
                b = Boxes.around(ix[sl], iy[sl], mh, (ny, nx))
                missing = (~b.inside | b.take(bad)).reshape(-1, t, t)
                missing &= partial[sl, None, None]
            full[sl], kept[sl] = model.aperture_fractions(tiles[sl].astype(float), phx[sl], phy[sl], radius[sl],
                                                          missing)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = kept / full
        cond[m[ratio < 1]] |= _bit("MASK_CORRECTED")
        frac = kept - area * psf_in_bkg if cfg.aperture_correction else ratio

    # units
    if region.solid_angle is not None:
        omega = sample_map(region.solid_angle, xlm, ylm)
    else:
        omega = wcs_pixel_solid_angle(ctx.wcs, xm, ym)
    conv = ujy_per_mjysr_pixel(omega)

    with np.errstate(invalid="ignore", divide="ignore"):  # frac 0: every aperture pixel masked
        flux_ap = f_sb * conv
        flux = flux_ap / frac
        flux_err = e_sb * conv / frac
        snr = flux / flux_err
        apcorr = 1.0 / frac

    if region.cwave is not None and region.cband is not None:
        lam, dlam = sample_map(region.cwave, xlm, ylm), sample_map(region.cband, xlm, ylm)
    else:
        lam, dlam = wave_from_table(region.wave, ctx.hdr, xm, ym)

    measured = ~failed & np.isfinite(flux) & np.isfinite(flux_err)
    st = status[m]
    st[failed] = "no_background"
    st[~failed & ~measured] = "no_pixels"
    status[m] = st
    cond[m[~measured]] |= _bit("NOT_MEASURED")

    out["flux"][m] = np.where(measured, flux, np.nan)
    out["flux_err"][m] = np.where(measured, flux_err, np.nan)
    out["flux_aperture"][m] = np.where(measured, flux_ap, np.nan)
    out["aperture_correction"][m] = apcorr
    out["wavelength"][m] = lam
    out["bandwidth"][m] = dlam
    out["flags"][m] = flags_or.astype(np.int32)
    out["measured"][m] = measured
    out["snr"][m] = np.where(measured, snr, np.nan)
    out["aperture_radius"][m] = radius
    out["background"][m] = bkg
    out["background_err"][m] = bkg_err
    out["background_npix"][m] = bkg_n
    out["zodi_scale"][m] = scale
    out["psf_zone"][m] = zones if model is not None else -1
    out["fwhm"][m] = fwhm if fwhm is not None else cfg.fallback_fwhm
    out["pixel_solid_angle"][m] = omega

def _known_mask(names: tuple[str, ...], bits: dict[str, int]) -> int:
    """Mask of the flag names this file defines (a file without a name's MP_ card cannot set it)."""
    return flag_mask([n for n in names if n in bits], bits)


def _flag_bits(region: ImageRegion) -> dict[str, int]:
    """Flag name -> bit from the FLAGS header's MP_* cards (spherex.FLAG_BITS if it has none)."""
    bits = flag_bits_from_header(region.flags_header)
    return bits or dict(FLAG_BITS)


def _empty_table(n: int, sidx: np.ndarray, x: np.ndarray, y: np.ndarray, region: ImageRegion) -> dict:
    """The output columns, filled for 'not measured' (NaN, False, 0)."""
    nan = np.full(n, np.nan)
    mjd_beg = _card(region, "MJD-BEG")
    mjd_end = _card(region, "MJD-END")
    if mjd_beg is not None and mjd_end is not None:
        mjd = 0.5 * (float(mjd_beg) + float(mjd_end))
    else:
        mjd = float(_card(region, "MJD-AVG", _card(region, "MJD-OBS", np.nan)))
    band = int(_card(region, "DETECTOR", 0))
    obs_id = str(_card(region, "OBSID", ""))
    return {
        "source_index": np.asarray(sidx),
        "flux": nan.copy(),
        "flux_err": nan.copy(),
        "flux_aperture": nan.copy(),
        "aperture_correction": nan.copy(),
        "wavelength": nan.copy(),
        "bandwidth": nan.copy(),
        "mjd": np.full(n, mjd),
        "band": np.full(n, band, dtype=np.int8),
        "obs_id": np.full(n, obs_id, dtype=object),
        "flags": np.zeros(n, dtype=np.int32),
        "condition": np.zeros(n, dtype=np.int64),
        "measured": np.zeros(n, dtype=bool),
        "detected": np.zeros(n, dtype=bool),
        "good": np.zeros(n, dtype=bool),
        "snr": nan.copy(),
        "x": np.asarray(x, dtype=float),
        "y": np.asarray(y, dtype=float),
        "aperture_radius": nan.copy(),
        "background": nan.copy(),
        "background_err": nan.copy(),
        "background_npix": np.zeros(n, dtype=np.int32),
        "zodi_scale": nan.copy(),
        "psf_zone": np.full(n, -1, dtype=np.int16),
        "fwhm": nan.copy(),
        "pixel_solid_angle": nan.copy(),
        "status": np.full(n, "ok", dtype="<U14"),
    }


def _neighbour_mask(
    shape: tuple[int, int], region: ImageRegion, nx_: np.ndarray, ny_: np.ndarray, radius_mask: float,
) -> np.ndarray:
    """Count image: how many catalog sources (parent positions nx_, ny_) lie within radius_mask of each
    region pixel centre."""
    ny, nx = shape
    h = math.ceil(radius_mask) + 1
    xl = nx_ - region.x0
    yl = ny_ - region.y0
    near = np.isfinite(xl) & (xl > -h - 1) & (xl < nx + h) & (yl > -h - 1) & (yl < ny + h)
    xl, yl = xl[near], yl[near]
    count = np.zeros(ny * nx, dtype=np.int32)
    for sl in chunks(xl.size, max(1, _CHUNK_ELEMENTS // (2 * h + 1) ** 2)):
        b = Boxes.ring(np.floor(xl[sl] + 0.5).astype(np.int64), np.floor(yl[sl] + 0.5).astype(np.int64),
                       0.0, radius_mask, shape)
        sel = b.inside & (b.centre_distance(xl[sl], yl[sl]) < radius_mask)
        count += np.bincount(b.flat[sel], minlength=ny * nx).astype(np.int32)
    return count.reshape(shape)


def _background(
    ctx, region, image, zodi_plane, bad, avoid, scale, xlm, ylm, ix, iy, radius, self_count, cond, m, tiles,
):
    """(level, std, n, failed, psf) of the local background of I - s Z per measured source; psf is the
    mean of the star's own normalised PSF light over the same background pixels (from `tiles`)."""
    cfg, r_max, r_mask = ctx.cfg, ctx.r_max, ctx.r_mask
    k = xlm.size
    psf_in_bkg = np.zeros(k)
    if cfg.background == "none":
        return np.zeros(k), np.zeros(k), np.zeros(k, dtype=np.int64), np.zeros(k, dtype=bool), psf_in_bkg
    if cfg.background == "global":
        data = image - (zodi_plane if cfg.zodi != "none" else 0.0)
        back, rms = global_background(data, bad, cfg.global_mesh)
        level = sample_map(back, xlm, ylm)
        if cfg.zodi != "none":
            level = level + (1.0 - scale) * sample_map(np.where(bad, 0.0, zodi_plane), xlm, ylm)
        err = sample_map(rms, xlm, ylm) / cfg.global_mesh
        return level, err, np.ones(k, dtype=np.int64), ~np.isfinite(level), psf_in_bkg

    count = _neighbour_mask(image.shape, region, ctx.nbx, ctx.nby, r_mask)
    # pixel code: 2 = usable, 1 = usable unless another source's disk (count 1: maybe our own), 0 = not
    code = np.where(bad | (count > 1), 0, np.where(count == 1, 1, 2)).astype(np.int8)
    if avoid is not None:
        code = code | (avoid.astype(np.int8) << 2)

    if cfg.background == "annulus":
        r_in, r_out = annulus_radii(cfg, radius)
        r_lo = float(np.min(r_in))
        r_first = float(np.max(r_out))
        r_last = background_extent(cfg, r_max)
    else:
        r_lo = float(np.min(radius)) + cfg.window_gap
        r_first = r_last = float(cfg.window_halfsize)
    level = np.full(k, np.nan)
    std = np.full(k, np.nan)
    npx = np.zeros(k, dtype=np.int64)
    failed = np.zeros(k, dtype=bool)
    widened = np.zeros(k, dtype=bool)
    relaxed = np.zeros(k, dtype=bool)
    todo = np.arange(k)
    # first the initial annulus (small ring), then only the sources that need widening (full ring)
    for r_hi, last in ((r_first, r_first >= r_last), (r_last, True)):
        if todo.size == 0:
            break
        retry = []
        for sl in chunks(todo.size, max(1, _CHUNK_ELEMENTS // _ring_size(r_hi))):
            j = todo[sl]
            b = (Boxes.ring(ix[j], iy[j], r_lo, r_hi, image.shape) if cfg.background == "annulus"
                 else Boxes.around(ix[j], iy[j], cfg.window_halfsize, image.shape))
            dist = b.centre_distance(xlm[j], ylm[j])
            c = b.take(code)
            own = (dist < r_mask) & (self_count[j, None] > 0)
            usable = b.inside & (((c & 3) == 2) | (((c & 3) == 1) & own))
            strict = usable & ((c & 4) == 0)
            if cfg.background == "annulus":
                steps = cfg.annulus_steps if last else 0
                sel, kk = annulus_choice(dist, strict, r_in[j], r_out[j], cfg.annulus_step, steps,
                                         cfg.background_min_pixels)
                if last and avoid is not None and np.any(kk < 0):
                    sel2, kk2 = annulus_choice(dist, usable, r_in[j], r_out[j], cfg.annulus_step, steps,
                                               cfg.background_min_pixels)
                    redo = (kk < 0) & (kk2 >= 0)
                    sel[redo] = sel2[redo]
                    kk = np.where(redo, kk2, kk)
                    relaxed[j] = redo
                if not last:
                    retry.append(j[kk < 0])
                    keep = kk >= 0
                    j, sel, kk, b_take = j[keep], sel[keep], kk[keep], keep
                else:
                    b_take = slice(None)
                widened[j] = kk > 0
                failed[j] = kk < 0
            else:
                excl = radius[j] + cfg.window_gap
                sel = window_selection(dist, strict, excl)
                few = sel.sum(axis=1) < cfg.background_min_pixels
                if avoid is not None and np.any(few):
                    sel2 = window_selection(dist, usable, excl)
                    redo = few & (sel2.sum(axis=1) >= cfg.background_min_pixels)
                    sel[redo] = sel2[redo]
                    relaxed[j] = redo
                failed[j] = sel.sum(axis=1) < cfg.background_min_pixels
                b_take = slice(None)
            flat = b.flat[b_take]
            vals = np.take(image.reshape(-1), flat).astype(float)
            if cfg.zodi != "none":
                vals -= scale[j, None] * np.take(zodi_plane.reshape(-1), flat)
            vals[~sel] = np.nan
            level[j], std[j], npx[j] = clipped_stats(vals, cfg.clip_sigma, cfg.clip_iters,
                                                     cfg.background_statistic)
            if tiles is not None:
                th = (tiles.shape[1] - 1) // 2
                on_tile = (np.abs(b.ox) <= th) & (np.abs(b.oy) <= th)
                pv = np.zeros(vals.shape)
                pv[:, on_tile] = tiles[j][:, b.oy[on_tile] + th, b.ox[on_tile] + th]
                pv[~sel] = np.nan
                # the mean: with noise, a median shifts by the mean of small added values
                psf_in_bkg[j] = clipped_stats(pv, 0.0, 0, "mean")[0]
        todo = np.concatenate(retry) if retry else np.empty(0, dtype=np.int64)
    failed |= ~np.isfinite(level)
    cond[m[failed]] |= np.int64(1) << np.int64(CONDITION_BITS["BACKGROUND_FAILED"])
    cond[m[widened]] |= np.int64(1) << np.int64(CONDITION_BITS["BACKGROUND_WIDENED"])
    cond[m[relaxed]] |= np.int64(1) << np.int64(CONDITION_BITS["BACKGROUND_RELAXED"])
    return level, std, npx, failed, np.where(np.isfinite(psf_in_bkg), psf_in_bkg, 0.0)


def _ring_size(r_hi: float) -> int:
    """Upper bound of the pixels per source of a background pixel set reaching r_hi (for chunking)."""
    return int(4 * (r_hi + 1.5) ** 2)
