"""A million sources end to end: `spxbatch CATALOG --archive MIRROR` (one command, a LocalCluster of two
workers, the default configuration) on a simulated sky of many 2040x2040 fields read from a local mirror,
for catalogs of 10^4, 10^5 and 10^6 sources on the same sky. Prints, per catalog: wall time per stage,
peak RSS of the client (the spxbatch process) and of each worker, the cores busy per stage (CPU seconds
of the client and workers over the stage's wall time), measurements, measurements/s and the cube's size;
then, in a new process, the time to open the cube and read one source's measurements.

    python benchmarks/million_sources.py [--sizes 1e4,1e5,1e6] [--fields 32] [--visits 4]
        [--per-field-radius 1.39] [--dir /tmp/spx-million] [--workers 2] [--jobs 2] [--read-only] [--out DIR]

The sky (fields in a row along the equator, 4 deg apart, each `make_archive(npix=2040, n_visits=--visits)`
with its own seed and observation IDs, QR2 files, no artifacts, one calibration tree) is generated once into --dir/sky,
`--jobs` fields at a time, and reused while its parameters match (--dir/sky/sky.json). A catalog of N
sources spreads them uniformly over the fields' discs (radius --per-field-radius deg, the simulated
field's): the measured density grows with N, ~N/fields/2x10^6 sources per pixel in a field's disc.
Results are appended to --dir/results.jsonl as each catalog finishes; the table and a plot of the curves
(peak RSS of client and workers, wall time per stage, against catalog size) go to --out
(million_sources.md, million_sources.png).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

NPIX = 2040
FIELD_STEP_DEG = 4.0
#: Large-slew numbers of field i start at i x this (make_archive's slew_offset): no two fields share a file.
SLEW_OFFSET_STEP = 200


def _field_centre(i: int) -> tuple[float, float]:
    return (150.0 + FIELD_STEP_DEG * i) % 360, 2.0


def _make_field(root: str, i: int, visits: int) -> tuple[list[str], int]:
    from spxbatch.sim import make_archive

    ra, dec = _field_centre(i)
    info = make_archive(root, npix=NPIX, seed=1000 + i, field=f"f{i:03d}", ra=ra, dec=dec, n_visits=visits,
                        artifacts=False, calibration=i == 0, slew_offset=SLEW_OFFSET_STEP * i)
    return info.files, info.bytes_written


def make_sky(root: Path, fields: int, visits: int, jobs: int) -> dict:
    """Generate the sky once (or reuse it); its description, with generation time and disk use."""
    spec = {"fields": fields, "visits": visits, "npix": NPIX}
    manifest = root / "sky.json"
    if manifest.exists():
        saved = json.loads(manifest.read_text())
        if {k: saved.get(k) for k in spec} == spec:
            return saved
        raise SystemExit(f"{root} holds another sky ({saved}); choose another --dir")
    if root.exists():
        raise SystemExit(f"{root} exists without a sky.json; remove it or choose another --dir")
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(jobs) as pool:
        done = list(pool.map(_make_field, [str(root)] * fields, range(fields), [visits] * fields))
    files = [f for fs, _ in done for f in fs]
    if len(set(files)) != len(files):
        raise SystemExit("two fields wrote the same file: the sky is not what the benchmark assumes")
    disk = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    saved = {**spec, "files": len(files), "generation_s": round(time.perf_counter() - t0, 1),
             "disk_GB": round(disk / 1e9, 2), "jobs": jobs}
    manifest.write_text(json.dumps(saved, indent=1))
    return saved


def make_catalog(n: int, fields: int, radius_deg: float, path: Path) -> Path:
    """N sources uniform over the fields' discs, named s0000000.. (fixed seed per N)."""
    if path.exists():
        return path
    rng = np.random.default_rng(n)
    field = rng.integers(0, fields, n)
    ra0 = np.array([_field_centre(i)[0] for i in range(fields)])[field]
    dec0 = np.array([_field_centre(i)[1] for i in range(fields)])[field]
    r = radius_deg * np.sqrt(rng.uniform(0, 1, n))
    theta = rng.uniform(0, 2 * np.pi, n)
    dec = dec0 + r * np.sin(theta)
    ra = (ra0 + r * np.cos(theta) / np.cos(np.radians(dec))) % 360
    pd.DataFrame({"name": [f"s{i:07d}" for i in range(n)], "ra": ra, "dec": dec}).to_csv(path, index=False)
    return path


