"""The run: plan -> [stage] -> measure (one task per few images, in waves) -> assemble the cube; resumable.

The optional 'stage' stage copies exactly the data the plan needs into a local mirror (`spxbatch.stage`);
once it is done, measuring reads that mirror and needs no network.

Each stage is a function of the run directory; an `Executor` (Dask, or serial in this process) runs the
measuring and staging tasks. Workers fetch their own bytes and write their own parts; the client sees only
small summaries.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import xarray as xr
from distributed import Client

from spxbatch import __version__
from spxbatch.archive.location import ArchiveLocation, resolve_archive
from spxbatch.archive.mirror import read_manifest, staged_cutouts
from spxbatch.cube.assemble import assemble_cube
from spxbatch.cube.store import check_replaceable, open_cube
from spxbatch.errors import ConfigError, StageError, WriteError
from spxbatch.photometry import PhotometryConfig
from spxbatch.pipeline.assembly.driver import AssemblyOptions, assemble_run
from spxbatch.pipeline.assembly.parts import split_parts
from spxbatch.pipeline.config import RunConfig, config_from_dict
from spxbatch.pipeline.early_start import ExecutorStarter, may_stay_in_process, tiny
from spxbatch.pipeline.executor import (
    Executor,
    Outcome,
    SerialExecutor,
    Task,
    as_executor,
    batched,
    dask_executor,
    run_in_waves,
)
from spxbatch.pipeline.fingerprint import catalog_fingerprint
from spxbatch.pipeline.jobs import ImageJob, image_jobs, use_staged_cutouts
from spxbatch.pipeline.measure import link_sharers, measure_batch, unmeasured_rows
from spxbatch.pipeline.progress import RunProgress
from spxbatch.pipeline.reachability import check_archive_reachable
from spxbatch.pipeline.rundir import CATALOG_RECORD, DEFAULT_STAGES, NEEDS, STAGES, RunDir
from spxbatch.pipeline.stage import stage_plan
from spxbatch.plan.catalog import Catalog, read_catalog
from spxbatch.plan.plan import Plan, make_plan, saved_is_current
from spxbatch.plan.select import check_releases

log = logging.getLogger(__name__)

#: The cube `Pipeline.assemble` (and `run`) returns is loaded into memory up to this many measurements.
IN_MEMORY_OBS = 1_000_000
#: Options that change what finished work means: a rerun may not change them.
FIXED_OPTIONS = ("catalog", "archive", "bands", "time_range", "collections", "releases", "name_col", "ra_col",
                  "dec_col", "photometry")


def _check_consistent(saved: dict[str, Any], cfg: RunConfig) -> None:
    """Refuse a rerun whose options would make the finished work in the run directory inconsistent."""
    before = config_from_dict(saved)
    changed = [k for k in FIXED_OPTIONS if not _same_option(k, getattr(before, k), getattr(cfg, k))]
    if changed:
        detail = "; ".join(f"{k}: {getattr(before, k)!r} -> {getattr(cfg, k)!r}" for k in changed)
        raise ConfigError(
            f"run directory {cfg.run_dir} was made with other options ({detail}); "
            "use a new output (-o) or run directory, or drop the changed options")


def _same_option(key: str, before: Any, now: Any) -> bool:
    """Whether a fixed option is unchanged: the catalog is the same file whether named relative to the working
    directory or absolutely (its rows are checked apart, by their fingerprint)."""
    if key == "catalog":
        return Path(before).expanduser().absolute() == Path(now).expanduser().absolute()
    return before == now


def _check_mirror(mirror: str | Path) -> None:
    """Refuse (ConfigError) a mirror path that is a file: staging writes a folder."""
    if Path(mirror).exists() and not Path(mirror).is_dir():
        raise ConfigError(f"the mirror {mirror} is a file; give a folder to stage the data into")


class Pipeline:
    """One run, stage by stage: `plan()`, `measure()`, `assemble()`; each checks that what it needs is done."""

    def __init__(self, config: RunConfig, replan: bool = False):
        """`replan`: when the run directory holds finished work, discard it (plan, parts) and start over
        from the catalog as it is now, instead of refusing a changed catalog."""
        self.config = config.resolved()
        self.rundir = RunDir(self.config.run_dir)
        self._catalog: Catalog | None = None
        self._fingerprint: dict[str, Any] | None = None
        self._replan = replan
        self._plan_archive: ArchiveLocation | None = None

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, **overrides: Any) -> Pipeline:
        """Resume a run from its directory's saved configuration, with `overrides` on top."""
        saved = RunDir(run_dir).read_config()
        if saved is None:
            raise StageError(f"{run_dir} is not a spxbatch run directory (no config.json)")
        return cls(config_from_dict(saved).updated(overrides))

    # --- shared inputs ----------------------------------------------------------------------------------
    @property
    def catalog(self) -> Catalog:
        """The validated catalog (read once)."""
        if self._catalog is None:
            plan = self.config.plan
            self._catalog = read_catalog(self.config.catalog, name_col=plan.name_col, ra_col=plan.ra_col,
                                         dec_col=plan.dec_col)
        return self._catalog

    @property
    def fingerprint(self) -> dict[str, Any]:
        """The fingerprint of the catalog rows the run depends on (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = catalog_fingerprint(self.catalog)
        return self._fingerprint

    @property
    def photometry_config(self) -> PhotometryConfig:
        """The typed photometry options (checked when the config was made)."""
        return self.config.photometry_config

    def check_outputs(self) -> None:
        """Refuse, before any work, an output or a run directory that exists and is not spxbatch's own."""
        check_replaceable(self.config.output)
        self.rundir.check_reusable()

    def _start(self) -> None:
        """Create the run directory, or check that a rerun's options and catalog rows agree with the saved
        ones (only once a stage finished there: a failed start's record does not bind the corrected
        command); with `replan`, finished work is discarded instead."""
        self.check_outputs()
        saved = self.rundir.read_config()
        if saved is not None and self.rundir.has_finished_work():
            if self._replan:
                self.rundir.discard_work()
            else:
                _check_consistent(saved, self.config)
                self._check_catalog()
        self._replan = False  # once: the stages after the first build on the new plan
        self.rundir.create()
        self.rundir.write_config(self.config.to_dict())
        self.rundir.write_json(CATALOG_RECORD, self.fingerprint)

    def _check_catalog(self) -> None:
        """Refuse (ConfigError) a catalog whose rows differ from those the run directory's work was made from."""
        saved, fingerprint = self.rundir.read_json(CATALOG_RECORD), self.fingerprint
        if saved is None:
            raise ConfigError(
                f"run directory {self.rundir.path} holds finished work but no record of the catalog rows it was "
                f"made from (it predates {CATALOG_RECORD}), so it cannot be shown to belong to {self.config.catalog}; "
                "rerun with --replan (replan=True) to plan and measure again from this catalog, or choose another -o")
        if saved.get("sha256") == fingerprint["sha256"]:
            return
        raise ConfigError(
            f"catalog {self.config.catalog} changed since run directory {self.rundir.path} was planned from it "
            f"({saved.get('rows')} rows then, {fingerprint['rows']} now: names, positions or proper motions "
            "differ), so its plan and measurements belong to the old rows; rerun with --replan (replan=True) "
            "to plan and measure again from the catalog as it is now, or choose another -o")

    def _require(self, stage: str) -> None:
        for needed in NEEDS[stage]:
            if not self.rundir.stage_done(needed):
                raise StageError(f"stage '{stage}' needs stage '{needed}' first (run it, or use --stages "
                                 f"{','.join((*NEEDS[stage], stage))})")

    @contextlib.contextmanager
    def _executor(self, given: Executor | Client | None) -> Iterator[Executor]:
        """The executor to run tasks on: the one given (a Dask Client is wrapped), else a Dask cluster made
        from the config for this call (closed, its batch jobs cancelled, on the way out)."""
        if given is not None:
            yield as_executor(given, self.config.task_retries)
            return
        with dask_executor(self.config.cluster, self.config.task_retries) as own:
            yield own

    # --- stages -----------------------------------------------------------------------------------------
    def plan(self, on_candidates: Callable[[int], None] | None = None) -> Plan:
        """Query the archive in bulk and match sources to images; reuses a saved plan. `on_candidates`: told
        the number of candidate images once the archive answered (see `make_plan`)."""
        _ = self.catalog  # read and checked first, whatever follows
        if self.rundir.stage_done("plan"):
            self._start()
            return self._saved_plan()
        return self._make_plan(on_candidates)

    def _make_plan(self, on_candidates: Callable[[int], None] | None = None) -> Plan:
        """Make the plan (its inputs checked first), save it in the run directory and mark the stage."""
        archive = self._check_plan_inputs()  # before any work
        c = self.config
        plan = make_plan(self.catalog, archive, bands=c.plan.bands or None,
                         time_range=c.plan.time_range, collections=c.plan.collections or None,
                         releases=c.plan.releases or None, run_dir=self.rundir.path,
                         retry=c.retry, tap_mode=c.plan.tap_mode,
                         on_candidates=on_candidates)  # make_plan saves the plan in the run directory
        self.rundir.mark_stage("plan", images=len(plan.images), pairs=int(plan.meta["pairs"]),
                               sources_planned=int(plan.meta["sources_covered"]))
        return plan

    def _tiny_plan_images(self) -> int | None:
        """The images of the run's plan (its summary in the run's state) when it is small enough to measure in
        this process, else None."""
        done = self.rundir.read_state()["stages"].get("plan")
        small = done is not None and tiny(self.config.cluster, int(done["images"]), int(done["pairs"]))
        return int(done["images"]) if small else None

    def _saved_plan(self) -> Plan:
        """The plan saved in the run directory, its pairs left on disk; one saved by older code in another
        layout (PLAN_FORMAT) is made again from the same inputs (so with the same image ids)."""
        if saved_is_current(self.rundir.path):
            return Plan.load(self.rundir.path)
        log.info("the plan in %s was saved in an older layout: planning again", self.rundir.path)
        return self._make_plan()

    def _check_plan_inputs(self) -> ArchiveLocation:
        """Everything the plan stage checks before it queries the archive, once (`run` checks them before it
        starts a cluster, `plan` then finds them checked): the catalog, the archive option and its release
        folders, the outputs and the run directory (a ConfigError, exit 2, for any of them). Returns where the
        archive is."""
        if self._plan_archive is None:
            _ = self.catalog
            archive = self.archive_location()
            check_releases(archive, self.config.plan.releases, self.config.retry)
            self._start()
            self._plan_archive = archive
        return self._plan_archive

    def measure(self, executor: Executor | Client | None = None) -> dict[str, Any]:
        """Measure every planned image not yet done on `executor` (default: a Dask cluster from the
        config); returns the counts of this call."""
        self._require("measure")
        self._start()
        plan = self._saved_plan()
        finished = self.rundir.finished_images()
        jobs = image_jobs(plan, self.catalog, skip=finished)  # lazily, partition by partition
        if self.rundir.stage_done("stage"):  # images staged as cutouts are read from their cutout files
            jobs = use_staged_cutouts(jobs, staged_cutouts(read_manifest(self.read_archive())))
        todo = plan.paired_images - sum(i < len(plan.images) for i in finished)
        with self._executor(executor) as ex:
            totals = self._run_jobs(ex, jobs, todo)
        n_parts = len(list(self.rundir.parts_dir.glob("img_*.parquet")))
        if n_parts == plan.paired_images:
            self.rundir.mark_stage("measure", **totals)
        return totals

    def archive_location(self) -> ArchiveLocation:
        """Where the run's archive is; a ConfigError (exit 2) when the archive option names none."""
        spec = self.config.archive
        if "://" in spec and not urlsplit(spec).netloc:
            raise ConfigError(f"archive {spec!r} names no host or bucket; give e.g. http://host:8000 or s3://bucket")
        try:
            return resolve_archive(spec, tap_url=self.config.plan.tap_url)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def read_archive(self) -> str:
        """Where measuring reads pixels: the staged mirror once 'stage' is done, else the run's archive."""
        if self.rundir.stage_done("stage"):
            return str(self.rundir.read_state()["stages"]["stage"]["mirror"])
        return self.config.archive

    def _run_jobs(self, executor: Executor, jobs: Iterable[ImageJob], total: int) -> dict[str, Any]:
        """Run the measuring tasks in waves (bounded in-flight tasks), taking the `total` jobs from `jobs` as
        the window opens, and follow them to the end."""
        c = self.config
        archive = self.read_archive()
        jobs = iter(jobs)
        first = next(jobs, None)
        if first is not None:  # one worker first checks that it can reach the archive (compute nodes often cannot)
            jobs = itertools.chain([first], jobs)
            local = resolve_archive(archive).kind == "local"  # a mirror's cutouts are not at the image's path
            check_archive_reachable(executor, archive, None if local else str(first.image["url"]))
        totals = {"images": 0, "measured": 0, "bytes": 0, "requests": 0, "failed_images": 0}
        progress = RunProgress(total_images=total, dashboard=executor.dashboard_link, enabled=c.progress)
        sharers = link_sharers(c, total, executor.workers())

        def task_of(batch: list[ImageJob]) -> Task:
            return Task(measure_batch, (batch, str(self.rundir.path), c, archive, sharers),
                        key=f"measure-{int(batch[0].image['image_id'])}-{len(batch)}")

        full: list[WriteError] = []

        def done(batch: list[ImageJob], outcome: Outcome) -> None:
            summaries = outcome.result
            if isinstance(outcome.error, WriteError):  # the disk is full: no new task, those in flight end,
                full.append(outcome.error)  # then the run stops (nothing of ours writes after it says so)
                return
            if outcome.error is not None:  # a task that kept failing (e.g. its workers died): record, go on
                summaries = [self._record_task_failure(job, outcome.error) for job in batch]
            for s in summaries:
                totals["images"] += 1
                totals["measured"] += s.get("measured", 0)
                totals["bytes"] += s.get("bytes", 0)
                totals["requests"] += s.get("requests", 0)
                totals["failed_images"] += bool(s.get("error"))
                progress.update(s)

        with progress:
            run_in_waves(executor, itertools.takewhile(lambda _: not full, batched(jobs, c.images_per_task)),
                         task_of, done)
        if full:
            raise full[0]
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

    def assemble(self, executor: Executor | Client | None = None,
                 options: AssemblyOptions | None = None, in_memory: bool = True) -> xr.Dataset:
        """Build the cube from the parts, block by block on `executor` (default: in this process; `options`:
        how the work is cut, by default from the run's size; a resumed assembly keeps its own), and write it
        to the output store (`pipeline.assembly`); returns the cube as written: with `in_memory`, in memory up
        to IN_MEMORY_OBS measurements (a Dataset that stays as it is whatever later happens to the store), else
        (and beyond) opened lazily, so the client's memory does not grow with the run."""
        self._require("assemble")
        self._check_catalog()  # parts of other rows are never assembled under these names
        cat = self.catalog
        urls = pd.read_parquet(self.rundir.plan_dir / "images.parquet", columns=["image_id", "url"])
        ex = SerialExecutor() if executor is None else as_executor(executor, self.config.task_retries)
        path = assemble_run(self.rundir, self.config.output, cat.name, cat.ra, cat.dec,
                            urls.set_index("image_id")["url"], cube_attrs(self.config, self.photometry_config, cat), ex,
                            options)
        ds = open_cube(path)
        if in_memory and ds.sizes["obs"] <= IN_MEMORY_OBS:
            ds = ds.load()
        self.rundir.mark_stage("assemble", output=self.config.output, obs=int(ds.sizes["obs"]),
                               failures=int(ds.sizes["failure"]))
        return ds

    def stage(self, mirror: str | Path | None = None, executor: Executor | Client | None = None) -> dict[str, Any]:
        """Write the data the plan needs into the local mirror `mirror` (default: the one this run directory
        staged into before, else RUN_DIR/mirror) on `executor`; resumable. Returns the counts of this call."""
        self._require("stage")
        self._start()
        record = self.rundir.read_json("stage.json") or {}
        saved = record.get("mirror")
        target = str(Path(mirror).expanduser().resolve()) if mirror else saved or str(self.rundir.path / "mirror")
        _check_mirror(target)
        if saved and target != saved and self.rundir.stage_done("stage"):
            raise ConfigError(f"run directory {self.rundir.path} already staged its data into {saved}; "
                              f"it cannot now use the mirror {target} (drop the mirror option, or use a new run "
                              "directory)")
        self.rundir.write_json("stage.json", {**record, "mirror": target})
        if self.rundir.stage_done("stage"):
            return {"files": 0, "fetched": 0, "bytes": 0, "failed": 0}
        plan = self._saved_plan()
        with self._executor(executor) as ex:  # jobs made as the waves take them, one plan partition at a time
            totals = stage_plan(self.config, plan, image_jobs(plan, self.catalog), ex, Path(target))
        failures = totals.pop("failures")
        self.rundir.write_json("stage.json", {"mirror": target, "failures": failures})
        if not failures:
            self.rundir.mark_stage("stage", mirror=target, **totals)
        return {**totals, "failed": len(failures)}

    def run(self, stages: tuple[str, ...] = DEFAULT_STAGES, client: Client | None = None,
            mirror: str | Path | None = None, executor: Executor | None = None,
            in_memory: bool = True) -> xr.Dataset | None:
        """Run the given stages in order (each skips what is already done); `mirror` is where 'stage' writes.
        Tasks run on `executor`, or on the Dask `client`, or on a Dask cluster made from the config.
        `in_memory=False`: the cube is returned opened lazily whatever its size (see `assemble`)."""
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ConfigError(f"unknown stage(s) {unknown}; stages are {', '.join(STAGES)}")
        self.check_outputs()
        if mirror is not None and "stage" in stages:
            _check_mirror(mirror)
        runner = executor if executor is not None else client
        # one executor (cluster) for every stage that runs tasks, made when first needed; a local cluster of
        # our own starts while the plan is made (its inputs checked first, so bad input starts nothing), as
        # soon as the archive's answer shows the run is not tiny; a tiny run is measured in this process
        starter = ExecutorStarter(lambda: self._executor(runner))
        cluster = self.config.cluster
        may_stay = runner is None and may_stay_in_process(cluster)
        early = runner is None and not cluster.kind and not cluster.scheduler and "plan" in stages and \
            bool(set(stages) - {"plan"}) and not self.rundir.stage_done("plan")
        in_process: list[Executor] = []

        def on_candidates(images: int) -> None:  # the most pairs the plan can hold: every source on every image
            if not tiny(cluster, images, images * len(self.catalog.name)):
                starter.start_early()

        def tasks_executor() -> Executor:
            if not in_process and may_stay and not starter.started:
                images = self._tiny_plan_images()
                if images is not None:
                    log.info("a tiny plan (%d images): measured in this process, no worker processes started, "
                             "its images in one task, fetched at once", images)
                    # one task of every image, all on the link together: nothing waits for a previous task
                    flight = max(images, self.config.fetch_options.images_in_flight)
                    self.config = self.config.updated({"images_per_task": max(images, 1),
                                                       "fetch_options": {"images_in_flight": flight}}, "a tiny plan")
                    in_process.append(SerialExecutor(self.config.task_retries))
            return in_process[0] if in_process else starter.get()

        try:
            if early:
                self._check_plan_inputs()
                if not may_stay:
                    starter.start_early()
            steps: dict[str, Callable[[], Any]] = {
                "plan": lambda: self.plan(on_candidates if early and may_stay else None),
                "stage": lambda: self.stage(mirror, tasks_executor()),
                "measure": lambda: self.measure(tasks_executor()),
                "assemble": lambda: self.assemble(tasks_executor(), in_memory=in_memory)}
            result = None
            for stage in STAGES:
                if stage in stages:
                    result = steps[stage]()
        except BaseException as exc:
            starter.close(type(exc), exc, exc.__traceback__)
            raise
        starter.close()
        return result if isinstance(result, xr.Dataset) else None


