"""measure_region: forced aperture and PSF photometry of every given source on one image region, vectorised.

One pass per region (the image's set-up, shared by its regions, in `frame`), one function per phase, each in
the module of its job: positions (`positions`), PSF
zone and FWHM (`psf`), aperture radii (`aperture`), catalog neighbours (`neighbours`); then per crop of the
region (`crops`): masks and variance repair (`masks`), aperture footprints (`aperture`), PSF tiles (`psf`),
zodi scale (`zodi`), aperture sums (`aperture`), background (`background`), aperture correction
(`correction`), units and wavelength (`units`, `wavelength`), fluxes (`flux`), conditions (`conditions`);
then the PSF fits with the neighbours (`psf_measure`, on crops of their own), which of the two feeds `flux`,
and last the verdicts (`quality`). The output columns are the table in `columns`.

Every number depends only on pixels within `neighbourhood_halfsize` of its source (background='global'
excepted; a PSF fit's chain of neighbours may reach farther, and is flagged PSF_CLIPPED where the region is
too small), so a cutout, a row strip and the whole frame give the same results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from spxbatch.level2.region import ImageRegion
from spxbatch.photometry.aperture import (
    Footprint,
    aperture_footprint,
    aperture_neighbourhood,
    aperture_sums,
    frame_edge,
    max_radius,
    source_radii,
)
from spxbatch.photometry.background import source_background
from spxbatch.photometry.columns import empty_table
from spxbatch.photometry.conditions import condition_mask, condition_word
from spxbatch.photometry.config import PhotometryConfig
from spxbatch.photometry.correction import aperture_correction
from spxbatch.photometry.crops import region_crops
from spxbatch.photometry.flux import source_fluxes
from spxbatch.photometry.frame import Frame, frame_key, frame_zones, image_frame
from spxbatch.photometry.masks import Pixels, region_pixels
from spxbatch.photometry.neighbours import catalog_neighbours, mask_radius, neighbour_index, neighbour_mask
from spxbatch.photometry.positions import LocalPixels, frame_positions, local_pixels
from spxbatch.photometry.psf import AnyPSFModel, PsfTiles, phases, psf_tiles, source_psf
from spxbatch.photometry.psf_measure import measure_psf
from spxbatch.photometry.quality import verdicts
from spxbatch.photometry.units import source_solid_angle, ujy_per_mjysr_pixel
from spxbatch.photometry.wavelength import sample_map, source_wavelength
from spxbatch.photometry.zodi import source_zodi_scale


@dataclass(frozen=True)
class _Image:
    """What every crop of one measure_region call shares."""

    config: PhotometryConfig
    model: AnyPSFModel | None
    parent_header: fits.Header
    wcs: WCS
    bits: dict[str, int]
    r_max: float
    halfsize: int
    #: Parent pixels of the catalog neighbours and the radius of the disk kept out of backgrounds.
    neighbour_x: np.ndarray
    neighbour_y: np.ndarray
    r_mask: float


class _Sources(NamedTuple):
    """The sources to measure: parent pixel, PSF zone and FWHM (None without a PSF), aperture radius, how
    many catalog neighbours are the source itself, and PSF tiles (None without a PSF; a tile depends on the
    sub-pixel phase only, so the aperture and the PSF phases share them)."""

    x: np.ndarray
    y: np.ndarray
    zones: np.ndarray
    fwhm: np.ndarray | None
    radius: np.ndarray
    self_count: np.ndarray
    tiles: np.ndarray | None

    def take(self, rows: np.ndarray) -> _Sources:
        """The sources of `rows`."""
        return _Sources(*(None if a is None else a[rows] for a in self))


def measure_region(
    region: ImageRegion,
    ra: np.ndarray,
    dec: np.ndarray,
    config: PhotometryConfig | None = None,
    source_index: np.ndarray | None = None,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    psf_model: AnyPSFModel | None = None,
    frame: Frame | None = None,
) -> dict[str, np.ndarray]:
    """Measure every source (ra, dec in deg) on `region`; one row per input source, in input order.

    `neighbours` (ra, dec) are all catalog sources near the region (default: the inputs themselves);
    they are masked out of each background region and decide BLENDED. `psf_model` overrides the cached
    model of region.psf. `frame`: the image's set-up (`frame.image_frame` of these neighbours and model),
    when the caller measures several regions of one image. Fluxes are uJy; background and background_err
    are MJy/sr per pixel (after zodi subtraction). See conditions.CONDITION_BITS for the condition word,
    columns.COLUMNS for the table.

    Sparse sources are measured on crops of the region around them (same numbers: a measurement reads
    only its neighbourhood), so the cost follows the sources, not the region's size.
    """
    cfg = config or PhotometryConfig()
    frame = frame or image_frame(region, neighbours, psf_model)
    ra = np.atleast_1d(np.asarray(ra, dtype=float))
    dec = np.atleast_1d(np.asarray(dec, dtype=float))
    n = ra.size
    pos = frame_positions(region, ra, dec, frame.wcs, cfg.min_edge_distance)
    sidx = np.arange(n) if source_index is None else np.asarray(source_index)
    out = empty_table(n, {"source_index": sidx, "x": pos.x, "y": pos.y, "status": pos.status, **frame.columns})
    out["condition"] |= condition_word(n, {"NOT_MEASURED": pos.status != "ok"})
    m = np.flatnonzero(pos.status == "ok")
    if m.size:
        _measure_sources(region, frame, cfg, out, m)
        if cfg.flux_source == "psf":
            _psf_feeds_flux(out, m)
    out["detected"], out["good"] = verdicts(out, cfg, frame.bits)
    return out


def measure_regions(regions: Sequence[tuple[ImageRegion, np.ndarray]], ra: np.ndarray, dec: np.ndarray,
                    config: PhotometryConfig | None = None, source_index: np.ndarray | None = None,
                    neighbours: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """`measure_region` of each region's members (indices into ra, dec, source_index), their rows joined in
    the regions' order; regions of one image (`frame.frame_key`) share its set-up. At least one region."""
    ra, dec = np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)
    sidx = np.arange(ra.size) if source_index is None else np.asarray(source_index)
    frames: dict[tuple, Frame] = {}
    tables = []
    for region, members in regions:
        key = frame_key(region)
        if key not in frames:
            frames[key] = image_frame(region, neighbours)
        tables.append(measure_region(region, ra[members], dec[members], config, sidx[members], neighbours,
                                     frame=frames[key]))
    return {name: np.concatenate([t[name] for t in tables]) for name in tables[0]}


