"""QR2 archives keep their content: the same seed gives the same Level-2 files as before R7 support existed.

The reference (`qr2_reference.json`, see `qr2_summary.py`) replaces byte digests recorded at commit
bd868d2 (before R7 support), which the simulator still matched on the machine they were recorded on but
not on machines whose float maths differ in the last bit. It was written by `summarise` from this code on
such a machine; headers are compared card by card (floats to 8 digits) and data by their sums to 2e-8
(a 0.1 % change of one pixel of a 48x48 plane moves them by ~1e-7; last-bit float noise by ~1e-9).
Regenerate it only for an intended change of the QR2 simulation, and say so in the commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from qr2_summary import summarise

from spxbatch.sim import make_archive

REFERENCE = json.loads((Path(__file__).with_name("qr2_reference.json")).read_text())


def test_qr2_level2_files_keep_their_content(tmp_path):
    info = make_archive(tmp_path, npix=48, seed=5, n_visits=6)
    got = summarise(tmp_path, list(info.files))
    assert sorted(got) == sorted(REFERENCE)
    for name, hdus in REFERENCE.items():
        assert sorted(got[name]) == sorted(hdus), name
        for hdu, (digest, total, absolute) in hdus.items():
            g_digest, g_total, g_abs = got[name][hdu]
            assert g_digest == digest, f"{name} {hdu}: header cards changed"
            if total is not None:
                assert g_total == pytest.approx(total, rel=2e-8, abs=1e-9), f"{name} {hdu}: data changed"
                assert g_abs == pytest.approx(absolute, rel=2e-8, abs=1e-9), f"{name} {hdu}: data changed"
