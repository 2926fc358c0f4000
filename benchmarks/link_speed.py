"""At the speed of the link (issue #17's benchmark): a catalog in one simulated field, and one deep-field
source with hundreds of visits, measured against the simulated archive served with 50 ms latency per request
and a 20 MB/s cap shared by all connections, by spxbatch in three modes, next to the lower bound T*.

    python benchmarks/link_speed.py [--sizes 100,1000,10000] [--modes auto,single,whole] [--sample 10]
        [--deep-visits 200] [--deep-npix 512] [--dir /tmp/linkbench] [--out benchmarks/results]

Modes: 'auto' is spxbatch as it chooses (`--fetch auto`; a Dask cluster of one worker a core, or of `--workers`
when given, and none at all for a tiny plan, which spxbatch measures in its own process); 'whole' forces
whole frames (`--fetch whole`); 'single' emulates a single-source tool: one spxbatch run per source (a one-row
catalog, so one TAP query per source), each image read as one archive cutout (`--fetch cutout`), serially in
this process (no cluster). Single-source runs cost the same per source whatever the catalog's size, so above
`--sample` sources a fixed random sample is run and its wall time, bytes and requests are scaled to the
catalog (the output says so). The persistent product cache is off (cache_dir "none"): every run is cold.

The field is make_archive(npix=2040, seed=11, n_visits=3) with pipeline_scaling's catalogs. The deep source is
the centre source of make_archive(field='nep', deep=True, n_visits=--deep-visits, npix=--deep-npix): the deep
cadence (orbit-spaced revisits) with smaller frames than the real 2040 px ones (hundreds of 2040 px frames
would take hours to render and tens of GB); its minimum bytes do not depend on the frame size, its whole-frame
bytes do (a real frame is (2040/npix)^2 larger).

Per row: wall time, measurements/s, bytes and requests as the server logged them (TAP included), bytes per
measurement against the minimum (`bounds.bound_bytes`: the pixels of the apertures and background annuli in
the four planes plus one PSF plane per zone used, per image, from the measurements' own positions), peak memory
and CPU seconds of this process and its children (the server runs as a separate process, excluded), and
T* = minimum bytes / bandwidth + one round trip per dependent step (TAP query, headers, pixels) + photometry
CPU / cores, with wall / T*. The photometry CPU is measured here: `measure_region` on a synthetic 2040 px
image, a per-image set-up plus a per-measurement cost. SPXQuery 0.4.1 is reported as a row when it can run
unmodified against the server, else with the reason. Results: link_speed.json, link_speed.md, link_speed.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import xarray as xr
from bounds import bound_bytes, psf_zone_bytes
from pipeline_scaling import PeakMemory, catalog_of

from spxbatch.level2.wcs import celestial_wcs
from spxbatch.photometry import PhotometryConfig, measure_region
from spxbatch.pipeline.config import ClusterConfig, RunConfig
from spxbatch.pipeline.executor import SerialExecutor
from spxbatch.pipeline.stages import Pipeline
from spxbatch.sim import make_archive
from spxbatch.sim.make import field_centre
from spxbatch.sim.regions import make_region

matplotlib.use("Agg")
import matplotlib.pyplot as plt

#: Dependent round trips a measurement cannot avoid: the TAP query, the headers, then the pixels and PSF.
DEPENDENT_STEPS = 3
#: Why SPXQuery 0.4.1 cannot be pointed at another archive without changing its code (checked on the
#: installed package by `spxquery_row`).
SPXQUERY_REASON = (
    "SPXQuery 0.4.1 cannot be pointed at another archive without changing its code: its TAP endpoint is the "
    "module constant spxquery.core.query.TAP_URL = 'https://irsa.ipac.caltech.edu/TAP' (no config key, "
    "environment variable or argument), and the download host is written into its ADQL ('https://"
    "irsa.ipac.caltech.edu/' || a.uri AS download_url), so every file URL it downloads is IRSA's over HTTPS; "
    "redirecting it would take a TLS-intercepting proxy with a forged certificate for irsa.ipac.caltech.edu, "
    "not an unmodified run against the same server")


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`spxbatch sim serve` in a child process (its CPU and memory kept out of the client's), with its
    JSON-lines access log read back per row."""

    def __init__(self, root: Path, latency: float, bandwidth: float, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        log.unlink(missing_ok=True)
        log.touch()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "spxbatch.cli", "sim", "serve", str(root), "--port", str(self.port),
             "--latency", str(latency), "--bandwidth", str(bandwidth), "--access-log", str(log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"the simulated archive server exited with {self.proc.returncode}")
            time.sleep(0.2)
        raise RuntimeError("the simulated archive server did not start in 120 s")

    def warm(self, catalog: Path, work: Path) -> None:
        """Plan one source of `catalog` once, untimed: the server's first TAP queries pay one-time costs
        (about 1 s of its CPU: the query engine's first geometry calls) that an archive in service has paid
        long before, and that would otherwise fall on whichever row runs first."""
        one = work / "warm.csv"
        pd.read_csv(catalog).head(1).to_csv(one, index=False)
        out = work / "warm.zarr"
        shutil.rmtree(out.with_suffix(".run"), ignore_errors=True)
        Pipeline(RunConfig(catalog=str(one), output=str(out), archive=self.url, progress=False,
                           fetch_options={"cache_dir": "none"})).plan()

    def mark(self) -> int:
        """Entries logged so far."""
        return sum(1 for _ in self.log.open())

    def since(self, mark: int) -> tuple[int, int]:
        """(requests, bytes sent) logged after `mark`."""
        time.sleep(0.2)  # the last entries are written as their responses finish
        entries = [json.loads(line) for line in self.log.read_text().splitlines()[mark:]]
        return len(entries), sum(int(e["bytes"]) for e in entries)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def photometry_costs(phot: PhotometryConfig, n: int = 1000) -> tuple[float, float]:
    """(CPU s per image set-up, CPU s per measurement) of `measure_region` on a synthetic 2040 px image: the
    median of three calls with one source and with `n` sources."""
    rng = np.random.default_rng(0)
    x, y = rng.uniform(20, 2020, n), rng.uniform(20, 2020, n)
    region, _, _ = make_region(2040, x, y, 10 ** rng.uniform(-1, 2, n), noise=True, sky=0.3, zodi=0.25)
    ra, dec = celestial_wcs(region.image_header).all_pix2world(x, y, 0)

    def cpu(k: int) -> float:
        runs = []
        for _ in range(3):
            c0 = time.process_time()
            measure_region(region, ra[:k], dec[:k], phot)
            runs.append(time.process_time() - c0)
        return float(np.median(runs))

    cpu(1)
    one, many = cpu(1), cpu(n)
    return one, max(many - one, 0.0) / (n - 1)


def minimum_bytes(ds: xr.Dataset, npix: int, phot: PhotometryConfig, zone_bytes: int) -> int:
    """The bound of a cube's measurements: `bound_bytes` per image, summed."""
    table = ds[["image_id", "x", "y", "aperture_radius", "psf_zone"]].to_dataframe()
    table["measured"] = np.isfinite(table["x"])
    return sum(bound_bytes(t, (npix, npix), phot, zone_bytes) for _, t in table.groupby("image_id"))


def run_pipeline(catalog: Path, out: Path, url: str, fetch: str, workers: int | None, serial: bool,
                 server: Server) -> dict:
    """One cold spxbatch run: its cube (opened lazily, as the CLI leaves it: loading a 10,000-source cube into
    memory is ~2 s no command-line run pays) and the figures of the row."""
    for old in (out, out.with_suffix(".run")):
        shutil.rmtree(old, ignore_errors=True)
    cfg = RunConfig(catalog=str(catalog), output=str(out), archive=url, fetch=fetch, progress=False,
                    cluster=ClusterConfig(workers=workers), fetch_options={"cache_dir": "none"})
    pipe = Pipeline(cfg)
    mark = server.mark()
    with PeakMemory(exclude=(server.proc.pid,)) as mem:
        t0 = time.perf_counter()
        ds = pipe.run(executor=SerialExecutor(cfg.task_retries) if serial else None, in_memory=False)
        wall = time.perf_counter() - t0
    requests, sent = server.since(mark)
    return {"ds": ds, "wall_s": wall, "measurements": int(ds.sizes["obs"]), "images": int(np.unique(
        ds["image_id"].values).size), "requests": requests, "bytes": sent, "peak_mem_GB": mem.peak / 1e9,
        "cpu_s": mem.cpu_s}


def single_source(catalog: Path, work: Path, url: str, sample: int, server: Server, seed: int,
                  npix: int, phot: PhotometryConfig, zone_bytes: int) -> dict:
    """The single-source tool: one serial `--fetch cutout` run per source of a random sample, scaled to the
    catalog."""
    rows = pd.read_csv(catalog)
    pick = rows.sample(n=min(sample, len(rows)), random_state=seed) if sample < len(rows) else rows
    runs = []
    for k, (_, row) in enumerate(pick.iterrows()):
        one = work / f"single_{k}.csv"
        pd.DataFrame([row]).to_csv(one, index=False)
        r = run_pipeline(one, work / f"single_{k}.zarr", url, "cutout", 1, True, server)
        r["bound"] = minimum_bytes(r.pop("ds"), npix, phot, zone_bytes) if r["measurements"] else 0
        runs.append(r)
    scale = len(rows) / len(pick)
    total = {k: sum(r[k] for r in runs) for k in ("wall_s", "measurements", "requests", "bytes", "cpu_s", "bound")}
    return {"wall_s": total["wall_s"] * scale, "measurements": round(total["measurements"] * scale),
            "requests": round(total["requests"] * scale), "bytes": total["bytes"] * scale,
            "cpu_s": total["cpu_s"] * scale, "peak_mem_GB": max(r["peak_mem_GB"] for r in runs),
            "sampled": len(pick), "extrapolated": scale > 1, "sample_bound_bytes": total["bound"]}


def lower_bound(min_bytes: float, measurements: int, images: int, costs: tuple[float, float], latency: float,
                bandwidth: float, cores: int) -> float:
    """T* = minimum bytes / bandwidth + one round trip per dependent step + photometry CPU / cores."""
    return min_bytes / bandwidth + DEPENDENT_STEPS * latency + (images * costs[0] + measurements * costs[1]) / cores


def spxquery_row(venv: Path) -> dict:
    """SPXQuery 0.4.1's row: whether its installed TAP URL is still IRSA's constant (then the reason)."""
    python = venv / "bin" / "python"
    if not python.exists():
        return {"mode": "spxquery", "status": f"not run: no venv at {venv}; {SPXQUERY_REASON}"}
    probe = subprocess.run([str(python), "-c", "import spxquery.core.query as q; print(q.TAP_URL)"],
                           capture_output=True, text=True, timeout=120)
    found = probe.stdout.strip() or probe.stderr[-200:]
    return {"mode": "spxquery", "status": f"not run (installed TAP_URL: {found}); {SPXQUERY_REASON}"}


def field_catalogs(base: Path, sizes: list[int]) -> tuple[Path, dict[int, Path]]:
    """The 2040 px field archive (made once) and pipeline_scaling's catalog of each size."""
    root = base / "field"
    if not (root / "truth" / "catalog.csv").exists():
        make_archive(root, npix=2040, seed=11, n_visits=3)
    ra0, dec0 = field_centre("demo")
    return root, {n: catalog_of(n, root / "truth" / "catalog.csv", ra0, dec0, 1.2, n, base / f"cat{n}.csv")
                  for n in sizes}


def deep_catalog(base: Path, visits: int, npix: int) -> tuple[Path, Path]:
    """The deep archive (made once) and a one-row catalog of its source nearest the field centre."""
    root = base / f"deep{visits}_{npix}"
    if not (root / "truth" / "catalog.csv").exists():
        make_archive(root, npix=npix, seed=11, field="nep", deep=True, n_visits=visits, n_sources=30)
    ra0, dec0 = field_centre("nep")
    cat = pd.read_csv(root / "truth" / "catalog.csv")
    d = np.hypot((cat["ra"] - ra0) * np.cos(np.radians(dec0)), cat["dec"] - dec0)
    path = base / "deep_source.csv"
    cat.iloc[[int(np.argmin(d.to_numpy()))]].to_csv(path, index=False)
    return root, path


def first_file(root: Path) -> Path:
    """A level-2 file of the archive (all share one PSF layout)."""
    rel = pd.read_csv(root / "truth" / "files.csv")["relpath"].iloc[0]
    return root / rel


def measure_target(label: str, sources: int, root: Path, catalog: Path, npix: int, modes: list[str],
                   args: argparse.Namespace, costs: tuple[float, float], phot: PhotometryConfig) -> list[dict]:
    """Every mode's row for one catalog, the bound from the first cube measured."""
    cores = args.workers or os.cpu_count() or 1
    zone = psf_zone_bytes(first_file(root))
    work = Path(args.dir) / f"runs_{label}"
    work.mkdir(parents=True, exist_ok=True)
    rows, bound = [], None
    with Server(root, args.latency, args.bandwidth, work / "access.jsonl") as srv:
        srv.warm(catalog, work)
        for mode in modes:
            print(f"[{time.strftime('%H:%M:%S')}] {label}: {mode} ...", flush=True)
            if mode == "single":
                r = single_source(catalog, work, srv.url, args.sample, srv, 0, npix, phot, zone)
            else:
                r = run_pipeline(catalog, work / f"{mode}.zarr", srv.url, mode, args.workers, False, srv)
                ds = r.pop("ds")
                if bound is None:
                    bound = {"min_bytes": minimum_bytes(ds, npix, phot, zone), "measurements": r["measurements"],
                             "images": r["images"]}
            rows.append({"target": label, "sources": sources, "mode": mode, "extrapolated": False, **r})
            print(f"    {_fmt(rows[-1])}", flush=True)
    if bound is None:  # single only: the sample's bound, scaled
        s = rows[0]
        bound = {"min_bytes": s["sample_bound_bytes"] * sources / s["sampled"], "measurements": s["measurements"],
                 "images": s["measurements"]}
    t_star = lower_bound(bound["min_bytes"], bound["measurements"], bound["images"], costs, args.latency,
                         args.bandwidth, cores)
    for r in rows:
        r.pop("sample_bound_bytes", None)
        r.update({"meas_per_s": r["measurements"] / r["wall_s"],
                  "bytes_per_meas": r["bytes"] / max(r["measurements"], 1),
                  "min_bytes_per_meas": bound["min_bytes"] / max(bound["measurements"], 1),
                  "MB_read": r["bytes"] / 1e6, "min_MB": bound["min_bytes"] / 1e6, "T_star_s": t_star,
                  "wall_over_T_star": r["wall_s"] / t_star, "cpu_per_core": r["cpu_s"] / r["wall_s"] / cores})
        r["x_min_bytes"] = r["bytes_per_meas"] / r["min_bytes_per_meas"]
    return rows


def _fmt(r: dict) -> str:
    extra = f" (extrapolated from {r['sampled']} sources)" if r.get("extrapolated") else ""
    return (f"{r['wall_s']:.1f} s, {r['measurements']} measurements, {r['bytes'] / 1e6:.1f} MB, "
            f"{r['requests']} requests, peak {r['peak_mem_GB']:.2f} GB, CPU {r['cpu_s']:.1f} s{extra}")


def write_results(out: Path, rows: list[dict], meta: dict) -> None:
    """link_speed.json, link_speed.md and link_speed.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "link_speed.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=float))
    table = pd.DataFrame([r for r in rows if "wall_s" in r])
    cols = ["target", "sources", "mode", "wall_s", "measurements", "meas_per_s", "bytes_per_meas",
            "min_bytes_per_meas", "x_min_bytes", "MB_read", "requests", "peak_mem_GB", "cpu_s", "cpu_per_core",
            "T_star_s", "wall_over_T_star", "extrapolated"]
    md = [f"# link_speed: {meta['latency']} s latency, {meta['bandwidth'] / 1e6:g} MB/s shared cap, "
          f"{meta['workers']} workers", "", f"load average at start {meta['load_start']}, at end {meta['load_end']}; "
          f"photometry CPU {meta['phot_setup_s'] * 1e3:.1f} ms/image + {meta['phot_per_meas_s'] * 1e6:.1f} "
          f"us/measurement", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        md.append("| " + " | ".join(_cell(r.get(c)) for c in cols) + " |")
    md += ["", *[f"- {r['mode']}: {r['status']}" for r in rows if "status" in r], *[f"- {n}" for n in meta["notes"]]]
    (out / "link_speed.md").write_text("\n".join(md) + "\n")
    field = table[table["target"] == "field"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode, g in field.groupby("mode"):
        g = g.sort_values("sources")
        axes[0].plot(g["sources"], g["wall_s"], "o-", label=mode)
        axes[1].plot(g["sources"], g["bytes_per_meas"] / 1e3, "o-", label=mode)
    lb = field.drop_duplicates("sources").sort_values("sources")
    axes[0].plot(lb["sources"], lb["T_star_s"], "k--", label="T*")
    axes[1].plot(lb["sources"], lb["min_bytes_per_meas"] / 1e3, "k--", label="minimum")
    for ax, ylabel in zip(axes, ("wall time (s)", "kB read per measurement"), strict=True):
        ax.set(xscale="log", yscale="log", xlabel="catalog sources in the 2040 px field", ylabel=ylabel)
        ax.legend()
    fig.suptitle(f"{meta['latency'] * 1e3:.0f} ms latency, {meta['bandwidth'] / 1e6:g} MB/s, cold cache")
    fig.tight_layout()
    fig.savefig(out / "link_speed.png", dpi=110)


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return "" if v is None else str(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--modes", default="auto,single,whole")
    ap.add_argument("--sample", type=int, default=10, help="sources run in the single-source mode (then scaled)")
    ap.add_argument("--deep-visits", type=int, default=200, help="0: no deep-field row")
    ap.add_argument("--deep-npix", type=int, default=512)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--bandwidth", type=float, default=20e6)
    ap.add_argument("--workers", type=int, default=None, help="local workers (default: spxbatch's choice)")
    ap.add_argument("--dir", default="/tmp/linkbench")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--spxquery-venv", default=str(Path(__file__).parents[1] / ".venv-spxquery"))
    args = ap.parse_args()
    base = Path(args.dir)
    base.mkdir(parents=True, exist_ok=True)
    load_start = [round(v, 2) for v in os.getloadavg()]
    print(f"load average at start: {load_start} ({os.cpu_count()} cores)", flush=True)
    modes = args.modes.split(",")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    phot = PhotometryConfig()
    costs = photometry_costs(phot)
    print(f"photometry CPU: {costs[0] * 1e3:.1f} ms per image + {costs[1] * 1e6:.1f} us per measurement", flush=True)
    rows: list[dict] = []
    notes = [f"single: one spxbatch run per source (--fetch cutout, serial, one TAP query each); above "
             f"{args.sample} sources a random sample of {args.sample}, scaled to the catalog",
             "the simulated server's cutouts cost only its latency (IRSA's take 1-2 s of service each): the "
             "single-source rows are optimistic"]
    if sizes:
        root, cats = field_catalogs(base, sizes)
        for n in sizes:
            rows += measure_target("field", n, root, cats[n], 2040, modes, args, costs, phot)
    if args.deep_visits:
        root, cat = deep_catalog(base, args.deep_visits, args.deep_npix)
        notes.append(f"deep: make_archive(field='nep', deep=True, n_visits={args.deep_visits}, "
                     f"npix={args.deep_npix}); its whole frames are ({2040 / args.deep_npix:.2g})^2 smaller "
                     f"than real 2040 px ones")
        rows += measure_target("deep", 1, root, cat, args.deep_npix, modes, args, costs, phot)
    rows.append(spxquery_row(Path(args.spxquery_venv)))
    print(rows[-1]["status"])
    load_end = [round(v, 2) for v in os.getloadavg()]
    print(f"load average at end: {load_end}")
    meta = {"latency": args.latency, "bandwidth": args.bandwidth, "workers": args.workers or "auto",
            "load_start": load_start,
            "load_end": load_end, "phot_setup_s": costs[0], "phot_per_meas_s": costs[1], "notes": notes,
            "dependent_steps": DEPENDENT_STEPS}
    write_results(Path(args.out), rows, meta)
    print((Path(args.out) / "link_speed.md").read_text())


if __name__ == "__main__":
    main()