def cube_attrs(config: RunConfig, phot: PhotometryConfig, cat: Catalog) -> dict[str, Any]:
    """The cube's run attributes: the aperture-correction flag, software version, config, archive, catalog and
    the fingerprint of its rows."""
    return {
        "aperture_correction": int(bool(getattr(phot, "aperture_correction", True))),
        "software_version": __version__,
        "config": config.to_json(),
        "archive": config.archive,
        "catalog": str(config.catalog),
        "catalog_fingerprint": json.dumps(catalog_fingerprint(cat)),  # the rows `spxbatch update` may extend
    }


def build_dataset(cat: Catalog, plan: Plan, parts: pd.DataFrame, config: RunConfig,
                  phot: PhotometryConfig) -> xr.Dataset:
    """The cube's Dataset from the catalog, the plan and the concatenated parts, in memory (the reference the
    distributed assembly equals)."""
    m, failures = split_parts(parts, plan.images.set_index("image_id")["url"])
    planned = np.zeros(len(cat.name), dtype=bool)
    planned[plan.pairs["source_index"].to_numpy(np.int64)] = True
    return assemble_cube(cat.name, cat.ra, cat.dec, m, failures, planned, cube_attrs(config, phot, cat))


def run(catalog: str | Path, output: str | Path | None = None, *, config: RunConfig | None = None,
        stages: tuple[str, ...] | str = DEFAULT_STAGES, client: Client | None = None,
        mirror: str | Path | None = None, executor: Executor | None = None, replan: bool = False,
        **options: Any) -> xr.Dataset | None:
    """Measure every SPHEREx observation of every source in `catalog`; returns the cube's Dataset.

    `options` are RunConfig options (archive='http://...', fetch='range', bands=[1, 2], photometry={...},
    retry=RetryPolicy(...), cluster=ClusterConfig(...)), checked like a config file's. `stages`: e.g.
    ('plan', 'stage') or 'plan,stage' to stage the data into `mirror` and stop; a later run with stages
    ('measure', 'assemble') on the same output then reads the mirror, with no network. Tasks run on
    `executor` (e.g. `SerialExecutor()`), or the Dask `client`, or a cluster made from the config.
    A run directory holding work made from other catalog rows is refused unless `replan` (start over).
    """
    changes: dict[str, Any] = {**options, "catalog": str(catalog)}
    if output is not None:
        changes["output"] = str(output)
    cfg = (config or RunConfig()).updated(changes)
    if isinstance(stages, str):
        stages = tuple(s.strip() for s in stages.split(",") if s.strip())
    return Pipeline(cfg, replan=replan).run(stages, client=client, mirror=mirror, executor=executor)
