"""Calibration products beside an image: the detector's solid-angle map and spectral_wcs CWAVE/CBAND pixels
attached to its regions, and the offset tables of those products (the average_psf one too).

Products are found beside the image (same archive, same root) through its folder listings
(`fetch.calibration_files`: the newest delivery, whatever its tag), scanned once per process and read lazily in
row blocks (`FetchCache.calib`, keyed by the product's location, so two archives in one process never share
an entry); an absent or broken product is remembered with the reason and not asked
again. A product that is truly absent (404, no such file) is a legitimate fallback: the reason is a note,
the regions go without, and each measurement records which products it used (`ImageRegion.calibration`).
A transient failure that outlasts the retries raises ReadError: that image fails and is retried by the
next resume, so a run's numbers never depend on which requests failed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from spxbatch.archive.io import ReadError
from spxbatch.fetch.cache import CalibPlane
from spxbatch.fetch.calibration_files import calibration_file
from spxbatch.fetch.calibration_pixels import Box, region_pixels
from spxbatch.fetch.execute import FetchContext, scan_headers
from spxbatch.fetch.options import FetchOptions
from spxbatch.fetch.target import ImageTarget
from spxbatch.level2.fitsmap import FitsMap, FitsStructureError
from spxbatch.level2.layout import R7_MAJOR, pipeline_major
from spxbatch.level2.region import ImageRegion, PSFCube
from spxbatch.level2.wcs import sky_to_parent_pixel

#: Calibration pixels attached to regions: (product, extension, ImageRegion attribute).
CALIBRATION_PLANES = (
    ("solid_angle_pixel_map", "IMAGE", "solid_angle"),
    ("spectral_wcs", "CWAVE", "cwave"),
    ("spectral_wcs", "CBAND", "cband"),
)

#: QR3's per-pixel flux corrections of QR2-processed images, attached only when asked for (and the release
#: whose calibration tree holds them).
L3_PLANE = ("l3_flux_corrections", "IMAGE", "flux_factor")
L3_RELEASE = "qr3"

Regions = list[tuple[ImageRegion, np.ndarray]]


def qr2_processed(region: ImageRegion) -> bool:
    """Whether a region comes from a QR2-processed (pipeline 6.x) file: its VERSION, else its PSF model."""
    major = pipeline_major(region.primary_header.get("VERSION"))
    return major < R7_MAJOR if major is not None else isinstance(region.psf, PSFCube)


def is_absent(exc: OSError) -> bool:
    """Whether a failed read means the file is not there (HTTP 4xx, or no such local file) rather than a
    transient failure worth trying again."""
    if isinstance(exc, ReadError):
        return exc.status is not None and 400 <= exc.status < 500
    return isinstance(exc, FileNotFoundError)


@dataclass(frozen=True)
class Samples:
    """The calibration pixels around each source's position on one image's frame: the box of each source
    (index into the ra, dec sampled), per ImageRegion attribute the pixels of each box, the planes read
    ('product/EXTNAME') and why any is missing."""

    boxes: dict[int, Box]
    pixels: dict[str, dict[int, np.ndarray]]
    used: tuple[str, ...]
    notes: tuple[str, ...]


def locate_calibration(ctx: FetchContext, target: ImageTarget) -> None:
    """Find and scan the target detector's calibration products into the process cache (folder listings and
    header scans: a chain of round trips that needs nothing of the image), so a fetch can run it beside its
    own header scan, before the image's pixels fill the link. A failure is left for `sample_calibration`,
    which meets it again and reports it."""
    for product, extname in dict.fromkeys((p, e) for p, e, _ in CALIBRATION_PLANES):
        try:
            _calibration_plane(ctx, target, product, extname)
        except (OSError, FitsStructureError):
            return


def sample_calibration(ctx: FetchContext, target: ImageTarget, image_header: fits.Header,
                       parent_shape: tuple[int, int], ra: np.ndarray, dec: np.ndarray,
                       options: FetchOptions) -> Samples:
    """The solid-angle and spectral_wcs CWAVE/CBAND pixels around the sources (ra, dec) on the frame of
    `image_header` (a cutout's, or the file's): what `attach_calibration` places on the regions. It needs
    no pixels of the image, so a range read runs it while its pixels are on the way.

    Solid angles and wavelengths are only ever sampled at a source's position (bilinearly), so a few pixels
    around each source are read, not the regions under them."""
    boxes = _sample_boxes(image_header, parent_shape, ra, dec)
    notes: list[str] = []
    pixels: dict[str, dict[int, np.ndarray]] = {}
    used: list[str] = []
    for product, extname, attr in CALIBRATION_PLANES:
        plane = _plane_of_shape(ctx, target, product, extname, parent_shape)
        if isinstance(plane, str):
            notes.append(plane)
            continue
        # a transient failure raises ReadError: the image fails (and is retried), never measured without
        values = region_pixels(ctx, plane, list(boxes.values()), options.link())
        pixels[attr] = dict(zip(boxes, values, strict=True))
        used.append(f"{product}/{extname}")
    return Samples(boxes, pixels, tuple(used), tuple(notes))


def attach_calibration(ctx: FetchContext, target: ImageTarget, regions: Regions, ra: np.ndarray, dec: np.ndarray,
                       options: FetchOptions, samples: Samples | None = None) -> tuple[Regions, list[str]]:
    """The regions with solid_angle / cwave / cband filled from the calibration products where present
    (`samples` of ra, dec, read now when not given), and, with `options.l3_flux_correction`, a QR2-processed
    image's flux_factor from QR3's l3_flux_corrections; and notes saying why any is missing.

    The sampled maps hold the product's pixels around each member source and NaN elsewhere. The flux
    correction multiplies every pixel: its map is whole."""
    first = regions[0][0]
    if samples is None:
        samples = sample_calibration(ctx, target, first.image_header, first.parent_shape, ra, dec, options)
    notes = list(samples.notes)
    used = list(samples.used)
    regions = [(dataclasses.replace(region, **{attr: _region_map(region, members, samples.boxes, values)
                                               for attr, values in samples.pixels.items()}), members)
               for region, members in regions]
    if options.l3_flux_correction and qr2_processed(first):
        product, extname, attr = L3_PLANE
        plane = _plane_of_shape(ctx, target, product, extname, first.parent_shape, L3_RELEASE)
        if isinstance(plane, str):
            notes.append(plane)
        else:
            wholes = [(r.x0, r.x0 + r.shape[1], r.y0, r.y0 + r.shape[0]) for r, _ in regions]
            maps = region_pixels(ctx, plane, wholes, options.link())
            regions = [(dataclasses.replace(region, **{attr: values}), members)
                       for (region, members), values in zip(regions, maps, strict=True)]
            used.append(f"{product}/{extname}")
    regions = [(dataclasses.replace(region, calibration=tuple(used)), members) for region, members in regions]
    return regions, notes


#: Pixels kept around a source's position in the sampled maps: its bilinear 2 x 2 (floor, floor + 1), and one
#: pixel of margin: 4 x 4 a source. (A margin of 2, 6 x 6, made the boxes of a 6,600-source image cost more
#: than the planes whole in the cost model: 96 MB of calibration a detector instead of ~1.3 MB.)
SAMPLE_HALFSIZE = 1


def _sample_boxes(image_header: fits.Header, parent_shape: tuple[int, int], ra: np.ndarray,
                  dec: np.ndarray) -> dict[int, Box]:
    """Parent-frame boxes around the sources' pixels, clipped to the frame, by source (those on it)."""
    x, y = sky_to_parent_pixel(image_header, ra, dec)
    ny, nx = parent_shape
    boxes = {}
    for k in np.flatnonzero(np.isfinite(x) & np.isfinite(y)):
        x0, x1 = max(0, int(np.floor(x[k])) - SAMPLE_HALFSIZE), min(nx, int(np.ceil(x[k])) + SAMPLE_HALFSIZE + 1)
        y0, y1 = max(0, int(np.floor(y[k])) - SAMPLE_HALFSIZE), min(ny, int(np.ceil(y[k])) + SAMPLE_HALFSIZE + 1)
        if x0 < x1 and y0 < y1:
            boxes[int(k)] = (x0, x1, y0, y1)
    return boxes


