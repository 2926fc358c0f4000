"""Query tiles: catalog sources grouped into HEALPix pixels, merged where one bigger TAP query is cheaper
than several small ones, each tile one ADQL query for the images intersecting its sources' circle (plus the
margin); a tile that overflows the service's row limit is split (HEALPix children, then halves in time).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from spxbatch.level2.constants import DETECTOR_NPIX, PIXEL_SCALE_ARCSEC
from spxbatch.plan.tap import TapClient, TapOverflow, empty_images, region_query
from spxbatch.sky import angle_between, radec_of, unit_vectors

log = logging.getLogger(__name__)

#: Half-diagonal of a detector footprint (deg): the reach of an image beyond a query circle.
IMAGE_REACH_DEG = DETECTOR_NPIX * PIXEL_SCALE_ARCSEC / 3600.0 / np.sqrt(2.0)
#: Finest and coarsest HEALPix orders used for tiles (order 9 ~ 0.11 deg, order 2 ~ 29 deg).
FINE_ORDER, COARSE_ORDER = 9, 2
#: Overlapping tiles never grow beyond this radius (deg), bounding the rows of one query.
MAX_TILE_RADIUS_DEG = 6.0
#: Cost of one query, in units of the rows returned for a single position (latency vs. rows).
QUERY_OVERHEAD = 1.0
#: Padding of every query circle (deg): covers the decimal rounding of the ADQL text.
CIRCLE_PAD_DEG = 1.0 / 3600.0
#: The time window split in halves when one position overflows the row limit (MJD; the mission began at
#: 60796) and the narrowest window tried (days).
DEFAULT_WINDOW = (60000.0, 70000.0)
MIN_WINDOW_DAYS = 1e-3


@dataclass
class Tile:
    """One query region: a HEALPix pixel (nested, `order`) holding `count` sources within `radius_deg`
    of (`ra`, `dec`)."""

    order: int
    pixel: int
    ra: float
    dec: float
    radius_deg: float
    count: int
    #: (mjd_min, mjd_max) of this query when a deep field had to be split in time; None: the plan's filter.
    window: tuple[float, float] | None = None


def make_tiles(ra: np.ndarray, dec: np.ndarray, *, reach_deg: float = IMAGE_REACH_DEG,
               overhead: float = QUERY_OVERHEAD, max_radius_deg: float = MAX_TILE_RADIUS_DEG,
               fine_order: int = FINE_ORDER, coarse_order: int = COARSE_ORDER) -> list[Tile]:
    """Group sources into query tiles.

    Start from the occupied HEALPix pixels at `fine_order`; going up one order at a time, the open tiles
    of one parent pixel are merged when one query for their common circle is estimated cheaper than
    theirs together. The cost of a query of radius r is `overhead + ((r + reach) / reach)^2` (rows scale
    with the area an image can touch; `overhead` is a query's latency in units of a point query's rows).
    A tile whose siblings were not merged stays as it is.
    """
    import astropy.units as u
    from astropy_healpix import HEALPix

    if len(ra) == 0:
        return []
    xyz = unit_vectors(ra, dec)
    pix = HEALPix(nside=2**fine_order, order="nested").lonlat_to_healpix(ra * u.deg, dec * u.deg)
    pix = np.asarray(pix, dtype=np.int64)
    # level state: group label per source, and for each group whether it is still open for merging
    order = fine_order
    tiles: list[Tile] = []
    open_pix, label = np.unique(pix, return_inverse=True)
    centre, radius, count = _circles(xyz, label, len(open_pix))
    while order > coarse_order and len(open_pix):
        parent = open_pix >> 2
        uparent, plabel = np.unique(parent, return_inverse=True)
        pcentre, pradius, pcount = _circles(xyz, plabel[label], len(uparent))
        child_cost = np.bincount(plabel, weights=_cost(radius, reach_deg, overhead), minlength=len(uparent))
        merge = (_cost(pradius, reach_deg, overhead) <= child_cost * (1 + 1e-9)) & (pradius <= max_radius_deg)
        closing = ~merge[plabel]
        tiles.extend(_tiles(order, open_pix[closing], centre[closing], radius[closing], count[closing]))
        # keep only sources of merged parents for the next level
        keep_src = merge[plabel[label]]
        xyz, label = xyz[keep_src], label[keep_src]
        new_index = np.cumsum(merge) - 1
        label = new_index[plabel[label]]
        open_pix, centre, radius, count = uparent[merge], pcentre[merge], pradius[merge], pcount[merge]
        order -= 1
    tiles.extend(_tiles(order, open_pix, centre, radius, count))
    return tiles


def _cost(radius_deg: np.ndarray, reach_deg: float, overhead: float) -> np.ndarray:
    return overhead + ((radius_deg + reach_deg) / reach_deg) ** 2


def _circles(xyz: np.ndarray, label: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre (unit vector), radius (deg) and member count of each labelled group of points."""
    s = np.stack([np.bincount(label, weights=xyz[:, k], minlength=n) for k in range(3)], axis=1)
    norm = np.linalg.norm(s, axis=1, keepdims=True)
    centre = s / np.where(norm > 0, norm, 1.0)
    c = centre[label]
    angle = angle_between(xyz, c)
    radius = np.zeros(n)
    np.maximum.at(radius, label, np.degrees(angle))
    return centre, radius, np.bincount(label, minlength=n)


