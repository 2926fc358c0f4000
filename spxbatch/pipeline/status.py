"""`spxbatch status RUN_DIR`: which stages are done, what failed, and the command that finishes the run."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from spxbatch.pipeline.rundir import DEFAULT_STAGES, STAGES, RunDir


def run_status(run_dir: str | Path) -> str:
    """A plain-text account of a run directory."""
    rd = RunDir(run_dir)
    cfg = rd.read_config()
    if cfg is None:
        return f"{run_dir}: not a spxbatch run directory (no config.json)"
    state = rd.read_state()["stages"]
    staging = rd.read_json("stage.json")
    lines = [f"Run directory: {rd.path}", f"Catalog: {cfg['catalog']}", f"Archive: {cfg['archive']}",
             f"Output: {cfg['output']}"]
    if staging:
        lines.append(f"Mirror: {staging['mirror']}")
    for stage in STAGES:
        lines.append(_stage_line(stage, state.get(stage), staging))
    n_images = planned_images(rd, state)
    failed: list[int] = []
    if n_images is not None:
        finished = {i for i in rd.finished_images(retry_failed=False) if i < n_images}
        failed = sorted(i for i in finished if (rd.part_meta(i) or {}).get("error"))
        lines.append(f"Images: {n_images} planned, {len(finished) - len(failed)} measured, "
                     f"{len(failed)} failed, {n_images - len(finished)} not yet done")
        for i in failed[:5]:
            lines.append(f"  failed image {i}: {rd.part_meta(i)['error']}")
        if len(failed) > 5:
            lines.append(f"  ... and {len(failed) - 5} more failed images")
    stage_failures = (staging or {}).get("failures", [])
    for reason in stage_failures[:5]:
        lines.append(f"  failed to stage: {reason}")
    if len(stage_failures) > 5:
        lines.append(f"  ... and {len(stage_failures) - 5} more files failed to stage")
    lines.extend(_next_step(cfg, state, staging, failed))
    return "\n".join(lines)


def _stage_line(stage: str, info: dict[str, Any] | None, staging: dict[str, Any] | None) -> str:
    if info:
        extra = ", ".join(f"{k}={v}" for k, v in info.items() if k != "finished")
        return f"  [done]    {stage:9s} {info['finished']}  {extra}"
    if stage == "stage":
        if staging is None:
            return "  [skipped] stage     (optional: copies the data into a local mirror)"
        if staging.get("failures"):
            return f"  [failed]  stage     {len(staging['failures'])} file(s) could not be staged"
        return "  [partial] stage     started, not finished (interrupted?)"
    return f"  [pending] {stage}"


def _next_step(cfg: dict[str, Any], state: dict[str, Any], staging: dict[str, Any] | None,
               failed: list[int]) -> list[str]:
    """The verdict and the command that finishes the run (reruns pick up the saved configuration)."""
    if staging is not None and "stage" not in state:
        cmd = ["spxbatch", "stage", cfg["catalog"], "-o", staging["mirror"], "--cube", cfg["output"]]
        return ["To finish staging (only what is missing is fetched):", "  " + shlex.join(cmd)]
    cmd = ["spxbatch", cfg["catalog"], "-o", cfg["output"]]
    if all(s in state for s in DEFAULT_STAGES) and not failed:
        return ["The run is complete."]
    offline = " (reads the staged mirror: no network needed)" if "stage" in state else ""
    if "stage" in state and "measure" not in state:
        cmd += ["--stages", "measure,assemble"]
    head = "To finish the run (failed images are retried)" if failed else "To finish the run"
    return [f"{head}{offline}:", "  " + shlex.join(cmd)]


def planned_images(rd: RunDir, state: dict[str, Any]) -> int | None:
    """How many images the plan holds (their ids are 0..n-1), from summaries only: the plan stage's count in
    state.json, else the row count in the footer of the saved image table; None before the plan stage. The
    plan's pairs (one row per source and image) are never read."""
    if "images" in state.get("plan", {}):
        return int(state["plan"]["images"])
    images = rd.plan_dir / "images.parquet"
    return pq.read_metadata(images).num_rows if images.exists() else None
