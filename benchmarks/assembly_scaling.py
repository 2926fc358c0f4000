"""Assembly scaling: synthetic parts (PART_SCHEMA, random values) of 10^5..10^7 rows over 10^4..10^6 sources,
assembled into the cube by the shuffle on a LocalCluster of two workers, against the old in-memory path
(`build_dataset` + `write_cube`, all parts in one DataFrame) at the sizes it can do. Prints wall time, the
client's peak RSS, each worker's peak RSS, the cube's size on disk, and the time to open the cube and read
one source's rows (open_cube with dask, and without). Each case runs in its own process, so each peak is its own.

    python benchmarks/assembly_scaling.py [--cases 1e5:1e4,1e6:1e5] [--old-max 1e6] [--workers 2]
        [--rows-per-part 2000] [--dir /tmp/spx-asm-bench]

A case is ROWS:SOURCES. The parts of each case are generated once into --dir and reused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from spxbatch.cube.store import open_cube, write_cube
from spxbatch.level2.constants import BANDS
from spxbatch.pipeline.config import RunConfig
from spxbatch.pipeline.rundir import RunDir
from spxbatch.plan.catalog import Catalog
from spxbatch.plan.plan import Plan, saved_is_current


def make_parts(rundir: RunDir, rows: int, sources: int, rows_per_part: int, seed: int = 0) -> None:
    """Write synthetic parts (one per image, each a random sorted subset of sources, ~90 % measured, a few
    failed images) and the plan tables the assembly reads (images with URLs, pairs)."""
    rng = np.random.default_rng(seed)
    rundir.create()
    n_parts = max(1, rows // rows_per_part)
    pairs = []
    for i in range(n_parts):
        src = np.sort(rng.choice(sources, size=min(rows_per_part, sources), replace=False)).astype(np.int64)
        n = len(src)
        band = int(rng.integers(1, 7))
        lo, hi = BANDS[band].lo_um, BANDS[band].hi_um
        failed = rng.uniform() < 0.02
        measured = np.zeros(n, bool) if failed else rng.uniform(size=n) < 0.9
        flux = rng.normal(100, 10, n)
        err = rng.uniform(1, 5, n)
        table = pd.DataFrame({
            "source_index": src, "flux": np.where(measured, flux, np.nan), "flux_err": np.where(measured, err, np.nan),
            "flux_aperture": flux, "aperture_correction": np.full(n, 1.1), "wavelength": rng.uniform(lo, hi, n),
            "bandwidth": np.full(n, 0.01), "mjd": np.full(n, 60000 + i * 0.01), "band": np.full(n, band, np.int8),
            "obs_id": f"2025W18_2B_{i:06d}_{band}", "flags": np.zeros(n, np.int32), "measured": measured,
            "good": measured & (rng.uniform(size=n) < 0.9), "detected": measured, "snr": flux / err,
            "x": rng.uniform(0, 2040, n), "y": rng.uniform(0, 2040, n), "aperture_radius": np.full(n, 2.0),
            "status": np.where(measured, "ok", "failed: HTTP 503" if failed else "off_image"),
            "image_id": np.int64(i), "release": "qr2", "processing": "l2b-v21-2025-100",
            "pipeline_version": "6.5.4", "psf_model": "file", "calibration": "",
        })
        rundir.write_part(i, table, {"image_id": i, "error": "failed: HTTP 503" if failed else ""})
        pairs.append(pd.DataFrame({"source_index": src, "image_id": np.int64(i)}))
    images = pd.DataFrame({"image_id": np.arange(n_parts),
                           "url": [f"http://archive/img_{i}.fits" for i in range(n_parts)]})
    Plan(images, pd.concat(pairs, ignore_index=True)).save(rundir.path)


class WorkerPeaks:
    """Samples the RSS of each child process of this one (the Dask workers) every 0.2 s; keeps each peak."""

    def __init__(self) -> None:
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            for p in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    self.peaks[p.pid] = max(self.peaks.get(p.pid, 0), p.memory_info().rss)
            time.sleep(0.2)

    def __enter__(self) -> WorkerPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _names(sources: int) -> np.ndarray:
    return np.array([f"src{i:07d}" for i in range(sources)], dtype=object)


def case(kind: str, run_dir: Path, out: Path, sources: int, workers: int) -> dict:
    """One assembly in this process: 'new' (the shuffle on a LocalCluster) or 'old' (in memory)."""
    from spxbatch.pipeline.stages import build_dataset, cube_attrs

    rundir = RunDir(run_dir)
    names = _names(sources)
    ra = np.linspace(0, 1, sources)
    dec = np.zeros(sources)
    cat = Catalog(names, ra, dec)
    config = RunConfig(catalog="synthetic.csv", output=str(out))
    peaks: dict[int, int] = {}
    if kind == "old":
        t0 = time.perf_counter()
        plan = Plan.load(rundir.path)
        ds = build_dataset(cat, plan, rundir.read_parts(), config,
                           config.photometry_config)
        write_cube(ds, out)
        wall = time.perf_counter() - t0
    else:
        from distributed import Client, LocalCluster

        from spxbatch.pipeline.assembly.driver import assemble_run
        from spxbatch.pipeline.executor import DaskExecutor

        urls = pd.read_parquet(rundir.plan_dir / "images.parquet").set_index("image_id")["url"]
        with WorkerPeaks() as wp, LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                               host="127.0.0.1", dashboard_address=":0", memory_limit=0) as cl, \
                Client(cl) as client:
            t0 = time.perf_counter()  # the cluster's start is not the assembly's
            assemble_run(rundir, out, names, ra, dec, urls, cube_attrs(config, config.photometry_config, cat),
                         DaskExecutor(client))
            wall = time.perf_counter() - t0
        peaks = wp.peaks
    client_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    read_s = {}
    for dask in (True, False):  # spxbatch.open_cube as users call it, and without dask (figures)
        t1 = time.perf_counter()
        cube = open_cube(out, dask=dask)
        rows = len(cube.spx.dataframe(names[sources // 2]))
        read_s[dask] = time.perf_counter() - t1
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    worker_gb = sorted((v / 1e9 for v in peaks.values()), reverse=True)[:workers]
    return {"path": kind, "wall_s": round(wall, 1), "client_peak_GB": round(client_peak / 1e9, 2),
            "worker_peak_GB": ",".join(f"{g:.2f}" for g in worker_gb) or "-", "cube_MB": round(size / 1e6, 1),
            "obs": int(cube.sizes["obs"]), "open+one_source_s": round(read_s[True], 3),
            "same_no_dask_s": round(read_s[False], 3), "one_source_rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="1e5:1e4,1e6:1e5")
    p.add_argument("--old-max", type=float, default=1e6, help="largest row count the in-memory path is run at")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rows-per-part", type=int, default=2000)
    p.add_argument("--dir", default="/tmp/spx-asm-bench")
    p.add_argument("--case", nargs=5, metavar=("KIND", "RUN_DIR", "OUT", "SOURCES", "WORKERS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        kind, run_dir, out, sources, workers = args.case
        print(json.dumps(case(kind, Path(run_dir), Path(out), int(sources), int(workers))))
        return
    base = Path(args.dir)
    results = []
    for spec in args.cases.split(","):
        rows, sources = (int(float(v)) for v in spec.split(":"))
        run_dir = base / f"r{rows}_s{sources}.run"
        if not saved_is_current(run_dir):
            t0 = time.perf_counter()
            make_parts(RunDir(run_dir), rows, sources, args.rows_per_part)
            du = sum(f.stat().st_size for f in (run_dir / "parts").iterdir()) / 1e6
            print(f"parts of {rows:,} rows, {sources:,} sources: {time.perf_counter() - t0:.0f} s, {du:.0f} MB",
                  flush=True)
        for kind in ("new", "old") if rows <= args.old_max else ("new",):
            out = base / f"r{rows}_s{sources}_{kind}.zarr"
            done = subprocess.run([sys.executable, __file__, "--case", kind, str(run_dir), str(out), str(sources),
                                   str(args.workers)], capture_output=True, text=True, check=True)
            results.append({"rows": rows, "sources": sources, **json.loads(done.stdout.strip().splitlines()[-1])})
            print(results[-1], flush=True)
    pd.set_option("display.width", 200)
    print(pd.DataFrame(results).to_string(index=False))


if __name__ == "__main__":
    main()
