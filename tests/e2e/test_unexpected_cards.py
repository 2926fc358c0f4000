"""Files with unexpected header cards (long HIERARCH keys, unknown keys, CONTINUE strings, COMMENT/HISTORY,
blank cards in every HDU) measure exactly as the same files without them, QR2 and R7 alike, read in place
and through range reads over HTTP (the longer headers move every extension's offset)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spxbatch.fetch.cache import FetchCache
from spxbatch.fetch.fetch import fetch_image
from spxbatch.fetch.options import FetchOptions
from spxbatch.level2.naming import IBE_ROOT
from spxbatch.photometry import PhotometryConfig
from spxbatch.photometry.measure import measure_region
from spxbatch.sim.server import serve_archive
from spxbatch.sim.variants import extra_cards

HALF = 12


def _carded_copy(info, dest: Path):
    """A copy of an archive with extra cards in three of its newest files (the original stays plain)."""
    shutil.copytree(info.root, dest)
    copy = replace(info, root=dest, truth={k: dest / p.relative_to(info.root) for k, p in info.truth.items()})
    return copy, extra_cards(copy, count=3)


def _fluxes(info, relpath: str, url: str | None) -> np.ndarray:
    truth = pd.read_parquet(info.truth["measurements"])
    cat = pd.read_csv(info.catalog).set_index("name")
    src = cat.loc[truth[truth.relpath == relpath].name]
    row = {"url": url or "", "relpath": f"{IBE_ROOT}/{relpath}", "detector": int(relpath.split("/")[4])}
    options = FetchOptions(file_root=None if url else str(info.root), calibration=False)
    result = fetch_image(row, src.ra.to_numpy(), src.dec.to_numpy(), strategy="auto" if url is None else "range",
                         halfsize=HALF, cache=FetchCache(), options=options)
    assert result.error is None, result.error
    out = np.full(len(src), np.nan)
    for region, idx in result.regions:
        out[idx] = measure_region(region, src.ra.to_numpy()[idx], src.dec.to_numpy()[idx], PhotometryConfig())["flux"]
    return out


@pytest.mark.parametrize("release", ["qr2", "qr3"])
def test_extra_cards_change_no_number(release, sim_archive, sim_archive_qr3, tmp_path):
    plain = sim_archive if release == "qr2" else sim_archive_qr3
    carded, altered = _carded_copy(plain, tmp_path / "carded")
    layouts = pd.read_csv(plain.truth["files"]).set_index("relpath").loc[altered, "layout"]
    assert set(layouts) == {"QR2" if release == "qr2" else "R7"}
    with serve_archive(carded.root) as srv:
        for rel in altered:
            want = _fluxes(plain, rel, None)
            assert np.isfinite(want).any()
            np.testing.assert_array_equal(_fluxes(carded, rel, None), want)
            np.testing.assert_array_equal(_fluxes(carded, rel, srv.file_url(rel)), want)
