"""`spxbatch stage`: write exactly the data a plan needs into a local mirror, to measure later with no network.

HPC login nodes reach the archive, compute nodes often do not: stage on one, measure on the other. The mirror
is laid out like IRSA's file tree below 'ibe/data/spherex/' (so `--archive MIRROR_DIR` reads it), holds the
whole image files or one cutout per tight group of sources (sized to hold every member's photometry
neighbourhood, named '<image stem>_cutNNN.fits' beside where the image would be; `--fetch auto`, the
default, picks per image whichever weighs less), the calibration products of the detectors planned, and a
manifest `spxbatch-manifest.json`: per file its size, sha256, kind, obs_id,
detector, parent image and frame size (a cutout's header does not record the parent's size), plus the plans
it serves. Staging is resumable: a file whose manifest entry matches its size and checksum is not fetched
again. The work is spread over Dask workers like measuring; bytes come through the fetch layer's retrying I/O.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spxbatch.archive.io import ArchiveIO, IOStats, ReadError, RetryPolicy, maybe_gunzip
from spxbatch.archive.location import relative_to_root
from spxbatch.fetch.cache import process_cache
from spxbatch.fetch.fetch import FetchOptions, image_location
from spxbatch.fetch.strategies import Target, cutout_bytes, cutout_requests, fitsmap_for, open_level2
from spxbatch.files import atomic_write_bytes, sha256_file
from spxbatch.level2.naming import CALIBRATION_PRODUCTS, IBE_ROOT, calibration_relpath

MANIFEST_NAME = "spxbatch-manifest.json"
MANIFEST_FORMAT = 1
#: Seconds between manifest saves while staging (each save rewrites the whole manifest).
MANIFEST_EVERY_S = 1.0


@dataclass
class StageJob:
    """One file set to stage: an image (its whole file, or the cutouts of the sources on it at ra/dec) or,
    with kind 'calibration', one calibration product (`image` holds its relpath and url only)."""

    kind: str
    image: dict[str, Any]
    ra: np.ndarray
    dec: np.ndarray


# ------------------------------------------------------------------------------------------------ manifest


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest of a mirror ('files': relpath below the root -> entry; 'plans': fingerprint -> record);
    empty when the directory has none."""
    path = Path(root) / MANIFEST_NAME
    if not path.exists():
        return {"format": MANIFEST_FORMAT, "files": {}, "plans": {}}
    return json.loads(path.read_text())


def write_manifest(root: str | Path, manifest: dict[str, Any]) -> None:
    """Save the manifest atomically (a killed run leaves the previous whole one)."""
    atomic_write_bytes(Path(root) / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True).encode())


def is_intact(root: Path, relpath: str, entry: dict[str, Any] | None) -> bool:
    """Whether a manifest entry's file is in the mirror with its recorded size and checksum (an entry of
    kind 'none', e.g. a cutout with no overlap or an absent calibration product, needs no file)."""
    if not entry:
        return False
    if entry.get("kind") == "none":
        return True
    path = root / relpath
    return path.is_file() and path.stat().st_size == entry.get("size") and sha256_file(path) == entry.get("sha256")


def cutout_relpath(image_relpath: str, k: int) -> str:
    """Where the k-th cutout of an image goes in the mirror: beside the image, '<stem>_cutNNN.fits'."""
    short = relative_to_root(image_relpath)
    stem = short[: -len(".fits")] if short.endswith(".fits") else short
    return f"{stem}_cut{k:03d}.fits"


