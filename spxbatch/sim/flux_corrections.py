"""The simulated QR3 `l3_flux_corrections`: per-pixel factors that bring a QR2-processed image to R7's
calibration (IMAGE x factor, VARIANCE x factor^2, ZODI untouched).

In an archive that ships them, QR2-processed files carry exactly the error the factors undo (IMAGE and
VARIANCE divided by the factor and its square), so a corrected QR2 measurement meets the truth and an
uncorrected one is off by the factor at the source, as IRSA's QR2 images are against R7.
"""

from __future__ import annotations

import numpy as np

#: Typical factor per detector (IRSA's: D1 median 0.970, D5 1.007; the others chosen near 1).
MEDIAN = {1: 0.970, 2: 0.985, 3: 0.992, 4: 0.996, 5: 1.007, 6: 1.004}
#: Row structure: a gentle tilt, and a dip in the first and last rows (D1 row medians reach 0.875).
TILT = 0.01
EDGE_DIP = {1: 0.09, 2: 0.03, 3: 0.02, 4: 0.02, 5: 0.02, 6: 0.02}
EDGE_ROWS = 0.02


def factor_map(detector: int, npix: int) -> np.ndarray:
    """The (npix, npix) float32 factors of a detector: smooth along rows, structured across them."""
    t = np.arange(npix) / (npix - 1)
    edge = np.exp(-t / EDGE_ROWS) + np.exp(-(1 - t) / EDGE_ROWS)
    rows = MEDIAN[detector] * (1 + TILT * (t - 0.5) - EDGE_DIP[detector] * edge)
    cols = 1 + 0.003 * np.cos(np.pi * t)
    return (rows[:, None] * cols[None, :]).astype(np.float32)
