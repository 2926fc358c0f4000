"""Plotting all sources of a 1,000-source run against the run itself (issue 6: plotting must be faster).

    python benchmarks/plot_speed.py [--sources 1000] [--workers 2] [--dir /tmp/spx-plotbench]

Builds a simulated archive with that many sources, measures it over HTTP on loopback (LocalCluster), then
draws the summary and every source's figure with `spxbatch plot --all`'s code path, timing both.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from spxbatch.config import ClusterConfig
from spxbatch.pipeline import run
from spxbatch.plots import plot_cube
from spxbatch.sim import make_archive
from spxbatch.sim.server import serve_archive


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
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
    t0 = time.perf_counter()
    paths = plot_cube(base / "cube.zarr", None, base / "plots", workers=args.workers)
    t_plot = time.perf_counter() - t0
    print(f"sources {ds.sizes['source']}, measurements {ds.sizes['obs']}, {args.workers} worker processes")
    print(f"run  (plan + measure + assemble): {t_run:7.1f} s")
    print(f"plot (summary + {len(paths) - 1} source figures): {t_plot:7.1f} s  "
          f"({t_plot / max(len(paths) - 1, 1) * args.workers * 1e3:.0f} ms per figure per process)")
    print(f"plot / run = {t_plot / t_run:.2f}")


if __name__ == "__main__":
    main()
