"""Client memory of planning and job building: 10^4, 10^5 and 10^6 catalog sources over a simulated sky, the code
before the partitioned plan (another source tree, e.g. /work/main before the merge) against this one, in the
same run.

The sky is one simulated field (`--npix` pixel frames, `--visits` visits, every band: 126 images at the
defaults, read in place as a local mirror, so planning asks no server); the catalogs are that many positions
drawn uniformly over the images' footprints, so each source is on ~45 images and 10^6 sources make 4.5 x 10^7
(source, image) pairs. Each case runs in two processes of its own (`--child`; one per phase, so that one
phase's peak does not hide the other's), with the case's source tree first on the path, each reporting its
own peak RSS (ru_maxrss) after reading the catalog and at its end: 'plan' makes the plan (saved in a run
directory), 'jobs' builds every measuring job from the saved plan the way `Pipeline.measure` does (batched as
tasks, `WINDOW` batches kept as if in flight; the old code listed them all). Nothing is measured: the
photometry of 10^6 sources takes hours here; the plan and the jobs are what the client holds.

    python benchmarks/plan_scaling.py [--sizes 1e4,1e5,1e6] [--before /work/main] [--dir /tmp/spx-plan-bench]
        [--npix 256] [--visits 64]

The archive and the catalogs are made once in `--dir` and reused (the archive: ~25 s and 740 MB at the
defaults; the catalogs 21 MB at 10^6). The whole run takes ~5 min here.
Results: benchmarks/results/plan_scaling.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
import pandas as pd

#: Batches of jobs kept alive while the rest are built (run_in_waves' window: tasks per worker x 2 workers).
WINDOW = 8
#: Images per task, as the pipeline's default.
IMAGES_PER_TASK = 3
HERE = Path(__file__).resolve().parents[1]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(phase: str, root: Path, catalog: Path, run_dir: Path) -> dict:
    """One phase of a case in this process, after reading the catalog: 'plan' (make and save the plan) or
    'jobs' (build every job from the saved plan); its peak RSS and seconds."""
    import spxbatch
    from spxbatch.pipeline.executor import batched
    from spxbatch.pipeline.jobs import image_jobs
    from spxbatch.plan.catalog import read_catalog
    from spxbatch.plan.plan import Plan, make_plan

    out: dict = {"tree": str(Path(spxbatch.__file__).parents[1])}
    cat = read_catalog(catalog)
    out[f"{phase}_catalog_mb"] = round(_peak_mb())
    t0 = time.perf_counter()
    if phase == "plan":
        plan = make_plan(cat, str(root), run_dir=run_dir)
        out.update(images=len(plan.images), pairs=int(plan.meta["pairs"]),
                   partitions=len(plan.meta.get("partitions", [None])))
    else:
        jobs = image_jobs(Plan.load(run_dir), cat)  # as Pipeline.measure: the old code lists them all
        window: deque = deque(maxlen=WINDOW)
        n = 0
        for batch in batched(jobs, IMAGES_PER_TASK):
            window.append(batch)
            n += sum(len(j.source_index) for j in batch)
        out["job_pairs"] = n
    out.update({f"{phase}_s": round(time.perf_counter() - t0, 2), f"{phase}_peak_mb": round(_peak_mb())})
    return out


def make_sky(base: Path, npix: int, visits: int) -> Path:
    """The simulated field (made once): its root."""
    from spxbatch.sim import make_archive

    root = base / f"archive_{npix}px_{visits}v"
    if not (root / "done").exists():
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.perf_counter()
        make_archive(root, npix=npix, n_visits=visits, n_sources=20, seed=3, calibration=False)
        (root / "done").write_text("")
        print(f"archive: {time.perf_counter() - t0:.0f} s", flush=True)
    return root


def make_catalog_file(base: Path, root: Path, size: int) -> Path:
    """`size` positions uniform over the footprints' bounding box (made once)."""
    from spxbatch.plan.local import local_images

    path = base / f"catalog_{root.name}_{size}.parquet"
    if not path.exists():
        images = local_images(str(root))
        ra = np.concatenate([np.asarray(v, float) for v in images["poly_ra"]])
        dec = np.concatenate([np.asarray(v, float) for v in images["poly_dec"]])
        rng = np.random.default_rng(size)
        pd.DataFrame({"name": [f"s{i:07d}" for i in range(size)],
                      "ra": rng.uniform(ra.min(), ra.max(), size),
                      "dec": rng.uniform(dec.min(), dec.max(), size)}).to_parquet(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1e4,1e5,1e6")
    ap.add_argument("--before", default="/work/main", help="the source tree of the code before")
    ap.add_argument("--dir", default="/tmp/spx-plan-bench")
    ap.add_argument("--npix", type=int, default=256)
    ap.add_argument("--visits", type=int, default=64)
    ap.add_argument("--child", nargs=4, metavar=("PHASE", "ROOT", "CATALOG", "RUN_DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], *(Path(a) for a in args.child[1:]))))
        return
    base = Path(args.dir)
    base.mkdir(parents=True, exist_ok=True)
    root = make_sky(base, args.npix, args.visits)
    rows = []
    for size in (int(float(s)) for s in args.sizes.split(",")):
        catalog = make_catalog_file(base, root, size)
        for label, tree in (("before", Path(args.before)), ("after", HERE)):
            run_dir = base / f"{label}_{size}.run"
            shutil.rmtree(run_dir, ignore_errors=True)
            env = {**os.environ, "PYTHONPATH": str(tree)}
            row = {"sources": size, "code": label}
            for phase in ("plan", "jobs"):
                done = subprocess.run([sys.executable, __file__, "--child", phase, str(root), str(catalog),
                                       str(run_dir)], env=env, capture_output=True, text=True, check=True)
                row.update(json.loads(done.stdout.strip().splitlines()[-1]))
            shutil.rmtree(run_dir, ignore_errors=True)
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = pd.DataFrame(rows).drop(columns=["tree"])
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
