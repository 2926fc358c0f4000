"""`source_releases` (vectorised: label sets as bit masks) against its definition, one source at a time."""

import numpy as np
import pandas as pd
import pytest

from spxbatch.cube.assemble import source_releases


def _by_definition(n_sources: int, m: pd.DataFrame) -> list[str]:
    out = [""] * n_sources
    good = m[m["good"]]
    for i in range(n_sources):
        rows = good[good["source_index"] == i]
        majors = rows["pipeline_version"].str.extract(r"^\s*v?(\d+)", expand=False).fillna("?")
        out[i] = ", ".join(sorted(set(rows["release"] + "/" + majors)))
    return out


@pytest.mark.parametrize("releases", [["qr2", "qr3"], [f"r{i}" for i in range(70)]])  # beyond 64 labels too
def test_source_releases_is_the_sorted_set_of_labels_of_good_rows(releases):
    rng = np.random.default_rng(3)
    n = 3000
    m = pd.DataFrame({"source_index": rng.integers(0, 200, n), "good": rng.uniform(size=n) < 0.7,
                      "release": rng.choice(releases, n),
                      "pipeline_version": rng.choice(["6.5.4", "v7.0", " 7.1", "x", ""], n)})
    assert source_releases(201, m).tolist() == _by_definition(201, m)  # source 200 has no rows: ''
    assert source_releases(3, m.iloc[:0]).tolist() == ["", "", ""]
