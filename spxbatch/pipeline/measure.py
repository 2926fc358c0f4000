"""The unit of work: fetch one image's pixels near its sources and measure them all; runs on a worker.

Each image's rows (measured or not, with the reason) are written as one atomic part in the run directory,
so a killed run loses at most the images in flight, and a rerun skips what is done.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from spxbatch.archive.location import resolve_archive
from spxbatch.fetch.cache import FetchCache, process_cache
from spxbatch.fetch.fetch import FetchResult, fetch_image
from spxbatch.fetch.options import FetchOptions
from spxbatch.fetch.store import open_store
from spxbatch.level2.region import ImageRegion
from spxbatch.photometry import PhotometryConfig, neighbourhood_halfsize
from spxbatch.photometry.measure import measure_regions
from spxbatch.photometry.psf import prepare_psf
from spxbatch.pipeline.config import RunConfig
from spxbatch.pipeline.jobs import ImageJob
from spxbatch.pipeline.rundir import RunDir


def unmeasured_rows(image: dict[str, Any], source_index: np.ndarray, reason: str) -> pd.DataFrame:
    """Rows that record, for each source, that this image could not be measured and why."""
    n = len(source_index)
    return pd.DataFrame({
        "source_index": np.asarray(source_index, dtype=np.int64),
        "obs_id": [image["obs_id"]] * n,
        "band": np.full(n, int(image["detector"]), dtype=np.int8),
        "measured": np.zeros(n, dtype=bool),
        "status": [reason] * n,
    })


def provenance(image: dict[str, Any], region: ImageRegion | None) -> dict[str, str]:
    """Which release and processing an image's rows come from: the plan row's release folder and tag, the
    file's own PRIMARY VERSION (the plan's, when nothing of the file was read) and where its PSF came from."""
    version = region.primary_header.get("VERSION") if region is not None else image.get("pipeline_version")
    return {"release": _text(image.get("release")), "processing": _text(image.get("version")),
            "pipeline_version": _text(version), "psf_model": region.psf_origin if region is not None else "",
            "calibration": ",".join(region.calibration) if region is not None else ""}


def _text(value: Any) -> str:
    """A plan or header value as text ('' for a missing one)."""
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()


def fetch_job(job: ImageJob, fetch: str, phot: PhotometryConfig, options: FetchOptions | None = None,
              cache: FetchCache | None = None) -> tuple[FetchResult, float]:
    """Fetch the pixels one image's sources need (never raises for a bad file or a network failure: they are
    in the result) and the seconds it took; a PSF read in part has its model's new zones computed here, in
    the fetch thread, before the measurement needs them."""
    t0 = time.perf_counter()
    ra, dec, _ = job.positions()
    result = fetch_image(job.image, ra, dec, strategy=fetch, halfsize=neighbourhood_halfsize(phot),
                         cache=cache, options=options)
    if result.regions:  # the PSF model's new zones, while this thread would wait anyway
        prepare_psf(result.regions[0][0].psf)
    return result, time.perf_counter() - t0


def measure_fetched(job: ImageJob, result: FetchResult, phot: PhotometryConfig,
                    fetch_seconds: float = 0.0) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Measure the fetched regions of one image: its part's rows and summary.

    Sources the fetch could not serve are recorded: 'failed: <error>' when the fetch failed (a rerun
    retries the image), 'off_image' when the source simply is not on it.
    """
    t0 = time.perf_counter()
    image = job.image
    ra, dec, when = job.positions()
    meta: dict[str, Any] = {"image_id": int(image["image_id"]), "strategy": result.strategy,
                            "bytes": int(result.bytes_read), "requests": int(result.requests),
                            "retries": int(result.retries), "error": result.error}
    tables = []
    if result.regions:
        regions = [(region, np.asarray(pos, dtype=np.int64)) for region, pos in result.regions]
        tables.append(pd.DataFrame(measure_regions(regions, ra, dec, phot, job.source_index, neighbours=(ra, dec))))
    missing = np.asarray(result.missing, dtype=np.int64)
    if missing.size:
        reason = f"failed: {result.error}" if result.error else "off_image"
        tables.append(unmeasured_rows(image, job.source_index[missing], reason))
    table = pd.concat(tables, ignore_index=True) if tables else unmeasured_rows(image, job.source_index[:0], "")
    table["image_id"] = np.int64(image["image_id"])
    table = table.assign(**provenance(image, result.regions[0][0] if result.regions else None), position_mjd=when)
    meta["measured"] = int(table["measured"].sum())
    meta["seconds"] = fetch_seconds + time.perf_counter() - t0
    return table, meta


def measure_image(job: ImageJob, fetch: str, phot: PhotometryConfig,
                  options: FetchOptions | None = None, cache: FetchCache | None = None,
                  ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fetch and measure one image; never raises for a bad file or a network failure (they become rows)."""
    result, seconds = fetch_job(job, fetch, phot, options, cache)
    return measure_fetched(job, result, phot, seconds)


def task_fetch_options(config: RunConfig, archive: str, link_sharers: int = 1) -> FetchOptions:
    """The fetch options of a measuring task reading `archive`, `link_sharers` images sharing the link: a
    local mirror is read in place below its root, anything else at the images' URLs."""
    location = resolve_archive(archive)
    return config.fetch_options_for(location.file_root if location.kind == "local" else None, link_sharers)


def link_sharers(config: RunConfig, n_images: int, workers: int) -> int:
    """How many images a run fetches over the link at once: each of its `workers` measures a task of up to
    `images_per_task` images, `images_in_flight` of them fetched together; never more than its `n_images`."""
    per_worker = min(config.fetch_options.images_in_flight, config.images_per_task)
    return max(1, min(n_images, workers * per_worker))


def measure_batch(jobs: list[ImageJob], run_dir: str, config: RunConfig, archive: str,
                  link_sharers: int = 1) -> list[dict[str, Any]]:
    """The task: measure a few images read from `archive` (the run's, or the mirror it staged), write one
    part per image in the run directory (each row stamped with the time it was measured: `date_added`),
    return their small summaries (in the order of `jobs`).

    Up to `images_in_flight` images are fetched at once, in threads (I/O waits release the GIL), while this
    thread measures each as soon as its fetch is done (not in submission order: a small image read fast
    does not wait behind a large one): an image's chain of dependent round trips (headers, PSF, calibration,
    pixels) overlaps the others' and their photometry, so the link does not idle through latency.
    `link_sharers`: the images the whole run fetches at once (`link_sharers()`), for the cost model."""
    rundir = RunDir(run_dir)
    options = task_fetch_options(config, archive, link_sharers)
    cache = process_cache(disk_dir=str(rundir.path / "cache"),
                          store=open_store(options.cache_dir, options.cache_max_gb))
    phot = config.photometry_config
    summaries: dict[int, dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(options.images_in_flight, len(jobs))),
                            thread_name_prefix="spxbatch-fetch") as pool:
        fetches = {pool.submit(fetch_job, job, config.fetch, phot, options, cache): k for k, job in enumerate(jobs)}
        try:
            for fetched in as_completed(fetches):
                job = jobs[fetches[fetched]]
                result, seconds = fetched.result()
                table, meta = measure_fetched(job, result, phot, seconds)
                table["date_added"] = datetime.now(UTC).isoformat(timespec="seconds")
                rundir.write_part(int(job.image["image_id"]), table, meta)
                summaries[fetches[fetched]] = meta
        except BaseException:  # e.g. the disk is full: the fetches not started never start
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return [summaries[k] for k in range(len(jobs))]
