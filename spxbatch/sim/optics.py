"""Detector geometry: the TAN-SIP celestial WCS of each detector and its per-pixel solid angle.

Each detector has fixed optics (pixel scale, parity, a small third-order distortion); an exposure only
sets where it points (CRVAL) and its position angle. D4-D6 see the sky through the dichroic's reflection,
so their parity is flipped (footprints wind the other way). The inverse SIP (AP/BP) is a least-squares fit
to the forward distortion, good to far below 1e-3 px.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS

from spxbatch.level2.constants import PIXEL_SCALE_ARCSEC
from spxbatch.sim.rng import INSTRUMENT_SEED, rng_for

#: Detectors whose images are mirrored on the sky.
FLIPPED = frozenset({4, 5, 6})
SIP_ORDER = 3
#: Typical size of the normalised distortion coefficients (edge displacement ~ this x npix/2 px).
_SIP_SCALE = 4e-4


@dataclass(frozen=True)
class Optics:
    """Fixed optics of one detector at a given image size."""

    detector: int
    npix: int
    scale_deg: float
    flipped: bool
    rotation_deg: float
    a: dict[tuple[int, int], float]
    b: dict[tuple[int, int], float]
    ap: dict[tuple[int, int], float]
    bp: dict[tuple[int, int], float]

    @property
    def crpix(self) -> float:
        """CRPIX1 = CRPIX2 (1-based), the detector centre."""
        return (self.npix + 1) / 2.0


def _terms(lo: int) -> list[tuple[int, int]]:
    return [(p, q) for p in range(SIP_ORDER + 1) for q in range(SIP_ORDER + 1) if lo <= p + q <= SIP_ORDER]


def _poly(coef: dict[tuple[int, int], float], u: np.ndarray, v: np.ndarray) -> np.ndarray:
    out = np.zeros_like(u, dtype=float)
    for (p, q), c in coef.items():
        out = out + c * u**p * v**q
    return out


def optics(detector: int, npix: int) -> Optics:
    """The optics of a detector (deterministic: the instrument is the same in every archive)."""
    rng = rng_for(INSTRUMENT_SEED, "sip", detector)
    half = npix / 2.0
    a = {t: float(rng.normal(0, _SIP_SCALE)) * half ** (1 - sum(t)) for t in _terms(2)}
    b = {t: float(rng.normal(0, _SIP_SCALE)) * half ** (1 - sum(t)) for t in _terms(2)}
    # Fit the inverse on a grid a little larger than the detector.
    g = np.linspace(-half - 2, half + 2, 41)
    u, v = (m.ravel() for m in np.meshgrid(g, g))
    uu, vv = u + _poly(a, u, v), v + _poly(b, u, v)
    terms = _terms(1)
    design = np.stack([uu**p * vv**q for p, q in terms], axis=1)
    cap, *_ = np.linalg.lstsq(design, u - uu, rcond=None)
    cbp, *_ = np.linalg.lstsq(design, v - vv, rcond=None)
    ap = {t: float(c) for t, c in zip(terms, cap, strict=True)}
    bp = {t: float(c) for t, c in zip(terms, cbp, strict=True)}
    scale = PIXEL_SCALE_ARCSEC * (1 + 0.002 * (detector - 3.5)) / 3600.0
    rot = float(rng.normal(0, 0.15))
    return Optics(detector, npix, scale, detector in FLIPPED, rot, a, b, ap, bp)


def cd_matrix(opt: Optics, pa_deg: float) -> np.ndarray:
    """CD matrix (deg/px) at position angle `pa_deg` (angle of +y from north, towards east)."""
    t = np.radians(pa_deg + opt.rotation_deg)
    c, s = np.cos(t), np.sin(t)
    cd = opt.scale_deg * np.array([[-c, s], [s, c]])
    if opt.flipped:
        cd = cd @ np.diag([-1.0, 1.0])
    return cd


def celestial_cards(opt: Optics, ra: float, dec: float, pa_deg: float) -> list[tuple[str, object, str]]:
    """Header cards of the TAN-SIP celestial WCS (1-based pixels) pointing at (ra, dec)."""
    cd = cd_matrix(opt, pa_deg)
    cards: list[tuple[str, object, str]] = [
        ("WCSAXES", 2, "Number of WCS axes"),
        ("WCSNAME", "SKY", "Celestial coordinates"),
        ("CTYPE1", "RA---TAN-SIP", "Gnomonic projection with SIP distortion"),
        ("CTYPE2", "DEC--TAN-SIP", "Gnomonic projection with SIP distortion"),
        ("CUNIT1", "deg", ""),
        ("CUNIT2", "deg", ""),
        ("CRPIX1", opt.crpix, "Reference pixel (1-based)"),
        ("CRPIX2", opt.crpix, "Reference pixel (1-based)"),
        ("CRVAL1", float(ra % 360.0), "[deg] RA at reference pixel"),
        ("CRVAL2", float(dec), "[deg] Dec at reference pixel"),
        ("CD1_1", float(cd[0, 0]), ""),
        ("CD1_2", float(cd[0, 1]), ""),
        ("CD2_1", float(cd[1, 0]), ""),
        ("CD2_2", float(cd[1, 1]), ""),
        ("RADESYS", "ICRS", ""),
        ("A_ORDER", SIP_ORDER, "SIP polynomial order, axis 1"),
    ]
    cards += [(f"A_{p}_{q}", c, "") for (p, q), c in opt.a.items()]
    cards.append(("B_ORDER", SIP_ORDER, "SIP polynomial order, axis 2"))
    cards += [(f"B_{p}_{q}", c, "") for (p, q), c in opt.b.items()]
    cards.append(("AP_ORDER", SIP_ORDER, "Inverse SIP order, axis 1"))
    cards += [(f"AP_{p}_{q}", c, "") for (p, q), c in opt.ap.items()]
    cards.append(("BP_ORDER", SIP_ORDER, "Inverse SIP order, axis 2"))
    cards += [(f"BP_{p}_{q}", c, "") for (p, q), c in opt.bp.items()]
    return cards


def pixel_cards(x0: int = 0, y0: int = 0) -> list[tuple[str, object, str]]:
    """Alternate WCS 'A': 0-based parent pixel coordinates (a full frame has CRPIXnA = 1)."""
    return [
        ("WCSAXESA", 2, ""),
        ("WCSNAMEA", "PIXEL", "Zero-based parent pixel coordinates"),
        ("CTYPE1A", "X", ""),
        ("CTYPE2A", "Y", ""),
        ("CRPIX1A", float(1 - x0), ""),
        ("CRPIX2A", float(1 - y0), ""),
        ("CRVAL1A", 0.0, ""),
        ("CRVAL2A", 0.0, ""),
        ("CDELT1A", 1.0, ""),
        ("CDELT2A", 1.0, ""),
    ]


def make_wcs(opt: Optics, ra: float, dec: float, pa_deg: float) -> WCS:
    """An astropy WCS equal to the one the cards describe (for placing sources)."""
    from astropy.io import fits

    hdr = fits.Header()
    hdr["NAXIS"] = 2
    hdr["NAXIS1"] = opt.npix
    hdr["NAXIS2"] = opt.npix
    for k, v, c in celestial_cards(opt, ra, dec, pa_deg):
        hdr[k] = (v, c)
    return WCS(hdr)


def _grid(coef: dict[tuple[int, int], float], g: np.ndarray) -> np.ndarray:
    """A SIP polynomial on the square grid g x g, [v, u] order, as one matrix product (fast at 2040^2)."""
    c = np.zeros((SIP_ORDER + 1, SIP_ORDER + 1))
    for (p, q), val in coef.items():
        c[q, p] = val
    powers = g[:, None] ** np.arange(SIP_ORDER + 1)[None, :]
    return powers @ c @ powers.T


def _derivative(coef: dict[tuple[int, int], float], wrt: int) -> dict[tuple[int, int], float]:
    """Coefficients of d/du (wrt=0) or d/dv (wrt=1) of a SIP polynomial."""
    out: dict[tuple[int, int], float] = {}
    for (p, q), c in coef.items():
        k = (p, q)[wrt]
        if k:
            key = (p - 1, q) if wrt == 0 else (p, q - 1)
            out[key] = out.get(key, 0.0) + c * k
    return out


def solid_angle_map(opt: Optics) -> np.ndarray:
    """Solid angle of every pixel (arcsec^2): |det CD| x SIP Jacobian x the TAN area factor, at centres."""
    g = np.arange(opt.npix) + 1.0 - opt.crpix
    jac = (1 + _grid(_derivative(opt.a, 0), g)) * (1 + _grid(_derivative(opt.b, 1), g))
    jac -= _grid(_derivative(opt.a, 1), g) * _grid(_derivative(opt.b, 0), g)
    uu = _grid(opt.a, g)
    uu += g[None, :]
    vv = _grid(opt.b, g)
    vv += g[:, None]
    t = uu * uu
    t += vv * vv
    t *= np.radians(opt.scale_deg) ** 2
    t += 1.0
    t *= np.sqrt(t)
    return (opt.scale_deg * 3600.0) ** 2 * jac / t
