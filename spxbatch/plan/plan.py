"""The bulk query plan: which images hold which catalog sources, from one TAP query per sky tile.

Sources are grouped into HEALPix tiles (nested, merged bottom-up where one bigger query is cheaper than
several small ones), each tile is one ADQL query for the images that intersect the circle around its
sources (plus the margin), and sources are matched to the returned footprints on the client, vectorised.
A local mirror is planned the same way from its own file headers, without a server. The plan is two
tables, `images` and `pairs`, saved in the run directory; a rerun with the same inputs reuses it.
"""

from __future__ import annotations

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

from spxbatch.archive.location import ArchiveLocation, resolve_archive
from spxbatch.archive.retry import RetryPolicy
from spxbatch.files import atomic_path, atomic_write_bytes
from spxbatch.plan.footprint import margin_deg
from spxbatch.plan.local import local_images
from spxbatch.plan.match import match
from spxbatch.plan.select import apply_filters, check_collections, dedupe, plan_filters
from spxbatch.plan.tap import TapClient, read_images
from spxbatch.plan.tiles import query_tiles

log = logging.getLogger(__name__)

#: Bump when the plan's content or layout changes, so saved plans from older code are not reused.
PLAN_FORMAT = 2


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


def make_plan(catalog, location: ArchiveLocation | str, *, bands: Sequence[int | str] | None = None,
              time_range: Sequence[float] | None = None, collections: Sequence[str] | None = None,
              releases: Sequence[str] | None = None, margin_px: float = 2.0,
              run_dir: str | Path | None = None, max_concurrency: int = 4, tap_mode: str = "sync",
              maxrec: int | None = None, retry: RetryPolicy | None = None) -> Plan:
    """Plan which images to read for which sources (see the module docstring).

    `catalog` has `ra`, `dec` arrays (deg), e.g. a `spxbatch.catalog.Catalog`. `bands`: 1..6 or 'D1'...;
    `time_range`: (mjd_min, mjd_max), images whose exposure overlaps it; `collections`: e.g.
    ['spherex_qr2'] (wide) or ['spherex_qr2_deep']; `releases`: e.g. ['qr2'] (from the file path).
    `margin_px` keeps sources up to that many pixels (6.15") outside a footprint. With `run_dir`, the
    query results are cached in `run_dir/query_cache` and the plan is saved in `run_dir/plan`; a saved
    plan made from the same inputs is returned without any query. `retry`: how TAP requests are retried.
    """
    loc = resolve_archive(location) if isinstance(location, str) else location
    ra = np.ascontiguousarray(catalog.ra, dtype=np.float64)
    dec = np.ascontiguousarray(catalog.dec, dtype=np.float64)
    filters = plan_filters(bands, time_range, collections, releases)
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
        stats["unreadable_unplaced"] = [list(f) for f in candidates.attrs.get("unplaced", [])]
        for relpath, reason in stats["unreadable_unplaced"]:
            log.warning("%s cannot be read and no other file places it on the sky: not planned (%s)", relpath,
                        reason)
    else:
        cache = Path(run_dir) / "query_cache" if run_dir is not None else None
        client = TapClient(loc.tap_url, cache_dir=cache, mode=tap_mode, maxrec=maxrec, retry=retry)
        candidates, tiles = query_tiles(client, ra, dec, margin, filters, max_concurrency=max_concurrency)
        stats.update(queries=len(tiles), queries_sent=client.sent, tap_failures=len(client.failures))
    stats["rows"] = len(candidates)
    check_collections(candidates, filters["collections"])
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


def _fingerprint(ra: np.ndarray, dec: np.ndarray, loc: ArchiveLocation, filters: dict[str, Any],
                 margin_px: float) -> str:
    """A hash of everything the plan depends on."""
    h = hashlib.sha256()
    h.update(ra.tobytes())
    h.update(dec.tobytes())
    h.update(json.dumps([PLAN_FORMAT, loc.kind, loc.tap_url, loc.file_root, filters, float(margin_px)],
                        sort_keys=True).encode())
    return h.hexdigest()

