"""The bodies of an executed request plan into `ImageRegion`s (through `level2`), each with the sources it
serves: range bytes placed by the header map, or whole files and cutouts opened as FITS and placed in the
parent frame by their CRPIXnA cards. A source is served by a region only when its whole neighbourhood is
inside it; the rest are returned as missing, with the errors of bodies that could not be used."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from spxbatch.archive.io import ReadError, maybe_gunzip
from spxbatch.fetch.execute import Fetched, cutout_bodies
from spxbatch.fetch.geometry import inside, neighbourhoods
from spxbatch.fetch.request_plan import CutoutPlan, MirrorCutoutPlan, RangePlan, WholePlan
from spxbatch.fetch.tables import ImageTables
from spxbatch.level2.epsf import EPSFTable
from spxbatch.level2.fitsmap import FitsMap, FitsStructureError
from spxbatch.level2.layout import PLANES, check_fitsmap, check_hdul
from spxbatch.level2.read import compressed_box, frame_headers, open_level2, region_from_hdul, region_from_planes
from spxbatch.level2.region import ImageRegion, PSFCube, WaveTable
from spxbatch.level2.tiled import tile_table
from spxbatch.level2.wcs import sky_to_parent_pixel

Regions = list[tuple[ImageRegion, np.ndarray]]


@dataclass(frozen=True)
class Decoded:
    """Regions with the sources (indices into ra/dec) each serves, the sources none serves, the errors of
    bodies that could not be used, and notes (e.g. why the PSF came from where it did)."""

    regions: Regions
    missing: np.ndarray
    errors: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def decode(fetched: Fetched, fmap: FitsMap | None, tables: ImageTables, ra: np.ndarray, dec: np.ndarray,
           halfsize: int, parent_shape: tuple[int, int]) -> Decoded:
    """The regions of an executed plan (`fmap`: the scanned file, for range reads; `parent_shape`: the
    frame cutouts are placed in)."""
    plan = fetched.plan
    if isinstance(plan, RangePlan):
        psf = tables.psf_for_fitsmap(fmap, ra, dec)
        regions = regions_from_ranges(fmap, plan, fetched.bodies, psf.model, tables.wave_for_fitsmap(fmap))
        regions = [(dataclasses.replace(r, psf_origin=psf.origin), m) for r, m in regions]
        return Decoded(regions, plan.off_image, (), tuple(psf.notes))
    if isinstance(plan, WholePlan):
        return _decode_whole(fetched.bodies[0], plan.path, tables, ra, dec, halfsize)
    if isinstance(plan, CutoutPlan):
        return _decode_cutouts(fetched, tables, ra, dec, halfsize, parent_shape)
    if isinstance(plan, MirrorCutoutPlan):
        return _decode_mirror_cutouts(fetched, tables, ra, dec, halfsize, parent_shape)
    raise TypeError(f"not a request plan: {plan!r}")


def regions_from_ranges(fmap: FitsMap, plan: RangePlan, blobs: tuple[bytes, ...], psf: PSFCube | EPSFTable,
                        wave: WaveTable) -> Regions:
    """One region per box of a range plan from its blobs (per box, per plane: one blob for a full-width box,
    one per row otherwise; a compressed plane's tiles in one blob, or cut from that plane read whole), with
    the file's headers (one copy, shared by all), PSF and wavelength table."""
    layout = check_fitsmap(fmap)
    nx = fmap["IMAGE"].shape[1]
    n_whole = len(plan.whole_planes)
    whole = {name: (span[0], blob) for (name, span), blob in zip(plan.whole_planes, blobs[len(blobs) - n_whole:],
                                                                 strict=True)}
    blob = iter(blobs[:len(blobs) - n_whole])
    tables = {name: tile_table(fmap, name) for name in layout.compressed_planes}  # parsed once per plan
    headers = frame_headers(fmap)
    regions: Regions = []
    for read in plan.reads:
        x0, x1, y0, y1, members = read.box
        per_plane = 1 if x1 - x0 == nx else y1 - y0
        planes: dict[str, bytes | np.ndarray] = {}
        for name in PLANES:
            if name not in layout.compressed_planes:
                planes[name] = b"".join(next(blob) for _ in range(per_plane))
                continue
            tiles = tables[name]
            if name in whole:
                start, data = whole[name]
                lo, hi = tiles.heap_span(*tiles.tiles_for_rows(y0, y1))
                span = data[lo - start:hi - start]
            else:
                span = next(blob)
            planes[name] = compressed_box(tiles, (x0, x1, y0, y1), span)
        regions.append((region_from_planes(fmap, (x0, x1, y0, y1), planes, psf, wave, headers), members))
    return regions


def region_from_file(data: bytes, what: str, tables: ImageTables,
                     parent_shape: tuple[int, int] | None = None) -> tuple[ImageRegion, list[str]]:
    """The region of a whole file's or cutout's bytes (gzipped or not), placed in the parent frame by its
    CRPIXnA cards, with its PSF from the cache (filled from the bytes in hand)."""
    with open_level2(maybe_gunzip(data), what) as hdul:
        region = region_from_hdul(hdul, parent_shape=parent_shape, with_psf=False, what=what)
        psf = tables.psf_for_hdul(hdul, check_hdul(hdul, what), what)
    return dataclasses.replace(region, psf=psf.model, psf_origin=psf.origin), psf.notes


def sources_inside(region: ImageRegion, ra: np.ndarray, dec: np.ndarray, halfsize: int) -> np.ndarray:
    """Mask of the sources whose whole neighbourhood lies inside the region (so it can measure them)."""
    x, y = sky_to_parent_pixel(region.image_header, ra, dec)
    return inside(neighbourhoods(x, y, halfsize, region.parent_shape), region.x0, region.y0, region.shape)


def _decode_whole(data: bytes, path: str, tables: ImageTables, ra: np.ndarray, dec: np.ndarray,
                  halfsize: int) -> Decoded:
    """One full-frame region serving every source on the image."""
    region, notes = region_from_file(data, path, tables)
    x, y = sky_to_parent_pixel(region.image_header, ra, dec)
    ok = neighbourhoods(x, y, halfsize, region.shape).on_image
    return Decoded([(region, np.flatnonzero(ok))], np.flatnonzero(~ok), (), tuple(notes))


def _decode_cutouts(fetched: Fetched, tables: ImageTables, ra: np.ndarray, dec: np.ndarray, halfsize: int,
                    parent_shape: tuple[int, int]) -> Decoded:
    """Each cutout serves the members of its group whose neighbourhood it holds; a cutout that missed the
    image (HTTP 400) serves none and is no error."""
    regions: Regions = []
    missing: list[np.ndarray] = []
    errors: list[str] = []
    notes: list[str] = []
    for body in cutout_bodies(fetched):
        g = body.request.members
        if body.data is None:
            missing.append(g)
            if body.error:
                errors.append(body.error)
            continue
        try:
            region, psf_notes = region_from_file(body.data, body.request.url, tables, parent_shape)
        except (FitsStructureError, OSError, ValueError) as exc:
            missing.append(g)
            errors.append(f"{body.request.url}: {exc}")
            continue
        notes.extend(psf_notes)
        held = sources_inside(region, ra[g], dec[g], halfsize)
        if held.any():
            regions.append((region, g[held]))
        missing.append(g[~held])
    left = np.sort(np.concatenate(missing)) if missing else np.empty(0, dtype=np.int64)
    return Decoded(regions, left, tuple(errors), tuple(notes))


def _decode_mirror_cutouts(fetched: Fetched, tables: ImageTables, ra: np.ndarray, dec: np.ndarray, halfsize: int,
                           parent_shape: tuple[int, int]) -> Decoded:
    """A staged mirror's cutouts of one image: each source is measured on the first cutout that holds its
    whole neighbourhood. A source on the frame that no cutout holds is an error (the mirror was staged for
    other sources), not 'off_image'."""
    todo = np.arange(ra.size)
    regions: Regions = []
    errors: list[str] = []
    notes: list[str] = []
    for path, body in zip(fetched.plan.paths, fetched.bodies, strict=True):
        if not todo.size:
            break
        try:
            if isinstance(body, ReadError):
                raise body
            region, psf_notes = region_from_file(body, path, tables, parent_shape)
        except (FitsStructureError, OSError, ValueError) as exc:
            errors.append(f"{path}: {exc}")
            continue
        notes.extend(psf_notes)
        held = sources_inside(region, ra[todo], dec[todo], halfsize)
        if held.any():
            regions.append((region, todo[held]))
            todo = todo[~held]
    if todo.size and regions:
        x, y = sky_to_parent_pixel(regions[0][0].image_header, ra[todo], dec[todo])
        on_frame = neighbourhoods(x, y, halfsize, parent_shape).on_image
        if on_frame.any():
            errors.append(f"{int(on_frame.sum())} source(s) on the image are in none of its staged cutouts "
                          "(stage the mirror for this catalog)")
    return Decoded(regions, todo, tuple(errors), tuple(notes))
