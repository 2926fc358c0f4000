"""Plotting every source of a 1,000-source run against the run itself (issue 6: plotting must take less).

    python benchmarks/plot_speed.py [--sources 1000] [--workers 2] [--repeat 3] [--dir /tmp/spx-plotbench]

Builds a simulated archive with that many sources, measures it over HTTP on loopback (LocalCluster, the
same worker count), then draws the summary and every source's figure with `spxbatch plot --all`'s code
path (`--repeat` times, median quoted: until every file is written, and until the worker processes have
exited). Baseline in the same run: one process drawing the first 100 sources
the plain matplotlib way (a new figure per source, `savefig`), against the batch path on the same sources.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import time
from pathlib import Path

import matplotlib.pyplot as plt

from spxbatch.cube.filenames import source_file_stems
from spxbatch.cube.store import open_cube
from spxbatch.figures.batch import draw_block, plot_cube
from spxbatch.figures.plots import longest_time_span, source_figure
from spxbatch.pipeline.config import ClusterConfig
from spxbatch.pipeline.stages import run
from spxbatch.sim import make_archive
from spxbatch.sim.server import serve_archive

BASELINE_SOURCES = 100


def per_figure_ms(cube: Path, outdir: Path) -> tuple[float, float]:
    """ms per figure in this process for the first BASELINE_SOURCES sources: plain matplotlib, batch path."""
    ds = open_cube(cube).load()
    names = ds["source"].values.astype(str)[:BASELINE_SOURCES]
    outdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for name in names:
        fig = source_figure(ds, name, fig=plt.figure(figsize=(10, 8)))
        fig.savefig(outdir / f"plain-{name}.png", dpi=100)
        plt.close(fig)
    plain = (time.perf_counter() - t0) / len(names) * 1e3
    t0 = time.perf_counter()
    draw_block(str(cube), 0, len(names), source_file_stems(names), str(outdir), False, longest_time_span(ds))
    batch = (time.perf_counter() - t0) / len(names) * 1e3
    return plain, batch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dir", default="/tmp/spx-plotbench")
    args = p.parse_args()
    base = Path(args.dir)
    shutil.rmtree(base, ignore_errors=True)
    info = make_archive(base / "archive", npix=512, seed=3, n_sources=args.sources)
    with serve_archive(info.root) as srv:
        t0 = time.perf_counter()
        ds = run(info.catalog, base / "cube.zarr", archive=srv.url, progress=False,
                 cluster=ClusterConfig(workers=args.workers))
        t_run = time.perf_counter() - t0
    times, exits = [], []
    for i in range(args.repeat):
        t0 = time.perf_counter()
        paths = plot_cube(base / "cube.zarr", None, base / f"plots-{i}", workers=args.workers)
        times.append(time.perf_counter() - t0)
        for child in multiprocessing.active_children():  # the pool's processes exit after the files are written
            child.join()
        exits.append(time.perf_counter() - t0)
    t_plot = statistics.median(times)
    plain, batch = per_figure_ms(base / "cube.zarr", base / "baseline")
    print(f"sources {ds.sizes['source']}, measurements {ds.sizes['obs']}, {args.workers} worker processes")
    print(f"run  (plan + measure + assemble): {t_run:7.1f} s")
    print(f"plot (summary + {len(paths) - 1} source figures): {t_plot:7.1f} s median of "
          f"{', '.join(f'{t:.1f}' for t in times)}")
    print(f"plot until its processes have exited: {statistics.median(exits):7.1f} s median")
    print(f"plot / run = {t_plot / t_run:.2f}")
    print(f"one process, first {BASELINE_SOURCES} sources: plain matplotlib {plain:.0f} ms per figure, "
          f"batch path {batch:.0f} ms per figure ({plain / batch:.1f}x)")


if __name__ == "__main__":
    main()
