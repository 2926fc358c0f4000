"""The run: plan -> [stage] -> measure (one Dask task per few images, in waves) -> assemble the cube; resumable.

The optional 'stage' stage copies exactly the data the plan needs into a local mirror (`spxbatch.stage`);
once it is done, measuring reads that mirror and needs no network.

Each stage is a function of the run directory; the Dask graph only distributes `measure_batch` over
images. Workers fetch their own bytes and write their own parts; the client sees only small summaries.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from distributed import Client, Future, as_completed

from spxbatch import __version__
from spxbatch.archive.location import relative_to_root, resolve_archive
from spxbatch.cube.assemble import assemble_cube
from spxbatch.cube.store import write_cube
from spxbatch.errors import ConfigError
from spxbatch.photometry import PhotometryConfig
from spxbatch.photometry.config import photometry_config
from spxbatch.pipeline.cluster import dask_client
from spxbatch.pipeline.config import RunConfig, config_from_dict
from spxbatch.pipeline.measure import ImageJob, measure_batch, unmeasured_rows
from spxbatch.pipeline.progress import RunProgress
from spxbatch.pipeline.reachability import check_archive_reachable
from spxbatch.pipeline.rundir import DEFAULT_STAGES, NEEDS, STAGES, RunDir
from spxbatch.plan.catalog import Catalog, read_catalog
from spxbatch.plan.plan import Plan, make_plan

log = logging.getLogger(__name__)

#: Options that change what finished work means: a rerun may not change them.
_FIXED_OPTIONS = ("catalog", "archive", "bands", "time_range", "collections", "releases", "name_col", "ra_col",
                  "dec_col", "photometry")


class StageError(RuntimeError):
    """A stage was asked for before the stages it needs were done."""


def _check_consistent(saved: dict[str, Any], cfg: RunConfig) -> None:
    """Refuse a rerun whose options would make the finished work in the run directory inconsistent."""
    new = cfg.to_dict()
    changed = [k for k in _FIXED_OPTIONS if saved.get(k) != new.get(k)]
    if changed:
        detail = "; ".join(f"{k}: {saved.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ConfigError(
            f"run directory {cfg.run_dir} was made with other options ({detail}); "
            "use a new output (-o) or run directory, or drop the changed options")


class Pipeline:
    """One run, stage by stage: `plan()`, `measure()`, `assemble()`; each checks that what it needs is done."""

    def __init__(self, config: RunConfig):
        self.config = config.resolved()
        self.rundir = RunDir(self.config.run_dir)
        self._catalog: Catalog | None = None

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, **overrides: Any) -> Pipeline:
        """Resume a run from its directory's saved configuration, with `overrides` on top."""
        saved = RunDir(run_dir).read_config()
        if saved is None:
            raise StageError(f"{run_dir} is not a spxbatch run directory (no config.json)")
        return cls(dataclasses.replace(config_from_dict(saved), **overrides))

    # --- shared inputs ----------------------------------------------------------------------------------
    @property
    def catalog(self) -> Catalog:
        """The validated catalog (read once)."""
        if self._catalog is None:
            c = self.config
            self._catalog = read_catalog(c.catalog, name_col=c.name_col, ra_col=c.ra_col, dec_col=c.dec_col)
        return self._catalog

    @property
    def photometry_config(self) -> PhotometryConfig:
        """The photometry options as a typed config (fails early on an unknown option)."""
        return photometry_config(self.config.photometry)

    def _start(self) -> None:
        """Create the run directory, or check that a rerun's options agree with the saved ones."""
        saved = self.rundir.read_config()
        if saved is not None:
            _check_consistent(saved, self.config)
        self.rundir.create()
        self.rundir.write_config(self.config.to_dict())

    def _require(self, stage: str) -> None:
        for needed in NEEDS[stage]:
            if not self.rundir.stage_done(needed):
                raise StageError(f"stage '{stage}' needs stage '{needed}' first (run it, or use --stages "
                                 f"{','.join((*NEEDS[stage], stage))})")

    # --- stages -----------------------------------------------------------------------------------------
    def plan(self) -> Plan:
        """Query the archive in bulk and match sources to images; reuses a saved plan."""
        self.photometry_config  # noqa: B018  (validate options before any network traffic)
        cat = self.catalog
        self._start()
        if self.rundir.stage_done("plan"):
            return Plan.load(self.rundir.path)
        c = self.config
        plan = make_plan(cat, resolve_archive(c.archive, tap_url=c.tap_url), bands=c.bands or None,
                         time_range=tuple(c.time_range) if c.time_range else None,
                         collections=c.collections or None, releases=c.releases or None,
                         run_dir=self.rundir.path)  # make_plan saves the plan in the run directory
        self.rundir.mark_stage("plan", images=len(plan.images), pairs=len(plan.pairs),
                               sources_planned=int(plan.pairs["source_index"].nunique()))
        return plan

    def _jobs(self, plan: Plan, done: set[int]) -> list[ImageJob]:
        """One job per unfinished image, with the positions of the sources planned on it."""
        cat = self.catalog
        images = plan.images.set_index("image_id", drop=False)
        jobs = []
        for image_id, grp in plan.pairs.groupby("image_id", sort=True):
            if int(image_id) in done:
                continue
            sidx = grp["source_index"].to_numpy(np.int64)
            row = images.loc[image_id].to_dict()
            jobs.append(ImageJob(image=row, source_index=sidx, ra=cat.ra[sidx], dec=cat.dec[sidx]))
        return jobs

    def measure(self, client: Client | None = None) -> dict[str, Any]:
        """Measure every planned image not yet done, on Dask; returns the counts of this call."""
        self._require("measure")
        self._start()
        plan = Plan.load(self.rundir.path)
        jobs = self._jobs(plan, self.rundir.finished_images())
        self._use_mirror(jobs)
        if client is None:
            with dask_client(self.config.cluster) as own:
                totals = self._run_jobs(own, jobs, plan)
        else:
            totals = self._run_jobs(client, jobs, plan)
        n_parts = len(list(self.rundir.parts_dir.glob("img_*.parquet")))
        if n_parts == plan.pairs["image_id"].nunique():
            self.rundir.mark_stage("measure", **totals)
        return totals

    def read_archive(self) -> str:
        """Where measuring reads pixels: the staged mirror once 'stage' is done, else the run's archive."""
        if self.rundir.stage_done("stage"):
            return str(self.rundir.read_state()["stages"]["stage"]["mirror"])
        return self.config.archive

    def _use_mirror(self, jobs: list[ImageJob]) -> None:
        """Point the jobs of images staged as cutouts at their cutout files and parent frame size."""
        if not self.rundir.stage_done("stage"):
            return
        from spxbatch.archive.mirror import read_manifest, staged_cutouts

        cutouts = staged_cutouts(read_manifest(self.read_archive()))
        for job in jobs:
            rec = cutouts.get(relative_to_root(str(job.image["relpath"])))
            if rec is not None:
                job.image.update(rec)

    def _run_jobs(self, client: Client, jobs: list[ImageJob], plan: Plan) -> dict[str, Any]:
        """Submit the batches in waves (bounded in-flight tasks) and follow them to the end."""
        c = self.config
        archive = self.read_archive()
        if jobs:  # one worker first checks that it can reach the archive (compute nodes often cannot)
            local = resolve_archive(archive).kind == "local"  # a mirror's cutouts are not at the image's path
            check_archive_reachable(client, archive, None if local else str(jobs[0].image["url"]))
        phot = self.photometry_config.to_dict()
        totals = {"images": 0, "measured": 0, "bytes": 0, "requests": 0, "failed_images": 0}
        progress = RunProgress(total_images=len(jobs), dashboard=client.dashboard_link, enabled=c.progress)

        def submit(batch: list[ImageJob]) -> Future:
            key = f"measure-{int(batch[0].image['image_id'])}-{len(batch)}"
            return client.submit(measure_batch, batch, str(self.rundir.path), c.fetch, phot, archive,
                                 c.fetch_attempts, c.fetch_backoff_s, key=key, retries=c.task_retries, pure=False)

        def done(batch: list[ImageJob], fut: Future) -> None:
            try:
                summaries = fut.result()
            except Exception as exc:  # a task that kept failing (e.g. its workers died): record, go on
                summaries = [self._record_task_failure(job, exc) for job in batch]
            for s in summaries:
                totals["images"] += 1
                totals["measured"] += s.get("measured", 0)
                totals["bytes"] += s.get("bytes", 0)
                totals["requests"] += s.get("requests", 0)
                totals["failed_images"] += bool(s.get("error"))
                progress.update(s)

        with progress:
            run_in_waves(client, batched(jobs, c.images_per_task), submit, done)
        return totals

    def _record_task_failure(self, job: ImageJob, exc: BaseException) -> dict[str, Any]:
        """Write a part that records an image whose task failed for good, so nothing vanishes."""
        reason = f"failed: task error {type(exc).__name__}: {exc}"
        table = unmeasured_rows(job.image, job.source_index, reason)
        table["image_id"] = np.int64(job.image["image_id"])
        meta = {"image_id": int(job.image["image_id"]), "strategy": "", "bytes": 0, "requests": 0,
                "error": reason, "measured": 0}
        self.rundir.write_part(int(job.image["image_id"]), table, meta)
        return meta

    def assemble(self) -> xr.Dataset:
        """Build the cube from the parts and write it to the output store."""
        self._require("assemble")
        plan = Plan.load(self.rundir.path)
        cat = self.catalog
        parts = self.rundir.read_parts()
        ds = build_dataset(cat, plan, parts, self.config, self.photometry_config)
        write_cube(ds, self.config.output)
        self.rundir.mark_stage("assemble", output=self.config.output, obs=int(ds.sizes["obs"]),
                               failures=int(ds.sizes["failure"]))
        return ds

    def stage(self, mirror: str | Path | None = None, client: Client | None = None) -> dict[str, Any]:
        """Write the data the plan needs into the local mirror `mirror` (default: the one this run directory
        staged into before, else RUN_DIR/mirror); resumable. Returns the counts of this call."""
        from spxbatch.pipeline.stage import stage_plan

        self._require("stage")
        self._start()
        record = self.rundir.read_json("stage.json") or {}
        saved = record.get("mirror")
        target = str(Path(mirror).expanduser().resolve()) if mirror else saved or str(self.rundir.path / "mirror")
        if saved and target != saved and self.rundir.stage_done("stage"):
            raise ConfigError(f"run directory {self.rundir.path} already staged its data into {saved}; "
                              f"it cannot now use the mirror {target} (drop the mirror option, or use a new run "
                              "directory)")
        self.rundir.write_json("stage.json", {**record, "mirror": target})
        if self.rundir.stage_done("stage"):
            return {"files": 0, "fetched": 0, "bytes": 0, "failed": 0}
        if client is None:
            with dask_client(self.config.cluster) as own:
                totals = stage_plan(self, Path(target), own)
        else:
            totals = stage_plan(self, Path(target), client)
        failures = totals.pop("failures")
        self.rundir.write_json("stage.json", {"mirror": target, "failures": failures})
        if not failures:
            self.rundir.mark_stage("stage", mirror=target, **totals)
        return {**totals, "failed": len(failures)}

    def run(self, stages: tuple[str, ...] = DEFAULT_STAGES, client: Client | None = None,
            mirror: str | Path | None = None) -> xr.Dataset | None:
        """Run the given stages in order (each skips what is already done); `mirror` is where 'stage' writes."""
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ConfigError(f"unknown stage(s) {unknown}; stages are {', '.join(STAGES)}")
        steps: dict[str, Callable[[], Any]] = {
            "plan": self.plan, "stage": lambda: self.stage(mirror, client), "measure": lambda: self.measure(client),
            "assemble": self.assemble}
        result = None
        for stage in STAGES:
            if stage in stages:
                result = steps[stage]()
        return result if isinstance(result, xr.Dataset) else None


