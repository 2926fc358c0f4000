"""The end of an update, safe to kill at any point and to run again: the new cube (complete beside the old
one, `CUBE.new`) is swapped in by two renames (old -> `CUBE.old`, new -> CUBE) and the old one removed only
after; then the update's run directory takes the place of the cube's run directory. Every step looks at what
is on disk, so a rerun after a kill between any two steps does the remaining ones.

Until the first rename the old cube is untouched; between the two renames (a few microseconds) the old cube
is at `CUBE.old`, whole, and the rerun finishes the swap."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from spxbatch.cube.store import is_spxbatch_cube


@dataclass(frozen=True)
class UpdatePaths:
    """Where an update of `cube` works: all beside the cube, all removed when it ends."""

    cube: Path
    new: Path
    backup: Path
    work: Path
    record: Path

    @classmethod
    def of(cls, cube: str | Path) -> UpdatePaths:
        cube = Path(cube).absolute()
        beside = cube.with_name
        return cls(cube, beside(cube.name + ".new"), beside(cube.name + ".old"), beside(cube.name + ".update-run"),
                   beside(cube.name + ".update.json"))


def swap_in(paths: UpdatePaths) -> None:
    """Put the complete new cube in the old one's place (see the module doc); idempotent."""
    if paths.new.exists():
        if paths.cube.exists():
            if paths.backup.exists() and is_spxbatch_cube(paths.backup):  # a backup an earlier kill left
                shutil.rmtree(paths.backup)
            os.replace(paths.cube, paths.backup)
        os.replace(paths.new, paths.cube)
    if paths.backup.exists() and is_spxbatch_cube(paths.backup):
        shutil.rmtree(paths.backup)


def hand_over_run_dir(paths: UpdatePaths, run_dir: Path | None, keep: bool) -> None:
    """After the swap: the cube's old run directory `run_dir` (None: there is none of this cube's), whose parts
    belong to the old cube, is removed, and with `keep` the update's run directory takes its place (its plan
    and parts describe the new cube, so a rerun of the original command reassembles the new cube, never the
    old one); without `keep` (the update looked at a time window only, so its plan is not the whole run's) the
    update's run directory is removed too. Idempotent."""
    if not paths.work.exists():
        return
    if run_dir is not None and run_dir.exists():
        shutil.rmtree(run_dir)
    if keep and run_dir is not None:
        os.replace(paths.work, run_dir)
    else:
        shutil.rmtree(paths.work)
