"""Each source's flux from its phases: the aperture sum less the scaled zodi and the background, its error,
divided by the aperture correction, in uJy."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from spxbatch.photometry.aperture import ApertureSums, Footprint
from spxbatch.photometry.background import Background


class Fluxes(NamedTuple):
    """uJy per source: `flux` and `flux_err` (corrected), `flux_aperture` (the background-subtracted sum
    before correction), `snr`, and the factor applied (`aperture_correction` = 1 / fraction)."""

    flux: np.ndarray
    flux_err: np.ndarray
    flux_aperture: np.ndarray
    snr: np.ndarray
    aperture_correction: np.ndarray


def source_fluxes(sums: ApertureSums, zodi_scale: np.ndarray, background: Background, footprint: Footprint,
                  fraction: np.ndarray, ujy_per_unit: np.ndarray) -> Fluxes:
    """Fluxes from the sums (MJy/sr x px), the background level per pixel over the unmasked aperture area,
    the correction `fraction` and the unit factor; a fraction of 0 (every aperture pixel masked) gives
    non-finite fluxes, which the caller records as not measured."""
    f_sb = sums.image - zodi_scale * sums.zodi - background.level * footprint.area
    e_sb = np.sqrt(footprint.var_sum + (background.err * footprint.area) ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        flux_ap = f_sb * ujy_per_unit
        flux = flux_ap / fraction
        flux_err = e_sb * ujy_per_unit / fraction
        snr = flux / flux_err
        apcorr = 1.0 / fraction
    return Fluxes(flux, flux_err, flux_ap, snr, apcorr)