def _measure_sources(region: ImageRegion, frame: Frame, cfg: PhotometryConfig, out: dict[str, np.ndarray],
                     m: np.ndarray) -> None:
    """Measure the rows `m` of `out` (all on the frame and in the region), crop by crop."""
    x, y = out["x"], out["y"]
    model, psf, version = frame.model, frame.psf, frame.version
    zf = source_psf(model, psf, x[m], y[m], version, cfg.psf_zone_lookup)
    radius = source_radii(cfg, zf.fwhm, m.size)
    index = frame.neighbours if frame.neighbours is not None else neighbour_index(x, y)
    nb = catalog_neighbours(index, x[m], y[m], radius)
    out["condition"][m] |= condition_word(m.size, {"NO_PSF": model is None, "BLENDED": nb.blended})
    # the largest aperture of any catalog source on the image (not of every zone: a cube may be read in part)
    zones = None if model is None else np.union1d(
        frame_zones(frame, index, region.parent_shape, cfg.psf_zone_lookup), zf.zones)
    r_max = max_radius(cfg, model, zones)
    image = _Image(cfg, model, frame.parent_header, frame.wcs, frame.bits, r_max,
                   aperture_neighbourhood(cfg, model, zones), nb.x, nb.y, mask_radius(cfg, r_max))
    tiles = None if model is None else psf_tiles(model, zf.zones, x[m], y[m]).tiles
    sources = _Sources(x[m], y[m], zf.zones, zf.fwhm, radius, nb.self_count, tiles)
    xl, yl = x[m] - region.x0, y[m] - region.y0
    for rows, crop in region_crops(region, xl, yl, image.halfsize, cfg.background == "global"):
        columns, condition = _measure_crop(image, crop, sources.take(rows))
        for name, values in columns.items():
            out[name][m[rows]] = values
        out["condition"][m[rows]] |= condition
    if cfg.photometry == "aperture":
        return
    if model is None:
        out["condition"][m] |= condition_word(m.size, {"PSF_FAILED": True})
        return
    fit = measure_psf(region, frame.wcs, cfg, frame.bits, model, psf, version, x[m], y[m], tiles, (nb.x, nb.y))
    for name, values in fit.columns.items():
        out[name][m] = values
    out["condition"][m] |= condition_word(m.size, {"PSF_FAILED": fit.failed, "PSF_CLIPPED": fit.clipped,
                                                   "PSF_LOCAL_FIT": fit.local})