def staged_cutouts(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Image relpath (below the root) -> {'cutouts': [relpaths], 'ny', 'nx'} of the cutouts a mirror holds."""
    out: dict[str, dict[str, Any]] = {}
    for relpath, entry in sorted(manifest["files"].items()):
        if entry.get("kind") == "cutout":
            ny, nx = entry["parent_shape"]
            rec = out.setdefault(entry["parent"], {"cutouts": [], "ny": int(ny), "nx": int(nx)})
            rec["cutouts"].append(f"{IBE_ROOT}/{relpath}")
    return out


# ------------------------------------------------------------------------------------------------ the task


def stage_batch(jobs: list[StageJob], mirror: str, mode: str, halfsize: int, known: dict[str, dict[str, Any]],
                options: FetchOptions) -> list[dict[str, Any]]:
    """Dask task: make sure each job's files are in the mirror (fetching what is missing or damaged).

    Returns one summary per job: 'files' (relpath -> manifest entry, kept or new), 'fetched', 'bytes',
    'requests' and 'error' (None, or why some file could not be staged).
    """
    root = Path(mirror)
    out = []
    for job in jobs:
        stats = IOStats()
        summary: dict[str, Any] = {"image_id": job.image.get("image_id"), "files": {}, "fetched": 0,
                                   "error": None}
        try:
            if job.kind == "calibration":
                _stage_calibration(job, root, known, options, stats, summary)
            elif mode in ("cutout", "auto"):
                _stage_cutouts(job, root, halfsize, known, options, stats, summary, auto=mode == "auto")
            else:
                _stage_whole(job, root, known, options, stats, summary)
        except (OSError, ValueError) as exc:  # ReadError, FitsStructureError too
            summary["error"] = f"{job.image.get('relpath')}: {exc}"
        summary.update(bytes=stats.bytes_read, requests=stats.requests)
        out.append(summary)
    return out


def _io(path_protocol: str, options: FetchOptions) -> ArchiveIO:
    return ArchiveIO(path_protocol, options.retry, multirange=options.multirange)


def _write(root: Path, relpath: str, data: bytes, **entry: Any) -> dict[str, Any]:
    atomic_write_bytes(root / relpath, data)
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), **entry}


def _image_entry(image: dict[str, Any]) -> dict[str, Any]:
    return {"obs_id": str(image["obs_id"]), "detector": int(image["detector"])}


def _keep_if_intact(root: Path, relpath: str, known: dict, summary: dict) -> bool:
    """True (and the manifest entry kept) when the file is already staged with its recorded size and sha256."""
    if is_intact(root, relpath, known.get(relpath)):
        summary["files"][relpath] = known[relpath]
        return True
    return False


def _stage_whole(job: StageJob, root: Path, known: dict, options: FetchOptions, stats: IOStats,
                 summary: dict) -> None:
    relpath = relative_to_root(str(job.image["relpath"]))
    if _keep_if_intact(root, relpath, known, summary):
        return
    protocol, path = image_location(job.image, options)
    size = job.image.get("size_bytes")
    data = _io(protocol, options).read_whole(path, stats, expected_size=None if pd.isna(size) else int(size))
    summary["files"][relpath] = _write(root, relpath, data, kind="image", **_image_entry(job.image))
    summary["fetched"] += 1


def _stage_cutouts(job: StageJob, root: Path, halfsize: int, known: dict, options: FetchOptions,
                   stats: IOStats, summary: dict, auto: bool = False) -> None:
    """One cutout per group of sources; with `auto`, the whole file instead when the cutouts would weigh
    as much (each carries the full PSF cube)."""
    protocol, path = image_location(job.image, options)
    parent = relative_to_root(str(job.image["relpath"]))
    if protocol not in ("http", "https") or (auto and is_intact(root, parent, known.get(parent))):
        _stage_whole(job, root, known, options, stats, summary)  # no cutout service (S3, local), or staged
        return
    groups, urls, sizes = cutout_requests(path, job.ra, job.dec, halfsize, options.cutout_group_px,
                                          options.cutout_margin_px, gzip=False)
    names = [cutout_relpath(parent, k) for k in range(len(groups))]
    todo = [k for k, name in enumerate(names) if not _keep_if_intact(root, name, known, summary)]
    if not todo:
        return
    io = _io(protocol, options)
    target = Target.from_image(job.image, path, io, stats, process_cache())
    fmap = fitsmap_for(target)
    if auto and sum(cutout_bytes(fmap, sizes[k]) for k in range(len(groups))) >= fmap.size:
        _stage_whole(job, root, known, options, stats, summary)
        return
    ny, nx = fmap["IMAGE"].shape  # the parent's frame size: no cutout header records it
    bodies = io.read_many([urls[k] for k in todo], stats)
    errors = []
    for k, body in zip(todo, bodies, strict=True):
        entry = {"kind": "cutout", "parent": parent, "parent_shape": [int(ny), int(nx)],
                 "cutout_query": urls[k].removeprefix(path), **_image_entry(job.image)}
        if isinstance(body, ReadError):
            if body.status == 400:  # no overlap with the image: nothing to stage, and nothing to retry
                summary["files"][names[k]] = {**entry, "kind": "none", "reason": "no overlap"}
            else:
                errors.append(str(body))
            continue
        data = maybe_gunzip(body)
        try:
            open_level2(data, urls[k]).close()  # a damaged body is not staged (the rerun fetches it again)
        except (OSError, ValueError) as exc:  # FitsStructureError too
            errors.append(f"{urls[k]}: {exc}")
            continue
        summary["files"][names[k]] = _write(root, names[k], data, **entry)
        summary["fetched"] += 1
    if errors:
        summary["error"] = "; ".join(errors)


def _stage_calibration(job: StageJob, root: Path, known: dict, options: FetchOptions, stats: IOStats,
                       summary: dict) -> None:
    relpath = relative_to_root(str(job.image["relpath"]))
    if _keep_if_intact(root, relpath, known, summary):
        return
    protocol, path = image_location(job.image, options)
    try:
        data = _io(protocol, options).read_whole(path, stats)
    except ReadError as exc:
        if exc.status is None or not 400 <= exc.status < 500:
            raise
        summary["files"][relpath] = {"kind": "none", "reason": f"absent ({exc.reason})"}
        return
    except FileNotFoundError:
        summary["files"][relpath] = {"kind": "none", "reason": "absent"}
        return
    summary["files"][relpath] = _write(root, relpath, data, kind="calibration")
    summary["fetched"] += 1


# ------------------------------------------------------------------------------------------------ the jobs


def stage_jobs(plan, ra: np.ndarray, dec: np.ndarray, file_url) -> list[StageJob]:
    """One job per planned image (with the positions of its sources), then one per calibration product of
    each (detector, release) planned. `file_url` maps an IRSA relpath to the archive's URL."""
    images = plan.images.set_index("image_id", drop=False)
    jobs = []
    for image_id, sidx in sorted(plan.sources_by_image().items()):
        row = images.loc[image_id].to_dict()
        jobs.append(StageJob("image", row, ra[sidx], dec[sidx]))
    pairs = sorted({(int(d), str(r) or "qr2") for d, r in zip(plan.images["detector"], plan.images["release"],
                                                                strict=True)})
    for detector, release in pairs:
        for product in CALIBRATION_PRODUCTS:
            rel = calibration_relpath(product, detector, release)
            jobs.append(StageJob("calibration", {"relpath": rel, "url": file_url(rel)}, ra[:0], dec[:0]))
    return jobs


def stage_options(attempts: int, backoff_s: float) -> FetchOptions:
    """Fetch options for staging: the run's retry policy, default cutout grouping."""
    return FetchOptions(retry=RetryPolicy(max_attempts=attempts, backoff_s=backoff_s))


# ------------------------------------------------------------------------------------------------ the stage


def stage_plan(pipeline, mirror: Path, client) -> dict[str, Any]:
    """Stage the saved plan of `pipeline` (a `spxbatch.pipeline.Pipeline`) into `mirror` on the Dask
    `client`, in waves; the manifest is saved as tasks finish (at most every MANIFEST_EVERY_S), so a killed
    run keeps what was done. Returns counts and 'failures' (relpath or image: reason)."""
    from spxbatch.archive.location import resolve_archive
    from spxbatch.photometry import neighbourhood_halfsize
    from spxbatch.pipeline.progress import RunProgress
    from spxbatch.pipeline.stages import batched, run_in_waves
    from spxbatch.plan.plan import Plan

    c = pipeline.config
    mode = c.fetch if c.fetch in ("cutout", "auto") else "whole"
    plan = Plan.load(pipeline.rundir.path)
    cat = pipeline.catalog
    jobs = stage_jobs(plan, cat.ra, cat.dec, resolve_archive(c.archive).file_url)
    halfsize = neighbourhood_halfsize(pipeline.photometry_config)
    options = stage_options(c.fetch_attempts, c.fetch_backoff_s)
    mirror.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(mirror)
    by_image: dict[str, dict[str, dict]] = {}
    for relpath, entry in manifest["files"].items():
        by_image.setdefault(entry.get("parent") or relpath, {})[relpath] = entry
    totals: dict[str, Any] = {"files": 0, "fetched": 0, "bytes": 0, "requests": 0, "failures": []}
    files: list[str] = []

    def submit(batch: list[StageJob]):
        known = {}
        for job in batch:
            known.update(by_image.get(relative_to_root(str(job.image["relpath"])), {}))
        return client.submit(stage_batch, batch, str(mirror), mode, halfsize, known, options,
                             retries=c.task_retries, pure=False)

    def done(batch: list[StageJob], fut) -> None:
        try:
            summaries = fut.result()
        except Exception as exc:  # a task that kept failing: its files are staged by the next run
            summaries = [{"files": {}, "fetched": 0, "bytes": 0, "requests": 0,
                          "error": f"{job.image['relpath']}: task error {type(exc).__name__}: {exc}"}
                         for job in batch]
        for s in summaries:
            manifest["files"].update(s["files"])
            files.extend(s["files"])
            for key in ("fetched", "bytes", "requests"):
                totals[key] += s[key]
            if s["error"]:
                totals["failures"].append(s["error"])
            progress.update(s)
        if time.monotonic() - saved[0] >= MANIFEST_EVERY_S:
            write_manifest(mirror, manifest)
            saved[0] = time.monotonic()

    saved = [time.monotonic()]
    progress = RunProgress(total_images=len(jobs), dashboard=client.dashboard_link, enabled=c.progress,
                           counted="files fetched", count_key="fetched")
    with progress:
        run_in_waves(client, batched(jobs, c.images_per_task), submit, done)
    totals["files"] = len(files)
    manifest["plans"][plan.meta.get("fingerprint", "")] = {
        "catalog": str(c.catalog), "archive": c.archive, "fetch": mode, "images": len(plan.images),
        "complete": not totals["failures"], "files": sorted(files)}
    write_manifest(mirror, manifest)
    return totals
