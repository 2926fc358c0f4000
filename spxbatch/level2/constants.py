"""SPHEREx instrument and Level-2 format facts: bands, pixel scale, flag bits, HDU layout.

Everything here is taken from ../shared/docs/spherex-archive.md; where that document lists an uncertainty
the choice made is named in a comment so it is easy to change in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Native pixel scale, arcsec per pixel (ES Table 2; SIA s_pixel_scale).
PIXEL_SCALE_ARCSEC = 6.15


#: Full detector size in pixels.
DETECTOR_NPIX = 2040


#: 1 MJy/sr expressed in uJy per arcsec^2.
MJY_PER_SR_TO_UJY_PER_ARCSEC2 = 23.5045


#: Exposure length written to XPOSURE (s) and the span of time_bounds (s).
EXPOSURE_S = 113.5826


TIME_BOUNDS_SPAN_S = 115.12


#: Spacing of small slews inside a large slew (s).
SMALL_SLEW_SPACING_S = 129.0


#: PSF cube layout: 11 x 11 zones, 101 x 101 planes oversampled 10x.
PSF_ZONES = 11


PSF_SIZE = 101


PSF_OVERSAMP = 10


@dataclass(frozen=True)
class Band:
    """One SPHEREx detector band: number, wavelength range (um) and resolving power."""

    number: int
    lo_um: float
    hi_um: float
    resolving_power: float
    partner: int

    @property
    def name(self) -> str:
        """The TAP `energy_bandpassname`, e.g. 'SPHEREx-D3'."""
        return f"SPHEREx-D{self.number}"


#: Bands D1-D6 with the TAP/SIA bounds and IRSA's resolving powers.
BANDS: dict[int, Band] = {
    1: Band(1, 0.7455, 1.1167, 39.0, 4),
    2: Band(2, 1.1033, 1.6499, 41.0, 5),
    3: Band(3, 1.6301, 2.4346, 41.0, 6),
    4: Band(4, 2.4027, 3.8473, 35.0, 1),
    5: Band(5, 3.8113, 4.4300, 112.0, 2),
    6: Band(6, 4.4115, 5.0096, 128.0, 3),
}


#: QR2 FLAGS bits by name (the file's MP_* cards are authoritative; this is what the simulator writes).
FLAG_BITS: dict[str, int] = {
    "TRANSIENT": 0,
    "OVERFLOW": 1,
    "SUR_ERROR": 2,
    "PHANTOM": 4,
    "NONFUNC": 6,
    "DICHROIC": 7,
    "MISSING_DATA": 9,
    "HOT": 10,
    "COLD": 11,
    "FULLSAMPLE": 12,
    "PHANMISS": 14,
    "NONLINEAR": 15,
    "PERSIST": 17,
    "OUTLIER": 19,
    "SOURCE": 21,
}


#: R7 FLAGS bits (the file's MSKNxxxx cards are authoritative): QR2's and the new ones (spherex-r7.md).
R7_FLAG_BITS: dict[str, int] = {
    **FLAG_BITS,
    "CROSSTALK": 20,
    "GHOST": 22,
    "GHOST_FPA": 23,
    "GHOST_EXT": 24,
    "STREAK": 25,
    "BLOOM": 26,
    "SNOWBALL": 27,
    "HALO": 28,
    "SATELLITE_HALO": 29,
}

#: Bad by default: SPXQuery's QR2 set (mask 708295: every named QR2 flag but PHANTOM, FULLSAMPLE and
#: SOURCE), and every R7-only bit. Each R7 bit marks pixels whose value is not the sky's at that place:
#: BLOOM a saturated core and its bleed (in R7 a saturated star may carry BLOOM and not OVERFLOW, so it
#: must be bad for the core not to pass as good), SNOWBALL a charge deposit, STREAK a satellite or
#: asteroid trail, CROSSTALK an electronic echo of a bright pixel, GHOST* reflected light, HALO and
#: SATELLITE_HALO scattered light around bright objects. Masked pixels in the aperture are made up by the
#: aperture correction and flag the measurement; a user who prefers to keep them edits `bad_flags`.
QR2_DEFAULT_BAD_FLAGS: tuple[str, ...] = (
    "TRANSIENT", "OVERFLOW", "SUR_ERROR", "NONFUNC", "DICHROIC", "MISSING_DATA",
    "HOT", "COLD", "PHANMISS", "NONLINEAR", "PERSIST", "OUTLIER",
)
DEFAULT_BAD_FLAGS: tuple[str, ...] = QR2_DEFAULT_BAD_FLAGS + tuple(n for n in R7_FLAG_BITS if n not in FLAG_BITS)


#: HDU names in file order.
HDU_NAMES = ("PRIMARY", "IMAGE", "FLAGS", "VARIANCE", "ZODI", "PSF", "WCS-WAVE")

