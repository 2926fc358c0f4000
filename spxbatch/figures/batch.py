"""`spxbatch plot CUBE [--source NAME ...|--all] [-o DIR]`: the run summary and one PNG per source.

Sources are drawn in blocks of consecutive catalog rows by a pool of processes (spawned: the parent holds
zarr and dask threads, which forking could deadlock). Each process reads only its blocks' rows of the cube
and keeps one `SourceFigure` whose unchanging parts and texts are rasterised once (`rasterize.FrameWriter`).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import xarray as xr

from spxbatch.cube.filenames import output_folder, source_file_stems, write_name_map
from spxbatch.cube.store import open_cube
from spxbatch.errors import ConfigError
from spxbatch.figures.plots import CubePoints, SourceFigure, longest_time_span, source_rows
from spxbatch.figures.rasterize import FrameWriter
from spxbatch.figures.summary import summary_figure

#: Sources per task, at least and at most: about four tasks per process balance the processes, and at least
#: 25 keep opening the cube (0.1 s a task) small.
BLOCK_SOURCES = (25, 250)


_writers: dict[tuple[bool, float], tuple[SourceFigure, FrameWriter]] = {}


def _writer(magnitude: bool, time_span: float) -> tuple[SourceFigure, FrameWriter]:
    """This process's figure and frame writer (built on first use, then reused for every source)."""
    key = (magnitude, time_span)
    if key not in _writers:
        figure = SourceFigure(magnitude=magnitude, time_span=time_span)
        _writers[key] = (figure, FrameWriter(figure.fig, figure.dynamic_artists, figure.frame_keys))
    return _writers[key]


def draw_block(cube: str, first: int, stop: int, files: dict[str, str], outdir: str,
               magnitude: bool, time_span: float) -> int:
    """Worker: one PNG per source among rows first..stop-1 that `files` names (source -> file stem);
    colours of time run over `time_span` days, the run's longest."""
    points = CubePoints(source_rows(open_cube(cube, dask=False), first, stop, CubePoints.VARIABLES))
    figure, writer = _writer(magnitude, time_span)
    n = 0
    for i, name in enumerate(points.names):
        if name in files:
            figure.show(points.points(i))
            writer.save(Path(outdir) / f"{files[name]}.png")
            n += 1
    return n


def plot_cube(cube: str | Path, names: Sequence[str] | None, outdir: str | Path, magnitude: bool = False,
              workers: int | None = None) -> list[Path]:
    """Write the summary figure and one figure per named source (all when None), in parallel processes.

    Returns the paths written: the summary first, then the sources in the order asked."""
    outdir = Path(outdir)
    ds = open_cube(cube)
    all_names = ds["source"].values.astype(str)
    wanted = list(all_names) if names is None else list(names)
    missing = sorted(set(wanted) - set(all_names))
    if missing:
        raise ConfigError(f"no source named {missing[0]!r} in {cube}; the names are the catalog's")
    output_folder(outdir, "figures")
    rows = np.flatnonzero(np.isin(all_names, wanted)) if names is not None else np.arange(all_names.size)
    workers = workers or os.cpu_count() or 1
    size = int(np.clip(-(-rows.size // (4 * workers)), *BLOCK_SOURCES))
    blocks = row_blocks(rows, size)  # wanted rows, in catalog order
    workers = min(workers, len(blocks))
    written = [outdir / "summary.png"]
    span = longest_time_span(ds)
    stems = source_file_stems(all_names)  # over every name of the cube: a source's file never depends on others
    args = [(str(cube), int(b[0]), int(b[-1]) + 1, {n: stems[n] for n in all_names[b]}, str(outdir),
             magnitude, span) for b in blocks]
    if workers <= 1:
        for a in args:
            draw_block(*a)
        _save_summary(ds, written[0])
    else:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        try:
            futures = [pool.submit(draw_block, *a) for a in args]
            _save_summary(ds, written[0])  # while the workers start
            for fut in futures:
                fut.result()
        finally:  # every file is written: the processes' exit (a second or two) need not hold the caller
            pool.shutdown(wait=False, cancel_futures=True)
    figures = [outdir / f"{stems[n]}.png" for n in wanted]
    write_name_map(outdir, zip(wanted, figures, strict=True))
    return written + figures


def row_blocks(rows: np.ndarray, size: int) -> list[np.ndarray]:
    """Sorted catalog rows cut into blocks of at most `size` rows spanning at most `size` x 4 catalog rows each
    (a block reads its span of the cube: a selection of a few sources far apart reads only theirs)."""
    blocks: list[np.ndarray] = []
    first = 0
    while first < rows.size:
        stop = min(first + size, int(np.searchsorted(rows, rows[first] + 4 * size)))
        blocks.append(rows[first:stop])
        first = stop
    return blocks


def _save_summary(ds: xr.Dataset, path: Path) -> None:
    """The run summary figure as a PNG (its counts read block by block)."""
    FrameWriter(summary_figure(ds), []).save(path)

