"""Generation time and on-disk size of the simulated archive: the demo archive (npix 512) in each release
(qr2, qr3, mixed) and one 2040x2040 exposure in QR2 and R7 layout.

Run: python benchmarks/sim_generation.py [--runs 3] [--releases qr2,qr3,mixed]. Prints one line per
configuration (median wall time of the runs, files written, bytes on disk, and per-file figures). Files go
to a temporary directory.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from spxbatch.sim import make_archive


def _disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def measure(label: str, runs: int, **kwargs) -> None:
    """Build the archive `runs` times; print the median time, file count and on-disk size."""
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="spxsim-") as tmp:
            t0 = time.perf_counter()
            info = make_archive(tmp, **kwargs)
            times.append(time.perf_counter() - t0)
            total = _disk_bytes(Path(tmp))
            n = len(info.files)
            l2 = info.bytes_written
    med = statistics.median(times)
    print(
        f"{label}: {med:.1f} s median of {runs} (runs: {', '.join(f'{t:.1f}' for t in times)}); "
        f"{n} L2 files, {l2 / 1e6:.0f} MB L2 ({l2 / n / 1e6:.2f} MB/file), {total / 1e6:.0f} MB on disk "
        f"with calibration and truth; {med / n:.2f} s/file"
    )


def main() -> None:
    """Measure the demo archive (npix 512, defaults) per release and one 2040x2040 exposure."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3, help="runs of each demo archive (median reported)")
    ap.add_argument("--releases", default="qr2,qr3,mixed", help="comma-separated releases to measure")
    args = ap.parse_args()
    releases = [r.strip() for r in args.releases.split(",") if r.strip()]
    for release in releases:
        measure(f"demo archive (npix 512, defaults, release {release})", args.runs, release=release)
    for release in [r for r in releases if r in ("qr2", "qr3")]:
        measure(f"2040x2040 field, one exposure, release {release}", 1, npix=2040, n_visits=1, release=release)


if __name__ == "__main__":
    main()