def _region_map(region: ImageRegion, members: np.ndarray, boxes: dict[int, Box],
                pixels: dict[int, np.ndarray]) -> np.ndarray:
    """A map of the region's shape: each member source's box pixels where they fall on it, NaN elsewhere."""
    out = np.full(region.shape, np.nan)
    ny, nx = region.shape
    for k in members:
        box = boxes.get(int(k))
        if box is None:
            continue
        x0, x1, y0, y1 = box
        a0, a1 = max(x0, region.x0), min(x1, region.x0 + nx)
        b0, b1 = max(y0, region.y0), min(y1, region.y0 + ny)
        if a0 < a1 and b0 < b1:
            out[b0 - region.y0:b1 - region.y0, a0 - region.x0:a1 - region.x0] = \
                pixels[int(k)][b0 - y0:b1 - y0, a0 - x0:a1 - x0]
    return out


def calibration_map(ctx: FetchContext, target: ImageTarget, product: str,
                    release: str | None = None) -> FitsMap | str:
    """The offset table of the target detector's calibration product (of `release`, default the image's),
    or why it is unavailable."""
    try:
        path = calibration_file(ctx, target, product, release)
    except LookupError as exc:
        return str(exc)
    key = (path,)
    known = ctx.cache.calib.get(key)
    if known is not None:
        return known
    try:
        fmap: FitsMap | str = scan_headers(ctx, path)
    except OSError as exc:  # ReadError, or a local file that is not there
        if not is_absent(exc):
            raise  # transient after retries: the image fails, and the next image (or resume) tries again
        fmap = f"{product}: absent ({getattr(exc, 'reason', 'no such file')})"
    except FitsStructureError as exc:
        fmap = f"{product}: bad file ({exc})"
    ctx.cache.calib[key] = fmap
    return fmap


def _plane_of_shape(ctx: FetchContext, target: ImageTarget, product: str, extname: str, shape: tuple[int, int],
                    release: str | None = None) -> CalibPlane | str:
    """The calibration plane (`_calibration_plane`) when it has the image's `shape`, else why it is not used."""
    plane = _calibration_plane(ctx, target, product, extname, release)
    if not isinstance(plane, str) and plane.shape != tuple(shape):
        return f"{product}/{extname}: shape {plane.shape} != image {tuple(shape)}"
    return plane


def _calibration_plane(ctx: FetchContext, target: ImageTarget, product: str, extname: str,
                       release: str | None = None) -> CalibPlane | str:
    """The lazily read calibration plane (cached per process), or why it is unavailable."""
    fmap = calibration_map(ctx, target, product, release)
    if isinstance(fmap, str):
        return fmap
    key = (fmap.url, extname)
    cached = ctx.cache.calib.get(key)
    if cached is not None:
        return cached
    if extname not in fmap or len(fmap[extname].shape) != 2 or 0 in fmap[extname].shape:
        ctx.cache.calib[key] = f"{product}: no non-empty {extname} extension"
        return ctx.cache.calib[key]
    plane = CalibPlane(fmap, extname)
    ctx.cache.calib[key] = plane
    return plane
