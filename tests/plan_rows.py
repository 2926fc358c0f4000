"""Test helper: plan images rows (as TAP or a mirror's index gives them) built from a few fields each."""

from __future__ import annotations

import pandas as pd


def image_rows(rows) -> pd.DataFrame:
    """Plan images rows: each dict's fields over a D1 footprint at RA 10-12, Dec 0-2; relpath from the rest."""
    base = dict(band_name="D1", release="qr2", collection="spherex_qr2", mjd_start=60800.0, mjd_end=60800.001,
                energy_lo_um=0.75, energy_hi_um=1.1, poly_ra=[10.0, 12.0, 12.0, 10.0],
                poly_dec=[0.0, 0.0, 2.0, 2.0], size_bytes=100)
    out = []
    for r in rows:
        d = {**base, **r}
        d.setdefault("relpath", f"ibe/data/spherex/{d['release']}/level2/2025W18_2B/{d['version']}/"
                                f"{d['detector']}/level2_{d['obs_id']}D{d['detector']}.fits")
        out.append(d)
    return pd.DataFrame(out)
