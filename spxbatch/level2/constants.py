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


#: SPXQuery's default bad flags (mask 708295): every named flag but PHANTOM, FULLSAMPLE and SOURCE.
DEFAULT_BAD_FLAGS: tuple[str, ...] = (
    "TRANSIENT", "OVERFLOW", "SUR_ERROR", "NONFUNC", "DICHROIC", "MISSING_DATA",
    "HOT", "COLD", "PHANMISS", "NONLINEAR", "PERSIST", "OUTLIER",
)


#: HDU names in file order.
HDU_NAMES = ("PRIMARY", "IMAGE", "FLAGS", "VARIANCE", "ZODI", "PSF", "WCS-WAVE")

