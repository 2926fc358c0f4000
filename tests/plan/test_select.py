"""Which candidate images a plan keeps: filters and de-duplication by processing version."""

from __future__ import annotations

import pytest
from plan_rows import image_rows

from spxbatch.level2.naming import version_key
from spxbatch.plan.select import apply_filters, dedupe, plan_filters


def test_dedupe_keeps_newest_version_and_one_copy_per_file():
    df = image_rows([
        dict(obs_id="2025W18_2B_0001_1", detector=1, version="l2b-v20-2025-253"),
        dict(obs_id="2025W18_2B_0001_1", detector=1, version="l2b-v21-2025-354"),
        dict(obs_id="2025W18_2B_0001_1", detector=1, version="l2b-v21-2025-354", collection="spherex_qr2_deep"),
        dict(obs_id="2025W18_2B_0001_1", detector=4, version="l2b-v20-2025-253"),
        dict(obs_id="2025W18_2B_0002_1", detector=1, version="l2b-v20-2025-262"),
        dict(obs_id="2025W18_2B_0002_1", detector=1, version="l2b-v20-2025-253"),
    ])
    out = dedupe(df.sample(frac=1, random_state=3))
    got = sorted(zip(out["obs_id"], out["detector"], out["version"], out["collection"], strict=True))
    assert got == [("2025W18_2B_0001_1", 1, "l2b-v21-2025-354", "spherex_qr2"),
                   ("2025W18_2B_0001_1", 4, "l2b-v20-2025-253", "spherex_qr2"),
                   ("2025W18_2B_0002_1", 1, "l2b-v20-2025-262", "spherex_qr2")]
    assert version_key("l2b-v21-2025-354") > version_key("l2b-v20-2025-362") > version_key("junk")
    assert version_key("l2b_retry-v26-2026-197") > version_key("l2b-v26-2026-196") > version_key("l2b-v21-2025-354")


def testplan_filters():
    df = image_rows([
        dict(obs_id="2025W18_2B_0001_1", detector=1, version="v", band_name="D1", mjd_start=100.0, mjd_end=101.0),
        dict(obs_id="2025W18_2B_0001_1", detector=2, version="v", band_name="D2", mjd_start=200.0, mjd_end=201.0,
             collection="spherex_qr2_deep"),
        dict(obs_id="2025W18_2B_0001_1", detector=3, version="v", band_name="D3", mjd_start=300.0, mjd_end=301.0,
             release="qr3"),
    ])
    sel = lambda **kw: apply_filters(df, plan_filters(**{"bands": None, "time_range": None, "collections": None,  # noqa: E731
                                                          "releases": None, **kw}))["detector"].tolist()
    assert sel() == [1, 2, 3]
    assert sel(bands=["D1", 3, "SPHEREx-D2"]) == [1, 2, 3] and sel(bands=[2]) == [2]
    assert sel(time_range=(100.5, 200.5)) == [1, 2]
    assert sel(collections=["spherex_qr2_deep"]) == [2]
    assert sel(releases=["QR2"]) == [1, 2]
    with pytest.raises(ValueError):
        sel(bands=[7])
    with pytest.raises(ValueError):
        sel(time_range=(3, 1))
