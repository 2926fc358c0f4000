"""Time and peak memory to load and validate a 10^6-row catalog (CSV and Parquet); tiles and matching.

Run: python benchmarks/catalog_load.py [--rows 1000000] [--runs 3]. Each measurement runs in a fresh
subprocess so its peak RSS (ru_maxrss) is its own; the baseline line is the interpreter with spxbatch and
its readers imported, i.e. the memory that is not the catalog's. For comparison it also times astropy's
own CSV reader on the same file (the reason CSV goes through pyarrow), the query tiles of the all-sky
catalog, and the footprint matching of as many sources packed in a 10x10 deg field against 100 detector
footprints (3.49 deg squares), about 10^7 (source, image) pairs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

_CHILD = r"""
import json, resource, sys, time
import numpy as np, pyarrow.csv, pyarrow.parquet, astropy.table, pandas
from spxbatch.plan.catalog import read_catalog
from spxbatch.plan.tiles import make_tiles
path, mode = sys.argv[1], sys.argv[2]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if mode == "spxbatch":
    n = len(read_catalog(path))
elif mode == "astropy":
    n = len(astropy.table.Table.read(path, format="ascii.csv"))
elif mode == "tiles":
    cat = read_catalog(path)
    t0 = time.perf_counter()
    n = len(make_tiles(cat.ra, cat.dec))
elif mode == "match":
    from spxbatch.plan.footprint import Footprints
    rng = np.random.default_rng(1)
    rows = len(read_catalog(path))
    ra, dec = rng.uniform(150, 160, rows), rng.uniform(-5, 5, rows)
    cra, cdec = rng.uniform(150, 160, 100), rng.uniform(-5, 5, 100)
    h = 1.745 / np.cos(np.radians(cdec))
    fp = Footprints.from_corners([[c - w, c + w, c + w, c - w] for c, w in zip(cra, h)],
                                 [[d - 1.745, d - 1.745, d + 1.745, d + 1.745] for d in cdec])
    t0 = time.perf_counter()
    n = len(fp.match(ra, dec, 2 * 6.15 / 3600)[0])
else:
    n = 0
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"n": n, "seconds": dt, "peak_mb": peak / 1024, "baseline_mb": base / 1024}))
"""


def write_catalogs(folder: Path, rows: int) -> dict[str, Path]:
    """A Gaia-like catalog (int64 source_id, ra, dec, pm, epoch, a magnitude) as CSV and Parquet."""
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(rows, 3))
    ra = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0])) % 360.0
    dec = np.degrees(np.arcsin(xyz[:, 2] / np.linalg.norm(xyz, axis=1)))
    df = pd.DataFrame({"source_id": rng.choice(2**62, rows, replace=False), "ra": ra, "dec": dec,
                       "pmra": rng.normal(0, 5, rows), "pmdec": rng.normal(0, 5, rows),
                       "ref_epoch": 2016.0, "phot_g_mean_mag": rng.uniform(8, 21, rows)})
    paths = {"csv": folder / "catalog.csv", "parquet": folder / "catalog.parquet"}
    df.to_csv(paths["csv"], index=False)
    df.to_parquet(paths["parquet"], index=False)
    return paths


def run(path: Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), mode], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spxcat-") as tmp:
        paths = write_catalogs(Path(tmp), args.rows)
        cases = [("baseline (imports only)", paths["csv"], "none"),
                 ("read_catalog CSV", paths["csv"], "spxbatch"),
                 ("read_catalog Parquet", paths["parquet"], "spxbatch"),
                 ("astropy ascii.csv (reference)", paths["csv"], "astropy"),
                 ("make_tiles (all-sky)", paths["parquet"], "tiles"),
                 ("Footprints.match (dense field)", paths["parquet"], "match")]
        for label, path, mode in cases:
            res = [run(path, mode) for _ in range(args.runs)]
            secs = statistics.median(r["seconds"] for r in res)
            peak = max(r["peak_mb"] for r in res)
            size = path.stat().st_size / 1e6
            extra = {"tiles": f" -> {res[0]['n']} tiles", "match": f" -> {res[0]['n']} pairs"}.get(mode, "")
            print(f"{label:32s} {args.rows} rows ({size:.0f} MB file): {secs:6.2f} s median of {args.runs}, "
                  f"peak RSS {peak:6.0f} MB{extra}")


if __name__ == "__main__":
    main()
