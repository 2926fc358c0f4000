"""The bulk query plan: which images hold which catalog sources, from one TAP query per sky tile.

Sources are grouped into HEALPix tiles (nested, merged bottom-up where one bigger query is cheaper than
several small ones), each tile is one ADQL query for the images that intersect the circle around its
sources (plus the margin), and sources are matched to the returned footprints on the client, vectorised.
A local mirror is planned the same way from its own file headers, without a server. The plan is two
tables, `images` and `pairs`, saved in the run directory (the pairs partitioned by image block as they are
made, `spxbatch.plan.match`, so the client never holds them all); a rerun with the same inputs reuses it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spxbatch.archive.location import ArchiveLocation, resolve_archive
from spxbatch.archive.retry import RetryPolicy
from spxbatch.errors import StageError
from spxbatch.files import atomic_path, atomic_write_bytes
from spxbatch.plan.footprint import margin_deg
from spxbatch.plan.local import local_images
from spxbatch.plan.match import match
from spxbatch.plan.pairs import concat_pairs, drop_other_pairs, iter_pairs, write_pairs
from spxbatch.plan.select import apply_filters, check_collections, dedupe, plan_filters
from spxbatch.plan.tap import TapClient, read_images
from spxbatch.plan.tiles import query_tiles

log = logging.getLogger(__name__)

#: Bump when the plan's content or layout changes, so saved plans from older code are not reused (3: the
#: pairs partitioned by image block, `spxbatch.plan.pairs`).
PLAN_FORMAT = 3


class Plan:
    """`images` (one row per image to read) and `pairs` (source_index, image_id), plus a record `meta`.

    A plan loaded from a run directory keeps its pairs on disk, partitioned (`spxbatch.plan.pairs`):
    `partitions()` reads them one at a time, as the pipeline does; `pairs` reads them all, for small runs,
    tools and tests."""

    def __init__(self, images: pd.DataFrame, pairs: pd.DataFrame | None = None,
                 meta: dict[str, Any] | None = None, folder: Path | None = None):
        """`pairs` in memory, or None with `folder` the plan folder whose plan.json (`meta`) lists them."""
        if pairs is None and folder is None:
            raise ValueError("a plan needs its pairs or the folder holding them")
        self.images, self.meta, self.folder = images, meta if meta is not None else {}, folder
        self._pairs = pairs

    @property
    def pairs(self) -> pd.DataFrame:
        """Every pair, sorted by (image_id, source_index) (read from every partition when on disk)."""
        if self._pairs is None:
            self._pairs = concat_pairs(self.partitions())
        return self._pairs

    def partitions(self, columns: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
        """The pairs one partition at a time, in image order, from disk when the plan was loaded (a plan made
        in memory is one partition)."""
        if self.folder is not None:
            yield from iter_pairs(self.folder, self.meta, columns)
        else:
            yield self._pairs if columns is None else self._pairs[list(columns)]

    @property
    def paired_images(self) -> int:
        """How many images hold at least one pair (from the partition summaries when on disk)."""
        if self._pairs is None:
            return sum(int(p["images"]) for p in self.meta["partitions"])
        return int(self._pairs["image_id"].nunique())

    def save(self, run_dir: str | Path) -> Path:
        """Write plan/images.parquet, the partitioned pairs and plan/plan.json (each atomically; plan.json,
        written last, names the pairs' folder, so a plan killed while saved keeps the previous one)."""
        folder = Path(run_dir) / "plan"
        folder.mkdir(parents=True, exist_ok=True)
        pairs_dir, partitions = write_pairs(folder, self.pairs)
        with atomic_path(folder / "images.parquet") as tmp:
            self.images.to_parquet(tmp, index=False)
        self.meta = {**self.meta, "format": PLAN_FORMAT, "pairs_dir": pairs_dir, "partitions": partitions}
        _write_meta(folder, self.meta)
        return folder

    @classmethod
    def load(cls, run_dir: str | Path) -> Plan:
        """The plan saved in `run_dir`, its pairs left on disk until asked for."""
        folder = Path(run_dir) / "plan"
        meta = json.loads((folder / "plan.json").read_text())
        if meta.get("format") != PLAN_FORMAT:
            raise StageError(f"the plan in {folder} was saved by an older spxbatch (format {meta.get('format')}); "
                             "plan again (spxbatch replans it when its plan stage runs)")
        return cls(read_images(folder / "images.parquet"), None, meta, folder)

    def sources_by_image(self) -> dict[int, np.ndarray]:
        """image_id -> the catalog rows (sorted) on that image."""
        out: dict[int, np.ndarray] = {}
        for part in self.partitions():
            out.update(split_by_image(part))
        return out


def split_by_image(pairs: pd.DataFrame) -> dict[int, np.ndarray]:
    """image_id -> its sources, from pairs sorted by (image_id, source_index)."""
    ids = pairs["image_id"].to_numpy()
    src = pairs["source_index"].to_numpy()
    cuts = np.flatnonzero(np.diff(ids)) + 1
    return {int(g[0]): s for g, s in zip(np.split(ids, cuts), np.split(src, cuts), strict=True) if len(g)}


def saved_is_current(run_dir: str | Path) -> bool:
    """True when `run_dir` holds a plan saved in this code's layout (PLAN_FORMAT)."""
    path = Path(run_dir) / "plan" / "plan.json"
    return path.exists() and json.loads(path.read_text()).get("format") == PLAN_FORMAT


def _write_meta(folder: Path, meta: dict[str, Any]) -> None:
    """Write plan.json (the commit of a saved plan), then drop the pairs of the plans it replaced."""
    atomic_write_bytes(folder / "plan.json", json.dumps(meta, indent=2, sort_keys=True, default=str).encode())
    drop_other_pairs(folder, meta["pairs_dir"])


def make_plan(catalog, location: ArchiveLocation | str, *, bands: Sequence[int | str] | None = None,
              time_range: Sequence[float] | None = None, collections: Sequence[str] | None = None,
              releases: Sequence[str] | None = None, margin_px: float = 2.0,
              run_dir: str | Path | None = None, max_concurrency: int = 4, tap_mode: str = "sync",
              maxrec: int | None = None, retry: RetryPolicy | None = None,
              on_candidates: Callable[[int], None] | None = None) -> Plan:
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
    if run_dir is not None and saved_is_current(run_dir):
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
    if on_candidates is not None:
        on_candidates(len(images))
    with contextlib.ExitStack() as stack:
        folder = Path(run_dir) / "plan" if run_dir is not None else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="spxbatch-plan-")))
        folder.mkdir(parents=True, exist_ok=True)
        images, pairs_dir, partitions = match(images, ra, dec, margin, folder)
        images.insert(images.columns.get_loc("relpath"), "url", [loc.file_url(r) for r in images["relpath"]])
        covered = np.zeros(len(ra), dtype=bool)
        for part in iter_pairs(folder, {"pairs_dir": pairs_dir, "partitions": partitions}, ["source_index"]):
            covered[part["source_index"].to_numpy(np.int64)] = True
        stats.update(images=len(images), pairs=sum(p["pairs"] for p in partitions),
                     seconds=round(time.perf_counter() - t0, 3), sources_covered=int(covered.sum()))
        meta = {"fingerprint": key, "format": PLAN_FORMAT, "archive": loc.spec, "kind": loc.kind,
                "tap_url": loc.tap_url, "file_root": loc.file_root, "margin_px": margin_px,
                "n_sources": len(ra), **filters, **stats, "pairs_dir": pairs_dir, "partitions": partitions}
        log.info("plan: %d sources, %d images, %d pairs in %d partitions (%s)", len(ra), len(images),
                 stats["pairs"], len(partitions), stats)
        if run_dir is None:  # nowhere to keep it: the pairs come into memory
            return Plan(images, concat_pairs(iter_pairs(folder, meta)), meta)
        with atomic_path(folder / "images.parquet") as tmp:
            images.to_parquet(tmp, index=False)
        _write_meta(folder, meta)
    return Plan.load(run_dir)


def _fingerprint(ra: np.ndarray, dec: np.ndarray, loc: ArchiveLocation, filters: dict[str, Any],
                 margin_px: float) -> str:
    """A hash of everything the plan depends on."""
    h = hashlib.sha256()
    h.update(ra.tobytes())
    h.update(dec.tobytes())
    h.update(json.dumps([PLAN_FORMAT, loc.kind, loc.tap_url, loc.file_root, filters, float(margin_px)],
                        sort_keys=True).encode())
    return h.hexdigest()