def batched(items: list[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive slices of `items` of `size` (at least 1) each: the work of one Dask task."""
    size = max(1, size)
    for i in range(0, len(items), size):
        yield items[i: i + size]


def run_in_waves(client: Client, batches: Iterable[list[Any]], submit: Callable[[list[Any]], Future],
                 done: Callable[[list[Any], Future], None], per_worker: int = 4) -> None:
    """Submit batches a few per worker at a time (bounded in-flight tasks: the scheduler never holds the
    whole run), hand each finished future to `done` with its batch, and top up the window.

    The window follows the workers connected now, so an allocation that grows (batch jobs starting,
    adaptive scaling) gets more work in flight, and a shrinking one less."""
    batches = iter(batches)
    pending: dict[str, list[Any]] = {}
    seq = as_completed()

    def fill() -> None:
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        while len(pending) < per_worker * n_workers:
            batch = next(batches, None)
            if batch is None:
                return
            fut = submit(batch)
            pending[fut.key] = batch
            seq.add(fut)

    fill()
    for fut in seq:
        done(pending.pop(fut.key), fut)
        fill()


def build_dataset(cat: Catalog, plan: Plan, parts: pd.DataFrame, config: RunConfig,
                  phot: PhotometryConfig) -> xr.Dataset:
    """The cube's Dataset from the catalog, the plan and the concatenated parts."""
    images = plan.images.set_index("image_id")
    if parts.empty:
        parts = pd.DataFrame({"source_index": [], "measured": [], "status": [], "image_id": [],
                              "obs_id": [], "band": []})
    measured = parts["measured"].astype(bool)
    m = parts[measured].drop(columns=["measured", "status"], errors="ignore")
    failed = parts[~measured]
    failures = pd.DataFrame({
        "source_index": failed["source_index"].astype(np.int64),
        "obs_id": failed["obs_id"].astype(str),
        "band": failed["band"].astype(np.int8),
        "url": images.loc[failed["image_id"].astype(np.int64), "url"].astype(str).to_numpy()
        if len(failed) else np.array([], dtype=str),
        "reason": failed["status"].astype(str),
    })
    planned = np.zeros(len(cat.name), dtype=bool)
    planned[plan.pairs["source_index"].to_numpy(np.int64)] = True
    attrs = {
        "aperture_correction": int(bool(getattr(phot, "aperture_correction", True))),
        "software_version": __version__,
        "config": config.to_json(),
        "archive": config.archive,
        "catalog": str(config.catalog),
    }
    return assemble_cube(cat.name, cat.ra, cat.dec, m, failures, planned, attrs)


def run(catalog: str | Path, output: str | Path | None = None, *, config: RunConfig | None = None,
        stages: tuple[str, ...] | str = DEFAULT_STAGES, client: Client | None = None,
        mirror: str | Path | None = None, **options: Any) -> xr.Dataset | None:
    """Measure every SPHEREx observation of every source in `catalog`; returns the cube's Dataset.

    `options` are RunConfig fields (archive='http://...', fetch='range', bands=[1, 2], photometry={...}).
    `stages`: e.g. ('plan', 'stage') or 'plan,stage' to stage the data into `mirror` and stop; a later
    run with stages ('measure', 'assemble') on the same output then reads the mirror, with no network.
    """
    cfg = dataclasses.replace(config or RunConfig(), catalog=str(catalog), **options)
    if output is not None:
        cfg.output = str(output)
    if isinstance(stages, str):
        stages = tuple(s.strip() for s in stages.split(",") if s.strip())
    return Pipeline(cfg).run(stages, client=client, mirror=mirror)
