"""The in-memory form of (part of) one Level-2 image: what every fetch strategy returns and photometry reads.

A region is a rectangle of the parent 2040x2040 frame. A cutout, one row strip, and the whole file are all
regions; `x0, y0` is the 0-based parent pixel of `image[0, 0]`. Headers are kept as the file had them (a
cutout's CRPIX cards are shifted), and `parent_image_header` rebuilds the parent frame's header so that
positions are computed identically whatever region was fetched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from astropy.io import fits

from spxbatch.level2.digest import array_digest
from spxbatch.level2.epsf import EPSFTable


class PSFPlaneMissing(LookupError):
    """A measurement asked for a plane of a PSF cube read in part that was not read: a fetch-layer bug,
    never measured with zeros."""


@dataclass(frozen=True)
class PSFCube:
    """The PSF HDU: the (121, 101, 101) cube, its header (zone cards XCTR_k..., OVERSAMP), and the digest of
    the cube's content, set once: by the fetch layer, which hashed the raw bytes already, or else from the
    array here. Whatever is derived from the cube alone (the PSF model) is cached by it."""

    cube: np.ndarray
    header: fits.Header
    digest: str = field(default="", compare=False)
    #: The planes `cube` holds when it was read in part (the fetch layer reads only the zones an image's
    #: sources use, and adds to this set as later images need more); None: every plane.
    held: set[int] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        """Compute the digest when the builder did not give one (arrays made in memory)."""
        if not self.digest:
            if self.held is not None:
                raise ValueError("a PSF cube read in part needs the digest of its content")
            object.__setattr__(self, "digest", array_digest(self.cube))

    def require(self, zones: Iterable[int]) -> None:
        """Raise PSFPlaneMissing unless the cube holds every plane of `zones`."""
        if self.held is not None:  # membership tests only: the fetch layer may add planes meanwhile
            missing = sorted({int(z) for z in zones if int(z) not in self.held})
            if missing:
                raise PSFPlaneMissing(f"PSF planes {missing} were not read (the cube holds {len(self.held)} of "
                                      f"{self.cube.shape[0]})")

    @property
    def oversampling(self) -> int:
        """OVERSAMP: fine cells per native pixel (10 when the card is missing)."""
        return int(self.header.get("OVERSAMP", 10))

    @cached_property
    def zone_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """The XCTR_k and YCTR_k values (0-based parent pixels) as labelled, k = 1..planes; read once per
        cube (scanning ~500 cards is slow). Labels may be swapped (the erratum): see photometry.psf."""
        return psf_zone_centres(self.header)


#: A zone-centre card image: axis, zone number and the value field (up to a comment).
_ZONE_CARD = re.compile(r"^([XY]CTR_\d+) *= *([^/\n]*)", re.MULTILINE)


def psf_zone_centres(header: fits.Header) -> tuple[np.ndarray, np.ndarray]:
    """The XCTR_k and YCTR_k cards of a PSF header as two arrays, k = 1..NAXIS3 (or as many as there are).

    The ~250 cards are read from the header's text (astropy parses each card on access: ~10 ms a header, ~40
    under a busy GIL, paid by every image whose PSF is new to the process); a value that is not a plain
    number is read through astropy."""
    cards: dict[str, float] = {}
    for key, value in _ZONE_CARD.findall(header.tostring(sep="\n")):
        try:
            cards[key] = float(value.strip().replace("D", "E"))
        except ValueError:
            cards[key] = float(header[key])
    n = int(header.get("NAXIS3", 0)) or sum(1 for k in cards if k.startswith("XCTR_"))
    xc = np.array([cards[f"XCTR_{k}"] for k in range(1, n + 1)])
    yc = np.array([cards[f"YCTR_{k}"] for k in range(1, n + 1)])
    return xc, yc


@dataclass
class WaveTable:
    """The WCS-WAVE lookup table: control points X, Y (1-based parent pixels) and VALUES[iy, ix, 2]."""

    x: np.ndarray
    y: np.ndarray
    values: np.ndarray
    header: fits.Header


@dataclass
class ImageRegion:
    """Pixels of one rectangular region of a Level-2 image plus everything photometry needs to use them.

    Arrays are native-endian (float32 / int32) of equal shape; `x0, y0` place them in the parent frame,
    whose (ny, nx) is `parent_shape` (the fetch layer knows it from the header or the plan).
    """

    primary_header: fits.Header
    image_header: fits.Header
    flags_header: fits.Header
    image: np.ndarray
    flags: np.ndarray
    variance: np.ndarray
    zodi: np.ndarray
    x0: int
    y0: int
    wave: WaveTable
    #: The PSF model of the file: QR2's cube, or R7's ePSF table (pixel-convolved).
    psf: PSFCube | EPSFTable | None = None
    parent_shape: tuple[int, int] = (2040, 2040)
    #: Optional calibration pixels for the same region: solid angle (arcsec^2), CWAVE and CBAND (um); the fetch
    #: layer fills them around the region's sources only (NaN elsewhere), where they are sampled.
    solid_angle: np.ndarray | None = None
    cwave: np.ndarray | None = None
    cband: np.ndarray | None = None
    #: Per-pixel flux correction to apply (QR3's l3_flux_corrections on a QR2-processed image), or None.
    flux_factor: np.ndarray | None = None
    #: Where `psf` came from: 'file' (the file's own HDU), 'average_psf' or 'qr3 epsf' (calibration products).
    psf_origin: str = "file"
    #: The calibration planes attached ('product/EXTNAME'); without them solid angles come from the WCS and
    #: wavelengths from WCS-WAVE.
    calibration: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx) of the region."""
        return self.image.shape


def parent_origin(image_header: fits.Header) -> tuple[int, int]:
    """0-based parent pixel of a cutout's first pixel, from CRPIXnA (IRSA: x_orig = 1 + x_cut - CRPIX1A).

    A full frame has CRPIX1A = CRPIX2A = 1, i.e. origin (0, 0).
    """
    x0 = 1.0 - float(image_header.get("CRPIX1A", 1.0))
    y0 = 1.0 - float(image_header.get("CRPIX2A", 1.0))
    return round(x0), round(y0)


def parent_image_header(image_header: fits.Header) -> fits.Header:
    """The IMAGE header of the parent frame: CRPIX, CRPIXnA and CRPIXnW shifted back by the cutout origin."""
    x0, y0 = parent_origin(image_header)
    hdr = image_header.copy()
    if x0 == 0 and y0 == 0:
        return hdr
    for suffix in ("", "A", "W"):
        for axis, shift in ((1, x0), (2, y0)):
            key = f"CRPIX{axis}{suffix}"
            if key in hdr:
                hdr[key] = float(hdr[key]) + shift
    return hdr


def native(a: np.ndarray) -> np.ndarray:
    """The array in native byte order (FITS data is big-endian; SEP refuses it)."""
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))

