"""The 102 spectral channels of the cube (17 per band, constant resolving power inside each band)."""

from __future__ import annotations

import numpy as np

from spxbatch.level2.constants import BANDS

#: Channels per band in the spectral cube (102 in all).
CHANNELS_PER_BAND = 17


def channel_edges_um() -> np.ndarray:
    """Wavelength edges (um) of the 102 channels: 17 per band, geometric (constant R) inside each band.

    Shape (6, 18). Band b's channel c spans edges[b-1, c] .. edges[b-1, c+1].
    """
    edges = np.empty((len(BANDS), CHANNELS_PER_BAND + 1))
    for b, band in BANDS.items():
        edges[b - 1] = band.lo_um * (band.hi_um / band.lo_um) ** (
            np.arange(CHANNELS_PER_BAND + 1) / CHANNELS_PER_BAND
        )
    return edges


def channel_centers_um() -> tuple[np.ndarray, np.ndarray]:
    """(wavelength, band) of the 102 channels, wavelength the geometric centre of each channel."""
    edges = channel_edges_um()
    centers = np.sqrt(edges[:, :-1] * edges[:, 1:]).ravel()
    bands = np.repeat(np.arange(1, len(BANDS) + 1), CHANNELS_PER_BAND)
    return centers, bands


def channel_index(wavelength_um: np.ndarray, band: np.ndarray) -> np.ndarray:
    """Channel (0..101) of each measurement from its band and wavelength; -1 outside the band's range."""
    edges = channel_edges_um()
    wavelength_um = np.asarray(wavelength_um, dtype=float)
    band = np.asarray(band, dtype=int)
    out = np.full(wavelength_um.shape, -1, dtype=np.int64)
    for b in BANDS:
        sel = band == b
        if not np.any(sel):
            continue
        c = np.searchsorted(edges[b - 1], wavelength_um[sel], side="right") - 1
        ok = (c >= 0) & (c < CHANNELS_PER_BAND)
        out[np.flatnonzero(sel)[ok]] = (b - 1) * CHANNELS_PER_BAND + c[ok]
    return out