class ProcessSampler:
    """Every 0.5 s: RSS and CPU seconds of a process and of each of its descendants, keyed by pid; the
    processes whose parent is not `root` are the workers (forked by the fork server or spawned by a nanny)."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.peak: dict[int, int] = {}
        self.kind: dict[int, str] = {}
        self.cpu: list[tuple[float, float]] = []  # (time, summed CPU seconds of every process seen)
        self._last_cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        with contextlib.suppress(psutil.Error):
            top = psutil.Process(self.root)
            procs = [top, *top.children(recursive=True)]
        for p in procs:
            with contextlib.suppress(psutil.Error):
                rss, t = p.memory_info().rss, p.cpu_times()
                self.peak[p.pid] = max(self.peak.get(p.pid, 0), rss)
                self._last_cpu[p.pid] = t.user + t.system
                if p.pid not in self.kind:
                    self.kind[p.pid] = ("client" if p.pid == self.root else
                                        "helper" if p.ppid() == self.root else "worker")
        self.cpu.append((time.time(), sum(self._last_cpu.values())))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(0.5)

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def cores_between(self, t0: float, t1: float) -> float:
        """Mean cores busy (CPU seconds per wall second) between two times."""
        inside = [(t, c) for t, c in self.cpu if t0 <= t <= t1]
        if len(inside) < 2:
            return float("nan")
        return (inside[-1][1] - inside[0][1]) / max(inside[-1][0] - inside[0][0], 1e-9)


def _stage_times(state: dict, start: float) -> dict[str, tuple[float, float]]:
    """(start, end) epoch seconds of each stage, from the run's state (stages follow one another)."""
    out, t = {}, start
    for stage in ("plan", "measure", "assemble"):
        if stage in state["stages"]:
            end = datetime.fromisoformat(state["stages"][stage]["finished"]).timestamp()
            out[stage] = (t, end)
            t = end
    return out


def read_one(cube: Path, name: str) -> dict:
    """In a new process, three times (medians): import spxbatch's cube reader (numpy, pandas, xarray, zarr,
    dask.array, which open_zarr imports), then open the cube as users do and read one source's measurements
    (the figure "open + one source")."""
    code = ("import time, json; t0=time.perf_counter(); import spxbatch, spxbatch.cube.store, dask.array;"
            "t1=time.perf_counter();"
            f"ds=spxbatch.open_cube({str(cube)!r}); t2=time.perf_counter(); df=ds.spx.dataframe({name!r});"
            "t3=time.perf_counter(); print(json.dumps({'import_s':t1-t0,'open_s':t2-t1,'one_source_s':t3-t2,"
            "'rows':len(df)}))")
    runs = [json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      check=True).stdout.strip().splitlines()[-1]) for _ in range(3)]
    med = {k: float(np.median([r[k] for r in runs])) for k in ("import_s", "open_s", "one_source_s")}
    return {**{k: round(v, 3) for k, v in med.items()},
            "open+one_s": round(float(np.median([r["open_s"] + r["one_source_s"] for r in runs])), 3),
            "rows": runs[0]["rows"]}


