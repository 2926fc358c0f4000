"""`spxbatch stage`: write exactly the data a plan needs into a local mirror, to measure later with no network.

HPC login nodes reach the archive, compute nodes often do not: stage on one, measure on the other. The mirror
is laid out like IRSA's file tree below 'ibe/data/spherex/' (so `--archive MIRROR_DIR` reads it), holds the
whole image files or one cutout per tight group of sources (sized to hold every member's photometry
neighbourhood, named '<image stem>_cutNNN.fits' beside where the image would be; `--fetch auto`, the
default, picks per image whichever weighs less), the calibration products of the detectors planned, and a
manifest `spxbatch-manifest.json`: per file its size, sha256, kind, obs_id,
detector, parent image and frame size (a cutout's header does not record the parent's size), plus the plans
it serves. Staging is resumable: a file whose manifest entry matches its size and checksum is not fetched
again. A mirror whose disk fills stops the run (`WriteError`, exit 6), every staged file whole or absent.
The work is spread over Dask workers like measuring; bytes come through the fetch layer's retrying I/O.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spxbatch.archive.io import IOStats, ReadError
from spxbatch.archive.location import relative_to_root
from spxbatch.archive.mirror import cutout_relpath, is_intact, read_manifest, write_manifest
from spxbatch.errors import WriteError
from spxbatch.fetch.cache import process_cache
from spxbatch.fetch.calibration import L3_RELEASE, is_absent
from spxbatch.fetch.calibration_files import calibration_file
from spxbatch.fetch.execute import FetchContext, cutout_bodies, read_plan, scan_headers
from spxbatch.fetch.options import FetchOptions
from spxbatch.fetch.request_plan import WholePlan, cutout_plan_bytes, plan_cutouts
from spxbatch.fetch.tables import QR3_CALIBRATION
from spxbatch.fetch.target import ImageTarget
from spxbatch.files import atomic_write_bytes
from spxbatch.level2.naming import CALIBRATION_PRODUCTS
from spxbatch.level2.read import open_level2
from spxbatch.photometry import neighbourhood_halfsize
from spxbatch.pipeline.config import RunConfig
from spxbatch.pipeline.executor import Executor, Outcome, Task, batched, run_in_waves
from spxbatch.pipeline.jobs import ImageJob
from spxbatch.pipeline.progress import RunProgress
from spxbatch.plan.plan import Plan

#: Seconds between manifest saves while staging (each save rewrites the whole manifest).
MANIFEST_EVERY_S = 1.0


@dataclass
class StageJob:
    """One file set to stage: an image (its whole file, or the cutouts of the sources on it at ra/dec) or,
    with kind 'calibration', one calibration product (`image` is a plan row of an image of its detector and
    release, with the `product` and its `product_release`, None for the image's own)."""

    kind: str
    image: dict[str, Any]
    ra: np.ndarray
    dec: np.ndarray


# ------------------------------------------------------------------------------------------------ the task


def stage_batch(jobs: list[StageJob], mirror: str, mode: str, halfsize: int, known: dict[str, dict[str, Any]],
                options: FetchOptions) -> list[dict[str, Any]]:
    """Dask task: make sure each job's files are in the mirror (fetching what is missing or damaged).

    Returns one summary per job: 'files' (relpath -> manifest entry, kept or new), 'fetched', 'bytes',
    'requests' and 'error' (None, or why some file could not be staged). A file the mirror has no room for ends
    the batch: its job's summary, the last, says so in 'write_error' (the files staged before it are listed,
    so the manifest keeps them; the client then stops the run).
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
        except WriteError as exc:  # the mirror's disk is full: the run stops (exit 6), not this file alone
            summary["write_error"] = str(exc)
        except (OSError, ValueError) as exc:  # ReadError, FitsStructureError too
            summary["error"] = f"{job.image.get('relpath')}: {exc}"
        summary.update(bytes=stats.bytes_read, requests=stats.requests)
        out.append(summary)
        if "write_error" in summary:
            break
    return out


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
    target = ImageTarget.from_row(job.image, options)
    ctx = FetchContext.open(target.protocol, options, process_cache(), stats)
    fetched = read_plan(WholePlan(target.path, target.size), ctx)
    summary["files"][relpath] = _write(root, relpath, fetched.bodies[0], kind="image", **_image_entry(job.image))
    summary["fetched"] += 1


def _stage_cutouts(job: StageJob, root: Path, halfsize: int, known: dict, options: FetchOptions,
                   stats: IOStats, summary: dict, auto: bool = False) -> None:
    """The cutout plan of the image's sources, executed by the fetch layer, its bodies written; with `auto`,
    the whole file instead when the cutouts would weigh as much (each carries the full PSF cube)."""
    target = ImageTarget.from_row(job.image, options)
    parent = relative_to_root(str(job.image["relpath"]))
    if not target.has_cutout_service or (auto and is_intact(root, parent, known.get(parent))):
        _stage_whole(job, root, known, options, stats, summary)  # no cutout service (S3, local), or staged
        return
    plan = plan_cutouts(target.path, job.ra, job.dec, halfsize, options, gzip=False)
    names = [cutout_relpath(parent, k) for k in range(len(plan.requests))]
    todo = [k for k, name in enumerate(names) if not _keep_if_intact(root, name, known, summary)]
    if not todo:
        return
    ctx = FetchContext.open(target.protocol, options, process_cache(), stats)
    fmap = scan_headers(ctx, target.path, target.size)
    if auto and cutout_plan_bytes(fmap, plan) >= fmap.size:
        _stage_whole(job, root, known, options, stats, summary)
        return
    ny, nx = fmap["IMAGE"].shape  # the parent's frame size: no cutout header records it
    missing = dataclasses.replace(plan, requests=tuple(plan.requests[k] for k in todo))
    errors = []
    for k, body in zip(todo, cutout_bodies(read_plan(missing, ctx)), strict=True):
        entry = {"kind": "cutout", "parent": parent, "parent_shape": [int(ny), int(nx)],
                 "cutout_query": body.request.url.removeprefix(target.path), **_image_entry(job.image)}
        if body.data is None:
            if body.error:
                errors.append(body.error)
            else:  # no overlap with the image: nothing to stage, and nothing to retry
                summary["files"][names[k]] = {**entry, "kind": "none", "reason": "no overlap"}
            continue
        try:
            open_level2(body.data, body.request.url).close()  # a damaged body is not staged (a rerun fetches it)
        except (OSError, ValueError) as exc:  # FitsStructureError too
            errors.append(f"{body.request.url}: {exc}")
            continue
        summary["files"][names[k]] = _write(root, names[k], body.data, **entry)
        summary["fetched"] += 1
    if errors:
        summary["error"] = "; ".join(errors)


def _stage_calibration(job: StageJob, root: Path, known: dict, options: FetchOptions, stats: IOStats,
                       summary: dict) -> None:
    """Stage one calibration product of the job image's detector (`image['product']`, of the release
    `image['product_release']` or the image's own), found as the fetch layer finds it: through the archive's
    folder listings (the newest delivery). An absent product is recorded under its folder, kind 'none'."""
    target = ImageTarget.from_row(job.image, options)
    product, release = str(job.image["product"]), job.image.get("product_release") or target.release
    ctx = FetchContext.open(target.protocol, options, process_cache(), stats)
    try:
        path = calibration_file(ctx, target, product, release)
    except LookupError as exc:
        folder = f"{release}/{CALIBRATION_PRODUCTS.get(product, (product,))[0]}/{target.detector}/"
        summary["files"][folder] = {"kind": "none", "reason": str(exc)}
        return
    relpath = path[len(target.calib_base):] if target.calib_base else relative_to_root(path)
    if _keep_if_intact(root, relpath, known, summary):
        return
    try:
        fetched = read_plan(WholePlan(path, None), ctx)
    except OSError as exc:  # ReadError, or a local file that is not there
        if not is_absent(exc):
            raise
        reason = f"absent ({exc.reason})" if isinstance(exc, ReadError) else "absent"
        summary["files"][relpath] = {"kind": "none", "reason": reason}
        return
    summary["files"][relpath] = _write(root, relpath, fetched.bodies[0], kind="calibration")
    summary["fetched"] += 1


# ------------------------------------------------------------------------------------------------ the jobs


def stage_jobs(jobs: Iterable[ImageJob], calibration: list[StageJob]) -> Iterator[StageJob]:
    """One staging job per image job (its file, or the cutouts of its sources at their positions at the
    image's time), made as `jobs` yields them (the client holds the jobs in flight, not the run's), then
    the `calibration` jobs (`calibration_jobs`)."""
    for job in jobs:
        yield StageJob("image", job.image, *job.positions()[:2])
    yield from calibration


def calibration_jobs(plan: Plan, options: FetchOptions | None = None) -> list[StageJob]:
    """One staging job per calibration product of each (detector, release) planned, carried by the first
    image of the pair (the product is found beside it, through the archive's listings): the release's own
    products, and QR3's ePSF and l3_flux_corrections when `options` use them."""
    options = options or FetchOptions()
    extra = [("epsf", QR3_CALIBRATION)] if options.psf_source == "epsf" else []
    extra += [("l3_flux_corrections", L3_RELEASE)] if options.l3_flux_correction else []
    none = np.empty(0)
    images = plan.images.assign(release=[str(r) or "qr2" for r in plan.images["release"]])
    return [StageJob("calibration", {**row, "product": product, "product_release": release}, none, none)
            for row in images.drop_duplicates(["detector", "release"]).sort_values(["detector", "release"]).to_dict(
                "records")
            for product, release in [*((p, None) for p in CALIBRATION_PRODUCTS), *extra]]


# ------------------------------------------------------------------------------------------------ the stage


def stage_plan(config: RunConfig, plan: Plan, jobs: Iterable[ImageJob], executor: Executor,
               mirror: Path) -> dict[str, Any]:
    """Stage what the image `jobs` of `plan` (one per paired image, taken as the waves open) need into
    `mirror` on `executor`, in waves; the manifest is
    saved as tasks finish (at most every MANIFEST_EVERY_S), so a killed run keeps what was done. Returns
    counts and 'failures' (relpath or image: reason)."""
    mode = config.fetch if config.fetch in ("cutout", "auto") else "whole"
    options = config.fetch_options_for()
    calibration = calibration_jobs(plan, options)
    work = stage_jobs(jobs, calibration)
    total = plan.paired_images + len(calibration)
    halfsize = neighbourhood_halfsize(config.photometry_config)
    mirror.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(mirror)
    by_image: dict[str, dict[str, dict]] = {}
    for relpath, entry in manifest["files"].items():
        by_image.setdefault(entry.get("parent") or relpath, {})[relpath] = entry
    totals: dict[str, Any] = {"files": 0, "fetched": 0, "bytes": 0, "requests": 0, "failures": []}
    files: list[str] = []

    def task_of(batch: list[StageJob]) -> Task:
        known = {}
        for job in batch:
            if job.kind == "calibration":  # its file is known only after the listing: every calibration entry
                known.update({r: e for r, e in manifest["files"].items() if e.get("kind") in ("calibration", "none")})
            else:
                known.update(by_image.get(relative_to_root(str(job.image["relpath"])), {}))
        return Task(stage_batch, (batch, str(mirror), mode, halfsize, known, options))

    def done(batch: list[StageJob], outcome: Outcome) -> None:
        summaries = outcome.result
        if outcome.error is not None:  # a task that kept failing: its files are staged by the next run
            exc = outcome.error
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
        full = next((s["write_error"] for s in summaries if s.get("write_error")), None)
        if full:  # the disk is full: stop; what is staged stays in the manifest, for the rerun to keep
            with contextlib.suppress(WriteError):  # the manifest may not fit either: its last save stays
                write_manifest(mirror, manifest)
            raise WriteError(full)
        if time.monotonic() - saved[0] >= MANIFEST_EVERY_S:
            write_manifest(mirror, manifest)
            saved[0] = time.monotonic()

    saved = [time.monotonic()]
    progress = RunProgress(total_images=total, dashboard=executor.dashboard_link, enabled=config.progress,
                           counted="files fetched", count_key="fetched")
    with progress:
        run_in_waves(executor, batched(work, config.images_per_task), task_of, done)
    totals["files"] = len(files)
    manifest["plans"][plan.meta.get("fingerprint", "")] = {
        "catalog": str(config.catalog), "archive": config.archive, "fetch": mode, "images": len(plan.images),
        "complete": not totals["failures"], "files": sorted(files)}
    write_manifest(mirror, manifest)
    return totals
