"""What every region of one image shares, set up once: the parent frame's WCS and header, the flag bits, the
image's own columns, the PSF model, and the catalog neighbours placed on it (with their KD-tree).

A range read gives one region per group of sources, each with the same headers and PSF (`level2.read.
frame_headers`): setting the frame up per region cost ~10 ms of header parsing and copying each, most of
measuring a few sources, and placing (and indexing) every catalog neighbour per region made dense fields
quadratic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from spxbatch.level2.epsf import EPSFTable
from spxbatch.level2.psf_zones import catalog_zones
from spxbatch.level2.region import ImageRegion, PSFCube, parent_image_header
from spxbatch.level2.wcs import celestial_wcs, sky_to_parent_pixel
from spxbatch.photometry.columns import image_columns
from spxbatch.photometry.masks import flag_bits
from spxbatch.photometry.neighbours import NeighbourIndex, neighbour_index
from spxbatch.photometry.psf import AnyPSFModel, psf_model_for


@dataclass(frozen=True)
class Frame:
    """The set-up of one image's frame that its regions share (see the module's docstring)."""

    wcs: WCS
    parent_header: fits.Header
    bits: dict[str, int]
    #: The columns every row of the image shares (`columns.image_columns`).
    columns: dict[str, Any]
    #: The PSF model to measure with, and the PSF whose zone centres place the sources (None without one).
    model: AnyPSFModel | None
    psf: PSFCube | EPSFTable | None
    #: PRIMARY VERSION (None when absent): which PSF zone labels apply.
    version: str | None
    #: The catalog neighbours placed on the frame, or None: the measured sources are their own.
    neighbours: NeighbourIndex | None
    #: The PSF zones of the neighbours on the frame, by lookup method (`frame_zones`), filled once.
    zones: dict[str, np.ndarray] = field(default_factory=dict, compare=False)


def frame_zones(frame: Frame, index: NeighbourIndex, shape: tuple[int, int], method: str) -> np.ndarray:
    """The PSF zones of the catalog sources `index` on the frame (of `shape`): the zones over which the largest
    aperture is taken, the same whatever region of the image is measured (`psf_zones.catalog_zones`, which
    names the planes the fetch layer reads); kept on the frame for its own neighbours."""
    if frame.psf is None:
        return np.empty(0, dtype=np.int64)
    own = index is frame.neighbours
    if not own or method not in frame.zones:
        zones = catalog_zones(frame.psf, index.x, index.y, shape, frame.version, (method,))
        if not own:
            return zones
        frame.zones[method] = zones
    return frame.zones[method]


def image_frame(region: ImageRegion, neighbours: tuple[np.ndarray, np.ndarray] | None = None,
                psf_model: AnyPSFModel | None = None) -> Frame:
    """The frame of `region`'s image, with the catalog `neighbours` (ra, dec) placed on it; `psf_model`
    overrides the cached model of region.psf."""
    wcs = celestial_wcs(region.image_header)
    model, psf = _psf(region, psf_model)
    index = None if neighbours is None else neighbour_index(
        *sky_to_parent_pixel(region.image_header, *neighbours, wcs=wcs))
    return Frame(wcs, parent_image_header(region.image_header), flag_bits(region), image_columns(region), model,
                 psf, str(region.primary_header.get("VERSION", "")) or None, index)


def frame_key(region: ImageRegion) -> tuple[int, int, int, int]:
    """Which frame a region is on, for regions alive together: the identity of its headers and PSF (the
    regions of one read share them; a cutout brings its own, shifted, headers)."""
    return id(region.primary_header), id(region.image_header), id(region.flags_header), id(region.psf)


def _psf(region: ImageRegion, override: AnyPSFModel | None) -> tuple[AnyPSFModel | None, PSFCube | EPSFTable | None]:
    """The PSF model to measure with (of a QR2 cube or an R7 ePSF table) and the PSF whose zone centres place
    the sources (the region's own: a model is shared by every PSF of equal content, whatever cards they carry)."""
    if override is not None:
        return override, override.psf
    if region.psf is None:
        return None, None
    return psf_model_for(region.psf), region.psf