def run_catalog(n: int, sky: Path, base: Path, fields: int, radius: float, workers: int) -> dict:
    cat = make_catalog(n, fields, radius, base / f"cat_{n}.csv")
    out = base / f"cube_{n}.zarr"
    for old in (out, base / f"cube_{n}.run"):
        shutil.rmtree(old, ignore_errors=True)
    cmd = [str(Path(sys.executable).with_name("spxbatch")), str(cat), "-o", str(out), "--archive", str(sky),
           "--workers", str(workers), "--no-progress"]
    t0 = time.time()
    with open(base / f"cube_{n}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        with ProcessSampler(proc.pid) as sampler:
            rc = proc.wait()
    wall = time.time() - t0
    if rc:
        raise SystemExit(f"spxbatch exited {rc} on {n} sources; see {base / f'cube_{n}.log'}")
    state = json.loads((base / f"cube_{n}.run" / "state.json").read_text())
    stages = _stage_times(state, t0)
    workers_gb = sorted((v / 1e9 for p, v in sampler.peak.items() if sampler.kind[p] == "worker"), reverse=True)
    helpers_gb = [v / 1e9 for p, v in sampler.peak.items() if sampler.kind[p] == "helper"]
    meas = state["stages"]["measure"]["measured"]
    row = {"sources": n, "measurements": meas, "images": state["stages"]["measure"]["images"], "wall_s": round(wall),
           **{f"{s}_s": round(b - a) for s, (a, b) in stages.items()},
           **{f"{s}_cores": round(sampler.cores_between(a, b), 2) for s, (a, b) in stages.items()},
           "meas_per_s": round(meas / wall), "client_peak_GB": round(sampler.peak[proc.pid] / 1e9, 2),
           "worker_peak_GB": ",".join(f"{g:.2f}" for g in workers_gb[:8]),
           "other_children_GB": ",".join(f"{g:.2f}" for g in helpers_gb),
           "cube_GB": round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e9, 3)}
    return {**row, **read_one(out, f"s{n // 2:07d}")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1e4,1e5,1e6")
    p.add_argument("--fields", type=int, default=32)
    p.add_argument("--visits", type=int, default=4)
    p.add_argument("--per-field-radius", type=float, default=1.39)
    p.add_argument("--dir", default="/tmp/spx-million")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--jobs", type=int, default=2, help="fields generated at once")
    p.add_argument("--read-only", action="store_true", help="only time opening the cubes already made")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args()
    base = Path(args.dir)
    base.mkdir(parents=True, exist_ok=True)
    sky = make_sky(base / "sky", args.fields, args.visits, args.jobs)
    print(f"sky: {sky}", flush=True)
    rows = []
    for n in (int(float(s)) for s in args.sizes.split(",")):
        if args.read_only:
            rows.append({"sources": n, **read_one(base / f"cube_{n}.zarr", f"s{n // 2:07d}")})
            print(rows[-1], flush=True)
            continue
        rows.append(run_catalog(n, base / "sky", base, args.fields, args.per_field_radius, args.workers))
        print(rows[-1], flush=True)
        with open(base / "results.jsonl", "a") as f:
            f.write(json.dumps({"when": datetime.now().isoformat(timespec="seconds"), **rows[-1]}) + "\n")
    pd.set_option("display.width", 250)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    if not args.read_only:
        write_results(Path(args.out), table, sky)


def write_results(out: Path, table: pd.DataFrame, sky: dict) -> None:
    """The table as Markdown and the memory and time curves against catalog size as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    head = (f"# million_sources: {sky['fields']} fields of {sky['npix']} px, {sky['files']} files "
            f"({sky['disk_GB']} GB, generated in {sky['generation_s']} s), LocalCluster of 2 workers, local mirror")
    cols = list(table.columns)
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in table.itertuples(index=False)]
    (out / "million_sources.md").write_text("\n".join(lines) + "\n")
    fig, (mem, wall) = plt.subplots(1, 2, figsize=(10, 4))
    n = table["sources"]
    mem.plot(n, table["client_peak_GB"], "o-", label="client")
    mem.plot(n, [max(float(v) for v in str(w).split(",")) for w in table["worker_peak_GB"]], "s-",
             label="largest worker")
    mem.axhline(2, ls=":", c="C0")
    mem.axhline(3, ls=":", c="C1")
    mem.set(xscale="log", xlabel="catalog sources", ylabel="peak RSS (GB)", ylim=(0, 3.5))
    mem.legend()
    for stage in ("plan", "measure", "assemble"):
        wall.plot(n, table[f"{stage}_s"], "o-", label=stage)
    wall.set(xscale="log", yscale="log", xlabel="catalog sources", ylabel="wall time (s)")
    wall.legend()
    fig.tight_layout()
    fig.savefig(out / "million_sources.png", dpi=100)


if __name__ == "__main__":
    main()
