"""Sky geometry shared by planning, fetching and photometry: unit vectors and back, angles precise at every
separation, the mean direction of positions (robust to RA wrap-around) and gnomonic tangent-plane offsets.

All angles in and out are degrees unless a name says otherwise; arrays broadcast. The simulator keeps its own
geometry on purpose (an independent check of this one).
"""

from __future__ import annotations

import numpy as np


def unit_vectors(ra_deg, dec_deg) -> np.ndarray:
    """Cartesian unit vectors (..., 3) of positions in degrees."""
    ra, dec = np.broadcast_arrays(np.radians(np.asarray(ra_deg, dtype=np.float64)),
                                  np.radians(np.asarray(dec_deg, dtype=np.float64)))
    cos_dec = np.cos(dec)
    return np.stack([cos_dec * np.cos(ra), cos_dec * np.sin(ra), np.sin(dec)], axis=-1)


def radec_of(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ra in [0, 360), dec) in degrees of (not necessarily unit) vectors (..., 3)."""
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    ra = np.degrees(np.arctan2(y, x)) % 360.0
    return ra, np.degrees(np.arctan2(z, np.hypot(x, y)))


def angle_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle (rad) between rows of vector arrays (n, 3): atan2(|a x b|, a . b), precise from 0 to 180 deg
    (an arccos of the dot product loses half the digits near 0)."""
    return np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), np.einsum("...i,...i->...", a, b))


def separation_deg(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle separation (deg) of two sets of positions (deg), precise at every angle."""
    return np.degrees(angle_between(*np.broadcast_arrays(unit_vectors(ra1, dec1), unit_vectors(ra2, dec2))))


def mean_direction(ra_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[float, float]:
    """(ra, dec) in degrees of the sum of the positions' unit vectors: their centre, robust to RA
    wrap-around (359.9 and 0.1 average to 0, not 180)."""
    r, d = np.deg2rad(ra_deg), np.deg2rad(dec_deg)
    v = np.array([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)]).sum(axis=1)
    return float(np.rad2deg(np.arctan2(v[1], v[0])) % 360.0), float(np.rad2deg(np.arcsin(v[2] / np.linalg.norm(v))))


def tangent_offsets(ra_deg: np.ndarray, dec_deg: np.ndarray, ra0_deg: float,
                    dec0_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic (TAN) offsets (rad) of positions from the tangent point (ra0, dec0): (east, north), i.e.
    standard coordinates xi, eta."""
    ra0, dec0 = np.deg2rad(ra0_deg), np.deg2rad(dec0_deg)
    r, d = np.deg2rad(ra_deg), np.deg2rad(dec_deg)
    cosc = np.sin(dec0) * np.sin(d) + np.cos(dec0) * np.cos(d) * np.cos(r - ra0)
    xi = np.cos(d) * np.sin(r - ra0) / cosc
    eta = (np.cos(dec0) * np.sin(d) - np.sin(dec0) * np.cos(d) * np.cos(r - ra0)) / cosc
    return xi, eta


#: MJD of J2000.0 and days per Julian year.
MJD_J2000 = 51544.5
JULIAN_YEAR_D = 365.25


def epoch_mjd(epoch) -> np.ndarray:
    """Catalog epochs as MJD: Julian years (e.g. 2016.0, Gaia DR3) below 3000, JD above 2,400,000, else MJD."""
    e = np.asarray(epoch, dtype=np.float64)
    return np.where(e < 3000, MJD_J2000 + (e - 2000.0) * JULIAN_YEAR_D, np.where(e > 2.4e6, e - 2400000.5, e))


def propagate(ra_deg, dec_deg, pmra_masyr, pmdec_masyr, from_mjd, to_mjd) -> tuple[np.ndarray, np.ndarray]:
    """Positions moved by their proper motions (mas/yr; pmra includes cos dec, as Gaia's) from `from_mjd`
    to `to_mjd`: along the local east and north directions, then back onto the sphere (exact for the
    arcsec-to-arcmin motions of stars over a few years). NaN motions move nothing."""
    dt_yr = (np.asarray(to_mjd, dtype=np.float64) - np.asarray(from_mjd, dtype=np.float64)) / JULIAN_YEAR_D
    mas = np.radians(1.0 / 3.6e6)
    east = np.nan_to_num(np.asarray(pmra_masyr, dtype=np.float64)) * dt_yr * mas
    north = np.nan_to_num(np.asarray(pmdec_masyr, dtype=np.float64)) * dt_yr * mas
    ra, dec = np.radians(np.asarray(ra_deg, dtype=np.float64)), np.radians(np.asarray(dec_deg, dtype=np.float64))
    v = unit_vectors(ra_deg, dec_deg)
    e = np.stack([-np.sin(ra), np.cos(ra), np.zeros_like(ra)], axis=-1)
    n = np.stack([-np.sin(dec) * np.cos(ra), -np.sin(dec) * np.sin(ra), np.cos(dec)], axis=-1)
    return radec_of(v + east[..., None] * e + north[..., None] * n)
