"""`spxbatch update CUBE`: keep a cube current by measuring only what the archive added since it was made.

The cube's own catalog and options (its `config` attribute) are planned again, in a run directory beside the
cube (`CUBE.update-run`), against the archive as it is now; each planned image is classified (`classify`):
the images the cube measured from the same processing are carried over as parts from the cube's rows
(`carry`), never fetched; the others (new exposures, reprocessings, failures to retry, images that hold new
catalog sources) are measured by the normal measure stage. The normal assembly then builds the new cube
(`CUBE.new`) from all the parts, so it equals a fresh run of the whole catalog on the grown archive, and the
new cube is swapped in (`swap`). Until then the old cube is untouched; a killed update is resumed by running
it again (`CUBE.update.json` records how far it got).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr
from distributed import Client

from spxbatch.cube.requalify import requalify
from spxbatch.cube.store import is_spxbatch_cube, open_cube, write_cube
from spxbatch.errors import ConfigError
from spxbatch.files import atomic_write_bytes
from spxbatch.pipeline.config import RunConfig, config_from_dict
from spxbatch.pipeline.executor import Executor
from spxbatch.pipeline.rundir import RunDir
from spxbatch.pipeline.stages import FIXED_OPTIONS, Pipeline, build_dataset
from spxbatch.pipeline.update.carry import carried_parts, cube_rows
from spxbatch.pipeline.update.catalog_rows import added_rows
from spxbatch.pipeline.update.classify import MEASURED_KINDS, classify, measured_images, not_planned, summary
from spxbatch.pipeline.update.swap import UpdatePaths, hand_over_run_dir, swap_in
from spxbatch.pipeline.update.unplanned import carried_only, with_unplanned
from spxbatch.pipeline.update.window import look_window
from spxbatch.plan.plan import Plan, make_plan

#: The cube attribute holding the updates made to it (a JSON list, oldest first).
HISTORY_ATTR = "update_history"


@dataclass
class UpdateResult:
    """What an update found (and did): planned images per kind (`classify.KINDS`), images kept although the
    plan does not list them, sources added, the whole-file bytes of the images to measure (an upper bound of
    what is read; `unknown_sizes` images have no listed size)."""

    cube: str
    kinds: dict[str, int]
    kept_unplanned: int
    sources_added: int
    fetch_bytes: int
    unknown_sizes: int
    window: list[float] | None = None
    measured: dict[str, Any] = field(default_factory=dict)
    failed_images: int = 0
    #: True when this call only finished the swap of an update that was killed during it.
    resumed_swap: bool = False
    #: A dry run's images to fetch: 'kind: path' each, in plan order.
    to_fetch: list[str] = field(default_factory=list)

    @property
    def to_measure(self) -> int:
        """Images the update measures (fetches)."""
        return sum(self.kinds[k] for k in MEASURED_KINDS)

    @property
    def up_to_date(self) -> bool:
        """Nothing to measure and no source to add: the cube is current."""
        return self.to_measure == 0 and self.sources_added == 0


def update_cube(cube: str | Path, *, archive: str | None = None, catalog: str | Path | None = None,
                since: str | None = None, time_range: tuple[float, float] | None = None, dry_run: bool = False,
                executor: Executor | Client | None = None, **options: Any) -> UpdateResult:
    """Bring `cube` up to date with the archive (see the module doc); returns what was found and done.

    `archive`: where to look (default the cube's own); `catalog`: a catalog whose first rows are the cube's
    sources and whose further rows are new sources (ConfigError when a row of the cube's changed); `since` (an
    ISO date) or `time_range` (MJDs): only images of that window are looked at; `dry_run`: plan and classify,
    change nothing. `options`: execution options of the measuring (`cluster`, `progress`, ...). Tasks run on
    `executor` (or a Dask client), else on a cluster made from the options."""
    paths = UpdatePaths.of(cube)
    record = _read_json(paths.record)
    if record and record.get("phase") == "swap" and not dry_run:  # killed while swapping: finish that
        _finish(paths, record)
        return UpdateResult(**{**record["result"], "resumed_swap": True})
    if not is_spxbatch_cube(paths.cube):
        what = "is not a spxbatch cube (no spxbatch Zarr metadata)" if paths.cube.exists() else "does not exist"
        raise ConfigError(f"cube {paths.cube} {what}; give the -o of a finished run")
    old = open_cube(paths.cube, dask=False)
    cube_cfg = _cube_config(old, paths, archive, catalog, options)
    window = look_window(cube_cfg.time_range, since, time_range)
    work_cfg = cube_cfg.updated({"run_dir": str(paths.work), **({"time_range": window} if window else {})})
    pipeline = Pipeline(work_cfg, replan=not dry_run and _other_options(paths.work, work_cfg))
    cat = pipeline.catalog
    fingerprint = old.attrs.get("catalog_fingerprint")
    n_added = added_rows(cat, old["source"].values, old["ra"].values, old["dec"].values,
                         json.loads(fingerprint) if fingerprint else None)
    obs, failures = cube_rows(old)
    held = measured_images(obs, failures)
    if dry_run:
        plan = _plan_only(pipeline)
    else:
        pipeline.archive_location()  # a bad archive option is refused before anything is written
        pipeline.check_outputs()
        record = record or {"when": _now(), "phase": "measure"}
        _write_json(paths.record, record)
        plan = pipeline.plan()
    listed = plan.images[~carried_only(plan.images)]
    kinds = classify(listed, plan.pairs, held, len(old["source"]))
    unplanned = not_planned(listed, held)
    sizes = pd.to_numeric(listed.set_index("image_id").get("size_bytes", pd.Series(dtype=float)), errors="coerce")
    sizes = sizes.reindex(kinds.index[kinds.isin(MEASURED_KINDS)])
    result = UpdateResult(str(paths.cube), summary(kinds), len(unplanned), n_added, int(sizes.fillna(0).sum()),
                          int(sizes.isna().sum()), window)
    if dry_run:
        fetched = listed.set_index("image_id").loc[kinds.index[kinds.isin(MEASURED_KINDS)], "relpath"]
        result.to_fetch = [f"{kinds[i]}: {path}" for i, path in fetched.items()]
        return result
    if result.up_to_date:  # nothing to do: what the update made goes, the cube stays as it is
        shutil.rmtree(paths.work, ignore_errors=True)
        paths.record.unlink(missing_ok=True)
        return result
    if len(unplanned) and not carried_only(plan.images).any():  # once: a rerun loads the plan with them
        plan = with_unplanned(plan, unplanned, obs, failures)
        plan.save(pipeline.rundir.path)
    _carry(pipeline.rundir, plan, kinds, obs, failures, str(old.attrs.get("created", "")))
    if result.to_measure:
        result.measured = pipeline.measure(executor)
    ds = build_dataset(cat, plan, pipeline.rundir.read_parts(), cube_cfg, pipeline.photometry_config)
    entry = _history_entry(record["when"], cube_cfg, result, old, ds)
    ds.attrs[HISTORY_ATTR] = json.dumps([*json.loads(old.attrs.get(HISTORY_ATTR, "[]")), entry])
    result.failed_images = int(result.measured.get("failed_images", 0))
    write_cube(ds, paths.new)
    if old.attrs.get("quality_rules"):  # the cube was requalified by `spxbatch qc`: its rules hold for new rows
        ds = requalify(paths.new, json.loads(old.attrs["quality_rules"]))
    pipeline.rundir.mark_stage("assemble", output=str(paths.cube), obs=int(ds.sizes["obs"]),
                               failures=int(ds.sizes["failure"]))
    pipeline.rundir.write_config(cube_cfg.to_dict())  # the cube's run directory, once handed over
    run_dir = _own_run_dir(cube_cfg, paths.cube)
    record.update(phase="swap", run_dir=None if run_dir is None else str(run_dir), keep=window is None,
                  result=asdict(result))
    _write_json(paths.record, record)
    _finish(paths, record)
    return result


def _cube_config(old: xr.Dataset, paths: UpdatePaths, archive: str | None, catalog: str | Path | None,
                 options: dict[str, Any]) -> RunConfig:
    """The cube's configuration (its `config` attribute) with the update's archive, catalog and execution
    options on top: what the new cube records."""
    saved = json.loads(old.attrs.get("config") or "{}")
    if not saved:
        raise ConfigError(f"cube {paths.cube} records no run configuration (attribute 'config'), so it cannot "
                          "be planned again; measure it with a new run")
    changes: dict[str, Any] = {**options, "output": str(paths.cube)}
    if archive:
        changes["archive"] = archive
    if catalog:
        changes["catalog"] = str(catalog)
    return config_from_dict(saved).updated(changes, "command line").resolved()


def _plan_only(pipeline: Pipeline) -> Plan:
    """The plan the update would make, made without writing anything (a dry run)."""
    c = pipeline.config
    return make_plan(pipeline.catalog, pipeline.archive_location(), bands=c.plan.bands or None,
                     time_range=c.plan.time_range, collections=c.plan.collections or None,
                     releases=c.plan.releases or None, retry=c.retry)


def _carry(rundir: RunDir, plan: Plan, kinds: pd.Series, obs: pd.DataFrame, failures: pd.DataFrame,
           created: str) -> None:
    """Write the parts of the images not measured again (kind 'old', and those only the cube holds) from the
    cube's rows; idempotent."""
    images = plan.images.set_index("image_id")
    carried = images.index[carried_only(images)].tolist()
    carried += kinds.index[kinds == "old"].tolist()
    keys = {(str(images.at[i, "obs_id"]), int(images.at[i, "detector"])): int(i) for i in carried}
    for image_id, table in carried_parts(obs, failures, keys, created):
        rundir.write_part(image_id, table, {"image_id": image_id, "strategy": "carried", "bytes": 0,
                                            "requests": 0, "error": None, "measured": int(table["measured"].sum())})


def _history_entry(when: str, cfg: RunConfig, result: UpdateResult, old: xr.Dataset, new: xr.Dataset) -> dict:
    """One update in the cube's history: when, from which archive and catalog, what was added and replaced."""
    return {"when": when, "archive": cfg.archive, "catalog": str(cfg.catalog), "window_mjd": result.window,
            "images_added": result.kinds["new"], "images_replaced": result.kinds["superseding"],
            "images_retried": result.kinds["retry"], "images_remeasured_for_new_sources": result.kinds["new_sources"],
            "images_kept": result.kinds["old"] + result.kept_unplanned, "sources_added": result.sources_added,
            "measurements_before": int(old.sizes["obs"]), "measurements_after": int(new.sizes["obs"])}


def _other_options(work: Path, cfg: RunConfig) -> bool:
    """Whether the work of an interrupted update in `work` was made with other options than `cfg`'s (another
    archive, catalog or window): then it is discarded and the update starts over (see Pipeline's replan)."""
    saved = RunDir(work).read_config()
    if saved is None:
        return False
    before = config_from_dict(saved)
    return any(getattr(before, k) != getattr(cfg, k) for k in FIXED_OPTIONS)


def _own_run_dir(cfg: RunConfig, cube: Path) -> Path | None:
    """The cube's run directory when the update may replace it: absent, or a run directory whose assembly wrote
    this cube and that staged no data (a staged mirror, often big and used offline, is never removed); else
    None, and it is left alone."""
    run_dir = Path(cfg.run_dir)
    if not run_dir.exists():
        return run_dir
    rd = RunDir(run_dir)
    if rd.read_config() is None or rd.read_json("stage.json") is not None:
        return None
    return run_dir if rd.read_state()["stages"].get("assemble", {}).get("output") == str(cube) else None


def _finish(paths: UpdatePaths, record: dict[str, Any]) -> None:
    """Swap the new cube in, hand the run directory over, forget the record (each step idempotent)."""
    swap_in(paths)
    hand_over_run_dir(paths, None if record.get("run_dir") is None else Path(record["run_dir"]), record["keep"])
    paths.record.unlink(missing_ok=True)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _write_json(path: Path, record: dict[str, Any]) -> None:
    atomic_write_bytes(path, json.dumps(record, indent=2, sort_keys=True).encode())