def _psf_feeds_flux(out: dict[str, np.ndarray], m: np.ndarray) -> None:
    """`flux`, `flux_err`, `snr` and `measured` of the rows `m` from the PSF fit (flux_source 'psf')."""
    flux, err = out["flux_psf"][m], out["flux_psf_err"][m]
    measured = np.isfinite(flux) & np.isfinite(err) & (err > 0)
    out["flux"][m] = np.where(measured, flux, np.nan)
    out["flux_err"][m] = np.where(measured, err, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["snr"][m] = np.where(measured, flux / err, np.nan)
    out["measured"][m] = measured
    out["status"][m] = np.where(measured, "ok", "psf_failed")
    bit = np.int64(condition_mask(("NOT_MEASURED",)))
    out["condition"][m] = np.where(measured, out["condition"][m] & ~bit, out["condition"][m] | bit)


def _measure_crop(image: _Image, crop: ImageRegion, src: _Sources) -> tuple[dict[str, object], np.ndarray]:
    """The phases on one crop: the measured columns of its sources and the condition bits they raise (the
    aperture's only when it is measured)."""
    cfg = image.config
    at = local_pixels(crop, src.x, src.y, image.halfsize, cfg.background == "global")
    pix = region_pixels(crop, cfg, image.bits)
    footprint = aperture_footprint(pix, at, src.radius, image.r_max, cfg.error_weights)
    at_edge = frame_edge(src.x, src.y, src.radius, crop.parent_shape)
    omega = source_solid_angle(crop, image.wcs, at.xl, at.yl, src.x, src.y)
    lam, dlam = source_wavelength(crop, image.parent_header, at.xl, at.yl, src.x, src.y)
    condition = condition_word(at.xl.size, {
        "REGION_CLIPPED": at.clipped, "BAD_PIXEL": footprint.has_masked, "EDGE": at_edge,
        "VARIANCE_REPAIRED": footprint.variance_repaired,
    })
    columns = {
        "wavelength": lam,
        "bandwidth": dlam,
        "flags": footprint.flags_or.astype(np.int32),
        "aperture_radius": src.radius,
        "psf_zone": src.zones if image.model is not None else -1,
        "fwhm": src.fwhm if src.fwhm is not None else cfg.fallback_fwhm,
        "pixel_solid_angle": omega,
        "flux_factor": (np.ones(at.xl.size) if crop.flux_factor is None
                        else sample_map(crop.flux_factor, at.xl, at.yl)),
    }
    if cfg.photometry != "psf":
        aperture, aperture_condition = _aperture_phases(image, crop, src, pix, at, footprint, at_edge, omega)
        columns.update(aperture)
        condition |= aperture_condition
    return columns, condition


def _aperture_phases(image: _Image, crop: ImageRegion, src: _Sources, pix: Pixels, at: LocalPixels,
                     footprint: Footprint, at_edge: np.ndarray, omega: np.ndarray) -> tuple[dict[str, object],
                                                                                          np.ndarray]:
    """The aperture measurement on one crop: zodi, sums, background, correction, fluxes; its columns and
    condition bits."""
    cfg = image.config
    tiles = None if src.tiles is None else PsfTiles(src.tiles, phases(at.xl), phases(at.yl))
    zodi = source_zodi_scale(cfg, crop, pix, at, image.bits)
    sums = aperture_sums(pix, at, src.radius, cfg.zodi != "none")
    mask = None
    if cfg.background in ("annulus", "window"):
        mask = neighbour_mask(crop, image.neighbour_x, image.neighbour_y, image.r_mask, src.self_count)
    bkg = source_background(cfg, pix, at, src.radius, zodi.scale, tiles, mask, image.r_max)
    corr = aperture_correction(cfg, tiles, pix.bad, at, src.radius, footprint.area, bkg.own_light,
                               footprint.has_masked | at_edge | at.clipped)
    flux = source_fluxes(sums, zodi.scale, bkg, footprint, corr.fraction, ujy_per_mjysr_pixel(omega))
    measured = ~bkg.failed & np.isfinite(flux.flux) & np.isfinite(flux.flux_err)
    condition = condition_word(at.xl.size, {
        "ZODI_FALLBACK": zodi.fell_back, **bkg.conditions, "MASK_CORRECTED": corr.mask_corrected,
        "NOT_MEASURED": ~measured,
    })
    columns = {
        "flux": np.where(measured, flux.flux, np.nan),
        "flux_err": np.where(measured, flux.flux_err, np.nan),
        "flux_aperture": np.where(measured, flux.flux_aperture, np.nan),
        "aperture_correction": flux.aperture_correction,
        "measured": measured,
        "snr": np.where(measured, flux.snr, np.nan),
        "background": bkg.level,
        "background_err": bkg.err,
        "background_npix": bkg.npix,
        "zodi_scale": zodi.scale,
        "status": np.where(bkg.failed, "no_background", np.where(measured, "ok", "no_pixels")),
    }
    return columns, condition
