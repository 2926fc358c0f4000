"""SPHEREx facts shared by the pipeline and the simulated archive: bands, flags, channels, paths.

Everything here is taken from ../shared/docs/spherex-archive.md; where that document lists an uncertainty
the choice made is named in a comment so it is easy to change in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

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
#: Channels per band in the spectral cube (102 in all).
CHANNELS_PER_BAND = 17


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

#: Relative root of the spectral images inside an archive (IRSA: https://irsa.ipac.caltech.edu/<this>).
IBE_ROOT = "ibe/data/spherex"
#: The real archive.
IRSA_BASE_URL = "https://irsa.ipac.caltech.edu"
#: The AWS mirror: bucket root = IBE_ROOT.
S3_BUCKET = "nasa-irsa-spherex"

_OBS_ID_RE = re.compile(r"^(?P<period>\d{4}W\d{2}_\d[A-Z])_(?P<large>\d{4})_(?P<small>\d)$")
_DID_RE = re.compile(r"\?([^/]+)/D(\d)")


def flag_mask(names: tuple[str, ...] | list[str], bits: dict[str, int]) -> int:
    """OR of the bits of `names`, resolved through `bits` (from the file's MP_* cards)."""
    unknown = [n for n in names if n not in bits]
    if unknown:
        raise KeyError(f"flag names not in this file's MP_* cards: {', '.join(unknown)}")
    mask = 0
    for name in names:
        mask |= 1 << bits[name]
    return mask


def flag_bits_from_header(header) -> dict[str, int]:
    """Flag name -> bit from a FLAGS header's `MP_<NAME>` cards (HIERARCH or plain)."""
    out: dict[str, int] = {}
    for key in header:
        k = key.upper()
        if k.startswith("HIERARCH "):
            k = k[len("HIERARCH "):]
        if k.startswith("MP_"):
            out[k[3:]] = int(header[key])
    return out


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


def obs_id_parts(obs_id: str) -> tuple[str, int, int]:
    """('2025W18_2B', large slew, small slew) from an observation ID like '2025W18_2B_0001_1'."""
    m = _OBS_ID_RE.match(obs_id)
    if not m:
        raise ValueError(f"not a SPHEREx observation ID: {obs_id!r}")
    return m["period"], int(m["large"]), int(m["small"])


def parse_did(did: str) -> tuple[str, int]:
    """(obs_id, detector) from an obs_publisher_did like 'ivo://irsa.ipac/spherex_qr2?2025W49_1A_0332_1/D2'."""
    m = _DID_RE.search(did)
    if not m:
        raise ValueError(f"not a SPHEREx publisher DID: {did!r}")
    return m.group(1), int(m.group(2))


def make_did(obs_id: str, detector: int, collection: str = "spherex_qr2") -> str:
    """The obs_publisher_did of one detector image."""
    return f"ivo://irsa.ipac/{collection}?{obs_id}/D{detector}"


def level2_relpath(obs_id: str, detector: int, version: str, release: str = "qr2") -> str:
    """IRSA's relative path (no leading slash) of a Level-2 image below the archive root.

    `version` is the processing directory tag, e.g. 'l2b-v20-2025-253'.
    """
    period, _, _ = obs_id_parts(obs_id)
    return (
        f"{IBE_ROOT}/{release}/level2/{period}/{version}/{detector}/"
        f"level2_{obs_id[: -2]}_{obs_id[-1]}D{detector}_spx_{version}.fits"
    )


#: Calibration products: (folder, file stem, version tag) below `{IBE_ROOT}/{release}/`.
CALIBRATION_PRODUCTS: dict[str, tuple[str, str, str]] = {
    "solid_angle_pixel_map": ("solid_angle_pixel_map", "solid_angle_pixel_map", "cal-sapm-v2-2025-164"),
    "spectral_wcs": ("spectral_wcs", "spectral_wcs", "cal-wcs-v4-2025-254"),
    "average_psf": ("average_psf", "average_psf", "cal-psf-v3-2025-254"),
}


def calibration_relpath(product: str, detector: int, release: str = "qr2") -> str:
    """Relative path of one detector's calibration file, e.g. the solid-angle pixel map of D3."""
    folder, stem, version = CALIBRATION_PRODUCTS[product]
    return f"{IBE_ROOT}/{release}/{folder}/{version}/{detector}/{stem}_D{detector}_spx_{version}.fits"
