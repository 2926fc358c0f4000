"""`spxbatch status RUN_DIR`: which stages are done, what failed, and the command that finishes the run."""

from __future__ import annotations

import shlex
from pathlib import Path

from .rundir import STAGES, RunDir


def run_status(run_dir: str | Path) -> str:
    """A plain-text account of a run directory."""
    rd = RunDir(run_dir)
    cfg = rd.read_config()
    if cfg is None:
        return f"{run_dir}: not a spxbatch run directory (no config.json)"
    state = rd.read_state()["stages"]
    lines = [f"Run directory: {rd.path}", f"Catalog: {cfg['catalog']}", f"Archive: {cfg['archive']}",
             f"Output: {cfg['output']}"]
    for stage in STAGES:
        info = state.get(stage)
        if info:
            extra = ", ".join(f"{k}={v}" for k, v in info.items() if k != "finished")
            lines.append(f"  [done]    {stage:9s} {info['finished']}  {extra}")
        else:
            lines.append(f"  [pending] {stage}")
    images = planned_images(rd)
    if images is not None:
        finished = rd.finished_images(retry_failed=False)
        failed = sorted(i for i in finished if (rd.part_meta(i) or {}).get("error"))
        lines.append(f"Images: {len(images)} planned, {len(finished) - len(failed)} measured, "
                     f"{len(failed)} failed, {len(images - finished)} not yet done")
        for i in failed[:5]:
            lines.append(f"  failed image {i}: {rd.part_meta(i)['error']}")
        if len(failed) > 5:
            lines.append(f"  ... and {len(failed) - 5} more failed images")
    if all(s in state for s in STAGES) and not (images is not None and failed):
        lines.append("The run is complete.")
    else:
        cmd = ["spxbatch", cfg["catalog"], "-o", cfg["output"]]
        lines.append("To finish the run (failed images are retried):")
        lines.append("  " + shlex.join(cmd))
    return "\n".join(lines)


def planned_images(rd: RunDir) -> set[int] | None:
    """Image ids in the saved plan, or None before the plan stage."""
    import pandas as pd

    pairs = rd.plan_dir / "pairs.parquet"
    if not pairs.exists():
        return None
    return set(pd.read_parquet(pairs, columns=["image_id"])["image_id"].astype(int).unique().tolist())