def _tiles(order, pix, centre, radius, count) -> list[Tile]:
    ra, dec = radec_of(centre)
    return [Tile(order, int(p), float(r), float(d), float(rad), int(c))
            for p, r, d, rad, c in zip(pix, ra, dec, radius, count, strict=True)]


def query_tiles(client: TapClient, ra: np.ndarray, dec: np.ndarray, margin: float, filters: dict[str, Any],
                *, max_concurrency: int = 4) -> tuple[pd.DataFrame, list[Tile]]:
    """Candidate images of every tile, one query each. A tile that overflows the service's row limit is
    split into its HEALPix children and queried again; one that cannot be split further (one position, or
    all its sources in one place) is queried in two halves of its time window instead (deep fields)."""
    todo = make_tiles(ra, dec)
    done: list[Tile] = []
    frames: list[pd.DataFrame] = []
    while todo:
        queries = [tile_query(t, margin, filters) for t in todo]
        results = client.query_many(queries, max_concurrency=max_concurrency)
        again: list[Tile] = []
        for tile, result in zip(todo, results, strict=True):
            if isinstance(result, TapOverflow):
                again.extend(_split(tile, ra, dec, filters, result))
            elif isinstance(result, Exception):
                raise result
            else:
                frames.append(result)
                done.append(tile)
        todo = again
    frames = [f for f in frames if len(f)]
    images = pd.concat(frames, ignore_index=True) if frames else empty_images()
    return images, done


def tile_query(tile: Tile, margin: float, filters: dict[str, Any]) -> str:
    """The ADQL of one tile: images intersecting its sources' circle widened by the margin."""
    return region_query(tile.ra, tile.dec, tile.radius_deg + margin + CIRCLE_PAD_DEG, bands=filters["bands"],
                        time_range=tile.window or filters["time_range"], releases=filters["releases"])


def _split(tile: Tile, ra: np.ndarray, dec: np.ndarray, filters: dict[str, Any],
           cause: TapOverflow) -> list[Tile]:
    """Smaller queries for an overflowing tile: its sources' HEALPix children at the first finer order
    that separates them, else two halves of its time window."""
    import astropy.units as u
    from astropy_healpix import HEALPix

    if tile.radius_deg > 0:
        for order in range(tile.order + 1, 30):
            pix = np.asarray(HEALPix(nside=2**order, order="nested").lonlat_to_healpix(ra * u.deg, dec * u.deg),
                             dtype=np.int64)
            inside = np.flatnonzero((pix >> (2 * (order - tile.order))) == tile.pixel)
            children, label = np.unique(pix[inside], return_inverse=True)
            if len(children) > 1:
                centre, radius, count = _circles(unit_vectors(ra[inside], dec[inside]), label, len(children))
                log.info("tile order %d pixel %d overflowed: %d tiles at order %d", tile.order, tile.pixel,
                         len(children), order)
                return [dataclasses.replace(t, window=tile.window)
                        for t in _tiles(order, children, centre, radius, count)]
    t0, t1 = tile.window or filters["time_range"] or DEFAULT_WINDOW
    if t1 - t0 < MIN_WINDOW_DAYS:
        raise TapOverflow(f"the TAP row limit was reached for the {tile.count} source(s) near RA {tile.ra:.4f}, "
                          f"Dec {tile.dec:.4f} even for MJD {t0:.4f}..{t1:.4f}; raise the limit (maxrec) or "
                          "narrow the plan with fewer bands") from cause
    mid = 0.5 * (t0 + t1)
    log.info("tile at RA %.4f Dec %.4f overflowed: splitting MJD %.3f..%.3f", tile.ra, tile.dec, t0, t1)
    return [dataclasses.replace(tile, window=(t0, mid)), dataclasses.replace(tile, window=(mid, t1))]
