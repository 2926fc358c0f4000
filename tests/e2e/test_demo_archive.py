"""The demo's archive: what users meet first is today's IRSA, QR2 files beside R7 reprocessings and QR3;
built once, reused while its parameters hold, replaced when they do not (an older spxbatch's included)."""

from __future__ import annotations

import json

import pandas as pd

from spxbatch.cli.demo import _READY, ensure_demo_archive


def test_demo_archive_is_mixed_reused_and_replaced_when_stale(tmp_path):
    root = tmp_path / "archive"
    root.mkdir()
    (root / "stale.fits").write_bytes(b"from an older demo")
    (root / _READY).write_text(str(root / "truth" / "catalog.csv"))  # an older spxbatch's plain marker
    catalog = ensure_demo_archive(root, 128)
    assert not (root / "stale.fits").exists()
    assert json.loads((root / _READY).read_text()) == {"npix": 128, "release": "mixed", "catalog": str(catalog)}
    files = pd.read_csv(root / "truth" / "files.csv").query("present")
    assert set(files["release"]) == {"qr2", "qr3"} and set(files["layout"]) == {"QR2", "R7"}
    assert files["superseded"].any()
    stamp = catalog.stat().st_mtime_ns
    assert ensure_demo_archive(root, 128) == catalog and catalog.stat().st_mtime_ns == stamp  # reused
