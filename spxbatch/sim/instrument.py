"""Everything fixed per detector at a given image size, computed once per archive and shared by files.

Optics (WCS distortion, solid angle), the LVF (WCS-WAVE tables, CWAVE/CBAND), the PSF (zone models, QR2
cube, R7 ePSF) and the defect map: the same for every exposure of a detector, as the calibration products are.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from astropy.io import fits

from spxbatch.level2.constants import PIXEL_SCALE_ARCSEC
from spxbatch.sim import epsf, flux_corrections, lvf, optics, psf, r7, scene


@dataclass
class Detector:
    """One detector's fixed properties, computed lazily."""

    number: int
    npix: int

    @cached_property
    def optics(self) -> optics.Optics:
        """Pixel scale, parity, SIP coefficients."""
        return optics.optics(self.number, self.npix)

    @cached_property
    def solid_angle(self) -> np.ndarray:
        """Per-pixel solid angle (arcsec^2), float64."""
        return optics.solid_angle_map(self.optics)

    @cached_property
    def omega_median(self) -> float:
        """Median pixel solid angle (arcsec^2), the header's OMEGA_MEDIAN."""
        return float(np.median(self.solid_angle))

    @cached_property
    def wave_images(self) -> tuple[np.ndarray, np.ndarray]:
        """CWAVE and CBAND (um) at every pixel."""
        return lvf.wave_images(self.number, self.npix)

    @cached_property
    def wave_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(X, Y, VALUES) of the WCS-WAVE table."""
        return lvf.wave_table_values(self.number, self.npix)

    @cached_property
    def wave_table_r7(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(X, Y, VALUES) of the 9 x 9 WCS-WAVE table of R7 files."""
        return lvf.wave_table_values(self.number, self.npix, r7.WAVE_CONTROL)

    @cached_property
    def epsf(self) -> epsf.Epsf:
        """The R7 ePSF (the zone model, pixel-convolved, x5, on the R7 zone grid)."""
        return epsf.make_epsf(self.number, self.npix)

    @cached_property
    def epsf_table(self) -> fits.BinTableHDU:
        """The EPSF table every R7 file of this detector carries."""
        return epsf.table_hdu(self.epsf)

    @cached_property
    def l3_factors(self) -> np.ndarray:
        """QR3's l3_flux_corrections factors (float32), the calibration error of QR2-processed files."""
        return flux_corrections.factor_map(self.number, self.npix)

    @cached_property
    def psf_params(self) -> np.ndarray:
        """Zone model parameters (121, 2, 5)."""
        return psf.zone_params(self.number, self.npix)

    @cached_property
    def psf_cube(self) -> np.ndarray:
        """The (121, 101, 101) cube."""
        return psf.cube(self.number, self.npix)

    @cached_property
    def psf_params_variant(self) -> np.ndarray:
        """Zone model parameters of the variant PSF shipped by some files."""
        return psf.zone_params(self.number, self.npix, variant=True)

    @cached_property
    def psf_cube_variant(self) -> np.ndarray:
        """The variant PSF's cube."""
        return psf.cube(self.number, self.npix, variant=True)

    @cached_property
    def psf_fwhm_arcsec(self) -> float:
        """Core FWHM at the detector centre (arcsec), the header's PSF_FWHM."""
        c = (self.npix - 1) / 2
        return float(psf.fwhm_px(lvf.wavelength_um(self.number, c, c, self.npix)) * PIXEL_SCALE_ARCSEC)

    @cached_property
    def defects(self) -> list[tuple[int, int, str, bool, bool]]:
        """Fixed bad pixels (x, y, kind, nan_variance, nan_image)."""
        return scene.defect_map(self.number, self.npix)

    @cached_property
    def dichroic(self) -> np.ndarray | None:
        """Dark-corner mask (bands 3 and 4) or None."""
        return scene.dichroic_mask(self.number, self.npix)
