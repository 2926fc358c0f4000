"""Whole-pipeline scaling: 100, 1,000 and 10,000 catalog sources on a simulated 2040x2040 field served with
added latency and a bandwidth cap. Reports wall time, measurements per second, bytes read per measurement
and peak memory (client + workers), for the cost model's choice ('auto') against the whole-file baseline
('whole') in the same run, each with tasks fetching their images one after another (in flight 1) and
several at once (`images_in_flight`). The persistent product cache is off: every run is cold.

    python benchmarks/pipeline_scaling.py [--sizes 100,1000,10000] [--visits 3] [--latency 0.02]
        [--bandwidth 50e6] [--workers 2] [--executor dask|serial] [--dir /tmp/spx-bench] [--in-flight 1,4]
        [--fetches auto,whole]

`--executor serial` measures in this process, one task at a time (no cluster to start): the baseline the
Dask executor's parallelism is judged against.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from spxbatch.pipeline.config import ClusterConfig, RunConfig
from spxbatch.pipeline.executor import SerialExecutor
from spxbatch.pipeline.stages import Pipeline
from spxbatch.sim import make_archive
from spxbatch.sim.server import serve_archive


class PeakMemory:
    """Samples the summed RSS of this process and its children (the Dask workers) every 0.1 s, and the CPU
    seconds they used (each process's last reading counts, so workers that exited before the end still
    count, up to their last 0.1 s). `exclude`: pids left out, with their children (e.g. a server run as a
    child process)."""

    def __init__(self, exclude: tuple[int, ...] = ()) -> None:
        self.peak = 0
        self._exclude = set(exclude)
        self._cpu: dict[tuple[int, float], float] = {}
        self._cpu0 = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def cpu_s(self) -> float:
        """CPU seconds (user + system) the sampled processes used since the sampling started."""
        return sum(self._cpu.values()) - self._cpu0

    def _tree(self) -> list[psutil.Process]:
        me = psutil.Process()
        skip = set(self._exclude)
        for pid in self._exclude:
            with contextlib.suppress(psutil.Error):
                skip |= {c.pid for c in psutil.Process(pid).children(recursive=True)}
        return [me, *(c for c in me.children(recursive=True) if c.pid not in skip)]

    def _sample(self) -> None:
        total = 0
        for p in self._tree():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
                t = p.cpu_times()
                self._cpu[(p.pid, p.create_time())] = t.user + t.system
        self.peak = max(self.peak, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(0.1)

    def __enter__(self) -> PeakMemory:
        me = psutil.Process()
        t = me.cpu_times()
        self._cpu0 = t.user + t.system
        self._cpu[(me.pid, me.create_time())] = self._cpu0
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def catalog_of(n: int, truth_catalog: Path, ra0: float, dec0: float, radius_deg: float, seed: int,
               path: Path) -> Path:
    """The rendered sources first, then random positions in the field to reach `n` rows."""
    base = pd.read_csv(truth_catalog).head(n)
    rng = np.random.default_rng(seed)
    extra = n - len(base)
    r = radius_deg * np.sqrt(rng.uniform(0, 1, extra))
    theta = rng.uniform(0, 2 * np.pi, extra)
    dec = dec0 + r * np.sin(theta)
    ra = (ra0 + r * np.cos(theta) / np.cos(np.radians(dec))) % 360
    more = pd.DataFrame({"name": [f"rand{i:06d}" for i in range(extra)], "ra": ra, "dec": dec})
    pd.concat([base[["name", "ra", "dec"]], more]).to_csv(path, index=False)
    return path


def run_once(catalog: Path, out: Path, url: str, fetch: str, workers: int, executor: str,
             in_flight: int = 4) -> dict:
    cfg = RunConfig(catalog=str(catalog), output=str(out), archive=url, fetch=fetch, progress=False,
                    cluster=ClusterConfig(workers=workers),
                    fetch_options={"images_in_flight": in_flight, "cache_dir": "none"})
    pipe = Pipeline(cfg)
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        ds = pipe.run(executor=SerialExecutor(cfg.task_retries) if executor == "serial" else None)
        wall = time.perf_counter() - t0
    totals = pipe.rundir.read_state()["stages"]["measure"]
    n = int(ds.sizes["obs"])
    return {"executor": executor, "fetch": fetch, "in_flight": in_flight, "sources": int(ds.sizes["source"]),
            "measurements": n, "wall_s": wall,
            "meas_per_s": n / wall, "bytes_per_meas": totals["bytes"] / max(n, 1),
            "requests": totals["requests"], "MB_read": totals["bytes"] / 1e6, "peak_mem_GB": mem.peak / 1e9}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100,1000,10000")
    p.add_argument("--visits", type=int, default=3)
    p.add_argument("--latency", type=float, default=0.02)
    p.add_argument("--bandwidth", type=float, default=50e6)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--executor", choices=["dask", "serial"], default="dask")
    p.add_argument("--dir", default="/tmp/spx-bench")
    p.add_argument("--in-flight", default="1,4", help="images each task fetches at once (1: one after another)")
    p.add_argument("--fetches", default="auto,whole")
    args = p.parse_args()
    base = Path(args.dir)
    archive = base / "archive"
    t0 = time.perf_counter()
    info = make_archive(archive, npix=2040, seed=11, n_visits=args.visits)
    print(f"archive: {len(info.files)} files of 2040x2040 in {time.perf_counter() - t0:.0f} s")
    rows = []
    with serve_archive(archive, latency=args.latency, bandwidth=args.bandwidth) as srv:
        for n in (int(s) for s in args.sizes.split(",")):
            cat = catalog_of(n, info.catalog, info.ra, info.dec, 1.2, n, base / f"cat{n}.csv")
            for fetch in args.fetches.split(","):
                for in_flight in (int(k) for k in args.in_flight.split(",")):
                    out = base / f"cube_{n}_{fetch}_{in_flight}.zarr"
                    for old in (out, out.with_suffix(".run")):
                        shutil.rmtree(old, ignore_errors=True)
                    rows.append(run_once(cat, out, srv.url, fetch, args.workers, args.executor, in_flight))
                    print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    workers = f"{args.workers} worker processes" if args.executor == "dask" else "serial, in this process"
    print(f"\nlatency {args.latency} s/request, bandwidth cap {args.bandwidth / 1e6:.0f} MB/s, {workers}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:,.3g}"))


if __name__ == "__main__":
    main()
