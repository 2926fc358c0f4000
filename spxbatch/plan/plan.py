"""The bulk query plan: which images hold which catalog sources, from one TAP query per sky tile.

Sources are grouped into HEALPix tiles (nested, merged bottom-up where one bigger query is cheaper than
several small ones), each tile is one ADQL query for the images that intersect the circle around its
sources (plus the margin), and sources are matched to the returned footprints on the client, vectorised.
A local mirror is planned the same way from its own file headers, without a server. The plan is two
tables, `images` and `pairs`, saved in the run directory; a rerun with the same inputs reuses it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spxbatch.archive.location import ArchiveLocation, relative_to_root, resolve_archive
from spxbatch.files import atomic_path, atomic_write_bytes
from spxbatch.level2.constants import BANDS, DETECTOR_NPIX, PIXEL_SCALE_ARCSEC
from spxbatch.level2.naming import IBE_ROOT, level2_relpath
from spxbatch.plan.footprint import Footprints, margin_deg, radec_to_xyz, xyz_to_radec
from spxbatch.plan.tap import (
    IMAGE_COLUMNS,
    TapClient,
    TapOverflow,
    empty_images,
    read_images,
    region_query,
    version_key,
)

log = logging.getLogger(__name__)

#: Bump when the plan's content or layout changes, so saved plans from older code are not reused.
PLAN_FORMAT = 1
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

PAIR_COLUMNS = ("source_index", "image_id")


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


@dataclass
class Plan:
    """`images` (one row per image to read) and `pairs` (source_index, image_id), plus a record `meta`."""

    images: pd.DataFrame
    pairs: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, run_dir: str | Path) -> Path:
        """Write plan/images.parquet, plan/pairs.parquet and plan/plan.json (each atomically)."""
        folder = Path(run_dir) / "plan"
        folder.mkdir(parents=True, exist_ok=True)
        for name, df in (("images", self.images), ("pairs", self.pairs)):
            with atomic_path(folder / f"{name}.parquet") as tmp:
                df.to_parquet(tmp, index=False)
        atomic_write_bytes(folder / "plan.json", json.dumps(self.meta, indent=2, sort_keys=True, default=str).encode())
        return folder

    @classmethod
    def load(cls, run_dir: str | Path) -> Plan:
        """The plan saved by `save` in `run_dir`."""
        folder = Path(run_dir) / "plan"
        return cls(read_images(folder / "images.parquet"), pd.read_parquet(folder / "pairs.parquet"),
                   json.loads((folder / "plan.json").read_text()))

    def sources_by_image(self) -> dict[int, np.ndarray]:
        """image_id -> the catalog rows (sorted) on that image."""
        ids = self.pairs["image_id"].to_numpy()
        src = self.pairs["source_index"].to_numpy()
        cuts = np.flatnonzero(np.diff(ids)) + 1
        return {int(g[0]): s for g, s in zip(np.split(ids, cuts), np.split(src, cuts), strict=True) if len(g)}


# ----------------------------------------------------------------------------------------------------------
# Public entry point


def make_plan(catalog, location: ArchiveLocation | str, *, bands: Sequence[int | str] | None = None,
              time_range: Sequence[float] | None = None, collections: Sequence[str] | None = None,
              releases: Sequence[str] | None = None, margin_px: float = 2.0,
              run_dir: str | Path | None = None, max_concurrency: int = 4, tap_mode: str = "sync",
              maxrec: int | None = None) -> Plan:
    """Plan which images to read for which sources (see the module docstring).

    `catalog` has `ra`, `dec` arrays (deg), e.g. a `spxbatch.catalog.Catalog`. `bands`: 1..6 or 'D1'...;
    `time_range`: (mjd_min, mjd_max), images whose exposure overlaps it; `collections`: e.g.
    ['spherex_qr2'] (wide) or ['spherex_qr2_deep']; `releases`: e.g. ['qr2'] (from the file path).
    `margin_px` keeps sources up to that many pixels (6.15") outside a footprint. With `run_dir`, the
    query results are cached in `run_dir/query_cache` and the plan is saved in `run_dir/plan`; a saved
    plan made from the same inputs is returned without any query.
    """
    loc = resolve_archive(location) if isinstance(location, str) else location
    ra = np.ascontiguousarray(catalog.ra, dtype=np.float64)
    dec = np.ascontiguousarray(catalog.dec, dtype=np.float64)
    filters = _filters(bands, time_range, collections, releases)
    key = _fingerprint(ra, dec, loc, filters, margin_px)
    if run_dir is not None and (Path(run_dir) / "plan" / "plan.json").exists():
        saved = Plan.load(run_dir)
        if saved.meta.get("fingerprint") == key:
            log.info("reusing the plan saved in %s", run_dir)
            return saved
    t0 = time.perf_counter()
    margin = margin_deg(margin_px)
    stats: dict[str, Any] = {}
    if loc.kind == "local" and loc.tap_url is None:
        candidates = local_images(loc.file_root)
        stats["queries"] = 0
    else:
        cache = Path(run_dir) / "query_cache" if run_dir is not None else None
        client = TapClient(loc.tap_url, cache_dir=cache, mode=tap_mode, maxrec=maxrec)
        candidates, tiles = query_tiles(client, ra, dec, margin, filters, max_concurrency=max_concurrency)
        stats.update(queries=len(tiles), queries_sent=client.sent, tap_failures=len(client.failures))
    stats["rows"] = len(candidates)
    candidates = apply_filters(candidates, filters)
    images = dedupe(candidates)
    stats["duplicates_dropped"] = len(candidates) - len(images)
    images, pairs = match(images, ra, dec, margin)
    images.insert(images.columns.get_loc("relpath"), "url", [loc.file_url(r) for r in images["relpath"]])
    stats.update(images=len(images), pairs=len(pairs), seconds=round(time.perf_counter() - t0, 3),
                 sources_covered=int(pairs["source_index"].nunique()))
    meta = {"fingerprint": key, "format": PLAN_FORMAT, "archive": loc.spec, "kind": loc.kind,
            "tap_url": loc.tap_url, "file_root": loc.file_root, "margin_px": margin_px,
            "n_sources": len(ra), **filters, **stats}
    plan = Plan(images, pairs, meta)
    if run_dir is not None:
        plan.save(run_dir)
    log.info("plan: %d sources, %d images, %d pairs (%s)", len(ra), len(images), len(pairs), stats)
    return plan


# ----------------------------------------------------------------------------------------------------------
# Filters and dedupe


def _band_number(b: int | str) -> int:
    text = str(b).strip().upper().replace("SPHEREX-", "")
    n = int(text[1:]) if text.startswith("D") else int(text)
    if n not in BANDS:
        raise ValueError(f"band {b!r} is not one of 1..6 or D1..D6")
    return n


def _filters(bands, time_range, collections, releases) -> dict[str, Any]:
    """The filters in canonical form (sorted lists or None), as recorded in the plan."""
    if time_range is not None and len(time_range) == 0:
        time_range = None
    if time_range is not None:
        if len(time_range) != 2 or not float(time_range[0]) <= float(time_range[1]):
            raise ValueError(f"time_range must be (mjd_min, mjd_max) with min <= max, not {time_range!r}")
        time_range = [float(time_range[0]), float(time_range[1])]
    return {"bands": sorted({_band_number(b) for b in bands}) if bands else None,
            "time_range": time_range,
            "collections": sorted(set(collections)) if collections else None,
            "releases": sorted({r.lower() for r in releases}) if releases else None}


def apply_filters(images: pd.DataFrame, filters: dict[str, Any]) -> pd.DataFrame:
    """Rows that pass the band, time, collection and release filters (also applied on the server)."""
    keep = np.ones(len(images), dtype=bool)
    if filters["bands"]:
        keep &= images["band_name"].isin([f"D{b}" for b in filters["bands"]]).to_numpy()
    if filters["time_range"]:
        t0, t1 = filters["time_range"]
        keep &= (images["mjd_end"].to_numpy(float) >= t0) & (images["mjd_start"].to_numpy(float) <= t1)
    if filters["collections"]:
        keep &= images["collection"].isin(filters["collections"]).to_numpy()
    if filters["releases"]:
        keep &= images["release"].str.lower().isin(filters["releases"]).to_numpy()
    return images[keep]


def dedupe(images: pd.DataFrame) -> pd.DataFrame:
    """One row per exposure (obs_id, detector): the same file returned twice (tiles overlap; wide and deep
    collections) is kept once, and of several processing versions the newest is kept."""
    if images.empty:
        return images.reset_index(drop=True)
    df = images.sort_values(["relpath", "collection"], kind="stable").drop_duplicates("relpath")
    df = df.assign(_v=[version_key(v) for v in df["version"]])
    df = df.sort_values(["obs_id", "detector", "_v", "release", "relpath"], kind="stable")
    return df.drop_duplicates(["obs_id", "detector"], keep="last").drop(columns="_v").reset_index(drop=True)


def match(images: pd.DataFrame, ra: np.ndarray, dec: np.ndarray,
          margin: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Images holding at least one source (image_id 0..n-1 in (mjd, obs_id, detector) order) and the
    (source_index, image_id) pairs sorted by (image_id, source_index)."""
    if images.empty:
        out = empty_images()
        out.insert(0, "image_id", pd.Series(dtype=np.int64))
        out["mjd"] = pd.Series(dtype=float)
        return out, pd.DataFrame({c: pd.Series(dtype=np.int64) for c in PAIR_COLUMNS})
    # order first: image_id then follows the row order and the pairs come out sorted
    images = images.sort_values(["mjd_start", "obs_id", "detector", "relpath"], kind="stable")
    images = images.reset_index(drop=True)
    fp = Footprints.from_corners(images["poly_ra"].tolist(), images["poly_dec"].tolist())
    poly, point = fp.match(ra, dec, margin)
    used = poly[np.r_[True, poly[1:] != poly[:-1]]] if len(poly) else poly
    new_id = np.full(len(images), -1, dtype=np.int64)
    new_id[used] = np.arange(len(used))
    df = images.iloc[used].reset_index(drop=True)
    df.insert(0, "image_id", np.arange(len(df), dtype=np.int64))
    df["mjd"] = 0.5 * (df["mjd_start"].to_numpy(float) + df["mjd_end"].to_numpy(float))
    pairs = pd.DataFrame({"source_index": point, "image_id": new_id[poly]})
    return df, pairs


# ----------------------------------------------------------------------------------------------------------
# Tiles and queries


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
    xyz = radec_to_xyz(ra, dec)
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
    angle = np.arctan2(np.linalg.norm(np.cross(xyz, c), axis=1), np.einsum("ij,ij->i", xyz, c))
    radius = np.zeros(n)
    np.maximum.at(radius, label, np.degrees(angle))
    return centre, radius, np.bincount(label, minlength=n)


def _tiles(order, pix, centre, radius, count) -> list[Tile]:
    ra, dec = xyz_to_radec(centre)
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
                centre, radius, count = _circles(radec_to_xyz(ra[inside], dec[inside]), label, len(children))
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


# ----------------------------------------------------------------------------------------------------------
# Local mirror


def local_images(root: str) -> pd.DataFrame:
    """The plan's image columns for every Level-2 file below a local mirror root, from their headers."""
    from spxbatch.pipeline.stage import read_manifest
    from spxbatch.plan.index import index_directory

    index = index_directory(root)
    known = read_manifest(root)["files"]
    if not index.empty:  # a cutout at the parent's corner has CRPIXnA = 1: only the manifest tells
        staged = [known.get(r, {}).get("kind") == "cutout" for r in index["relpath"]]
        index = index.assign(is_cutout=index["is_cutout"].to_numpy(bool) | np.asarray(staged, dtype=bool))
    if not index.empty and index["is_cutout"].any():
        return _with_cutout_parents(index, root, known)
    return normalise_index(index)


def _with_cutout_parents(index: pd.DataFrame, root: str, known: dict[str, dict]) -> pd.DataFrame:
    """The image rows of a mirror holding cutouts: whole files as usual, and one row per parent image for
    its cutout files (column `cutouts`), with the parent's footprint and frame size (`nx`, `ny`) so that
    sources are matched and measured exactly as on the parent. The parent's path and size come from the
    mirror's manifest (`known`, written by `spxbatch stage`), else from IRSA's layout and the full detector."""
    from astropy.io import fits
    from astropy.wcs import WCS

    from spxbatch.level2.region import parent_image_header

    whole = normalise_index(index[~index["is_cutout"]])
    whole["nx"], whole["ny"] = index.loc[~index["is_cutout"], ["nx", "ny"]].to_numpy(np.int64).T
    whole["cutouts"] = [[] for _ in range(len(whole))]
    cuts = index[index["is_cutout"]].copy()
    parents, shapes = [], []
    for r in cuts.itertuples(index=False):
        entry = known.get(r.relpath, {})
        parents.append(entry.get("parent") or level2_relpath(r.obs_id, r.detector, r.version,
                                                                      r.release or "qr2"))
        shapes.append(tuple(entry.get("parent_shape") or (DETECTOR_NPIX, DETECTOR_NPIX)))
    cuts["parent"], cuts["parent_shape"] = parents, shapes
    have_whole = {relative_to_root(r) for r in whole["relpath"]}
    rows = []
    for parent, grp in cuts.groupby("parent", sort=True):
        if parent in have_whole:  # the whole file is in the mirror too: it serves every source
            continue
        first = grp.iloc[0]
        ny, nx = first["parent_shape"]
        with fits.open(Path(root) / first["relpath"], lazy_load_hdus=True) as hdul:
            wcs = WCS(parent_image_header(hdul["IMAGE"].header), fix=False)
        ra, dec = wcs.all_pix2world([-0.5, nx - 0.5, nx - 0.5, -0.5], [-0.5, -0.5, ny - 0.5, ny - 0.5], 0)
        row = normalise_index(grp.iloc[:1]).iloc[0].to_dict()
        row.update(relpath=f"{IBE_ROOT}/{parent}", poly_ra=(ra % 360.0).tolist(), poly_dec=dec.tolist(),
                   size_bytes=pd.NA, nx=int(nx), ny=int(ny),
                   cutouts=[f"{IBE_ROOT}/{c}" for c in sorted(grp["relpath"])])
        rows.append(row)
    out = pd.concat([whole, pd.DataFrame(rows, columns=whole.columns)], ignore_index=True)
    return out.astype({"size_bytes": "Int64", "nx": np.int64, "ny": np.int64})


def normalise_index(index: pd.DataFrame) -> pd.DataFrame:
    """The plan's image columns from `index_directory`'s table (relpath relative to the IBE root)."""
    if index.empty:
        return empty_images()
    relpath = [f"{IBE_ROOT}/{str(p).lstrip('/')}" for p in index["relpath"]]
    ra_c = index[[f"ra{i}" for i in range(1, 5)]].to_numpy(float) % 360.0
    dec_c = index[[f"dec{i}" for i in range(1, 5)]].to_numpy(float)
    out = pd.DataFrame({
        "relpath": relpath,
        "obs_id": index["obs_id"].astype(str).to_numpy(),
        "detector": index["detector"].to_numpy(np.int64),
        "band_name": [str(b).split("-")[-1] for b in index["band"]],
        "version": index["version"].astype(str).to_numpy(),
        "release": index["release"].astype(str).to_numpy(),
        "collection": index["collection"].astype(str).to_numpy(),
        "mjd_start": index["time_bounds_lower"].to_numpy(float),
        "mjd_end": index["time_bounds_upper"].to_numpy(float),
        "energy_lo_um": index["energy_bounds_lower"].to_numpy(float) * 1e6,
        "energy_hi_um": index["energy_bounds_upper"].to_numpy(float) * 1e6,
        "poly_ra": ra_c.tolist(),
        "poly_dec": dec_c.tolist(),
        "size_bytes": pd.array(index["size_bytes"], dtype="Int64"),
    })
    return out[list(IMAGE_COLUMNS)]


def _fingerprint(ra: np.ndarray, dec: np.ndarray, loc: ArchiveLocation, filters: dict[str, Any],
                 margin_px: float) -> str:
    """A hash of everything the plan depends on."""
    h = hashlib.sha256()
    h.update(ra.tobytes())
    h.update(dec.tobytes())
    h.update(json.dumps([PLAN_FORMAT, loc.kind, loc.tap_url, loc.file_root, filters, float(margin_px)],
                        sort_keys=True).encode())
    return h.hexdigest()

