"""Readers of a big cube, block by block (issue #14): `qc`, the run summary figure, the Parquet and VOTable
exports, figures for a selection of three sources, and opening the cube to read one source, each in its own
process (its peak RSS is its own), next to the baseline of loading the cube whole (what every reader held
before they went block by block). The cube is assembly_scaling's synthetic one (made once, reused).

    python benchmarks/reader_scaling.py [--case 1e6:1e5] [--dir /tmp/spx-asm-bench] [--block-rows 1000000]
        [--readers load_whole,qc,...]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from assembly_scaling import make_parts

from spxbatch.pipeline.rundir import RunDir

#: Each reader: what it does, given the cube, an output folder and the block size.
READERS = ("load_whole", "qc", "summary", "export_parquet", "export_votable", "plot_selection", "open_one_source")


def read(kind: str, cube: Path, out: Path, block_rows: int) -> dict:
    """Run one reader in this process: wall time and what it produced."""
    from spxbatch.cube.export import export_parquet, export_votable
    from spxbatch.cube.requalify import requalify
    from spxbatch.cube.store import open_cube
    from spxbatch.figures.batch import plot_cube
    from spxbatch.figures.rasterize import FrameWriter
    from spxbatch.figures.summary import run_summary, summary_figure

    t0 = time.perf_counter()
    if kind == "load_whole":
        what = f"{open_cube(cube).load().nbytes / 1e9:.2f} GB in memory"
    elif kind == "qc":
        what = f"{int(requalify(cube, {'snr_threshold': 30.0}, out / 'qc.zarr', block_rows)['good'].sum())} good"
    elif kind == "summary":
        ds = open_cube(cube)
        FrameWriter(summary_figure(run_summary(ds, block_rows)), []).save(out / "summary.png")
        what = "summary.png"
    elif kind == "export_parquet":
        path = export_parquet(open_cube(cube), out / "all.parquet", block_rows)
        what = f"{path.stat().st_size / 1e6:.0f} MB"
    elif kind == "export_votable":
        path = export_votable(open_cube(cube), out / "all.xml", block_rows)
        what = f"{path.stat().st_size / 1e6:.0f} MB"
    elif kind == "plot_selection":
        names = open_cube(cube, dask=False)["source"].values
        picked = [str(names[i]) for i in np.linspace(0, names.size - 1, 3).astype(int)]
        what = f"{len(plot_cube(cube, picked, out / 'figures', workers=1)) - 1} figures"
    else:
        ds = open_cube(cube)
        what = f"{len(ds.spx.dataframe(str(ds['source'].values[ds.sizes['source'] // 2])))} rows"
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"reader": kind, "wall_s": round(wall, 2), "peak_GB": round(peak / 1e9, 2), "result": what}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", default="1e6:1e5", help="ROWS:SOURCES of the synthetic run")
    p.add_argument("--dir", default="/tmp/spx-asm-bench")
    p.add_argument("--block-rows", type=int, default=1_000_000)
    p.add_argument("--readers", default=",".join(READERS), help="which readers, comma-separated")
    p.add_argument("--read", nargs=3, metavar=("KIND", "CUBE", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.read:
        kind, cube, out = args.read
        print(json.dumps(read(kind, Path(cube), Path(out), args.block_rows)))
        return
    rows, sources = (int(float(v)) for v in args.case.split(":"))
    base = Path(args.dir)
    run_dir, cube = base / f"r{rows}_s{sources}.run", base / f"r{rows}_s{sources}_new.zarr"
    if not cube.exists():
        if not (run_dir / "plan" / "images.parquet").exists():
            make_parts(RunDir(run_dir), rows, sources, 2000)
        subprocess.run([sys.executable, str(Path(__file__).with_name("assembly_scaling.py")), "--cases",
                        args.case, "--old-max", "0", "--dir", str(base)], check=True, capture_output=True)
    size = sum(f.stat().st_size for f in cube.rglob("*") if f.is_file())
    print(f"cube {cube}: {rows:,} measurements of {sources:,} sources, {size / 1e6:.0f} MB on disk; "
          f"blocks of {args.block_rows:,} rows", flush=True)
    for kind in args.readers.split(","):
        out = base / f"readers_{kind}"
        shutil.rmtree(out, ignore_errors=True)  # this benchmark's own output folder
        out.mkdir(parents=True)
        done = subprocess.run([sys.executable, __file__, "--block-rows", str(args.block_rows), "--read", kind,
                               str(cube), str(out)], capture_output=True, text=True, check=True)
        print(json.loads(done.stdout.strip().splitlines()[-1]), flush=True)


if __name__ == "__main__":
    main()
