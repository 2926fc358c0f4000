"""`spxbatch update` against a fresh run when the archive gained its last period's exposures (issue 16).

    python benchmarks/update_speed.py [--npix 256] [--visits 12] [--dir /tmp/spx-updatebench] [--product-cache]

Builds a simulated archive, serves it on loopback listing all but the last period's files, measures the
catalog (one process), then lists everything and times the update, and a fresh run of the grown listing;
prints the seconds and the Level-2 bytes each read (from the server's access log). Both cubes are checked
equal. The persistent product cache (PSF and calibration products kept between runs) is off unless
`--product-cache`: with it, the fresh run would find the products the earlier runs read.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from spxbatch.cube.store import open_cube
from spxbatch.fetch.store import CACHE_ENV, NO_CACHE
from spxbatch.pipeline.executor import SerialExecutor
from spxbatch.pipeline.stages import run
from spxbatch.pipeline.update import update_cube
from spxbatch.plan.index import index_directory
from spxbatch.sim import make_archive
from spxbatch.sim.server import serve_archive


def level2_bytes(srv) -> int:
    """Bytes the server sent for Level-2 files since its log was cleared."""
    return sum(e["bytes"] for e in srv.access_log if "/level2/" in e["path"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--npix", type=int, default=256)
    p.add_argument("--visits", type=int, default=12)
    p.add_argument("--dir", default="/tmp/spx-updatebench")
    p.add_argument("--product-cache", action="store_true", help="keep the persistent product cache on")
    args = p.parse_args()
    if not args.product_cache:
        os.environ[CACHE_ENV] = NO_CACHE
    d = Path(args.dir)
    shutil.rmtree(d, ignore_errors=True)
    info = make_archive(d / "archive", npix=args.npix, seed=3, n_visits=args.visits)
    index = index_directory(info.root)
    last = index["obs_id"].str[:10] == index.loc[index["mjd_start"].idxmax(), "obs_id"][:10]
    with serve_archive(info.root, index=index[~last]) as srv:
        run(info.catalog, d / "cube.zarr", archive=srv.url, progress=False, executor=SerialExecutor())
        srv.set_index(index)
        srv.clear_log()
        t0 = time.perf_counter()
        result = update_cube(d / "cube.zarr", archive=srv.url, executor=SerialExecutor(), progress=False)
        update_s, update_bytes = time.perf_counter() - t0, level2_bytes(srv)
        srv.clear_log()
        t0 = time.perf_counter()
        run(info.catalog, d / "fresh.zarr", archive=srv.url, progress=False, executor=SerialExecutor())
        fresh_s, fresh_bytes = time.perf_counter() - t0, level2_bytes(srv)
    a, b = open_cube(d / "cube.zarr").load(), open_cube(d / "fresh.zarr").load()
    same = all(a[v].equals(b[v]) for v in a.variables if v not in ("date_added", "failure_url"))
    print(f"{len(index)} files, {int(last.sum())} new; images {result.kinds}")
    print(f"update: {update_s:.1f} s, {update_bytes / 1e6:.1f} MB Level-2 read")
    print(f"fresh run: {fresh_s:.1f} s, {fresh_bytes / 1e6:.1f} MB Level-2 read; cubes equal: {same}")


if __name__ == "__main__":
    main()
