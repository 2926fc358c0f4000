"""Header cards of a simulated Level-2 file: PRIMARY and the cards every image plane carries, per layout.

QR2 and R7 files share the mission, processing and exposure cards and the celestial, pixel and spectral
WCS; R7 adds its IMAGE cards (`r7.image_cards`) and counts its own flag bits.
"""

from __future__ import annotations

import numpy as np

from spxbatch.level2.constants import EXPOSURE_S, FLAG_BITS
from spxbatch.sim import mef, optics, r7, survey
from spxbatch.sim.instrument import Detector
from spxbatch.sim.releases import FileJob, Processing

#: Header card in PRIMARY naming the collection (e.g. 'spherex_qr2', 'spherex_qr3_deep').
COLLECTION_CARD = "COLLECTN"


def _iso(mjd: float) -> str:
    """ISO-8601 UTC string (ms) of an MJD, for the DATE-* cards."""
    return survey.mjd_to_datetime(mjd).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def primary_cards(job: FileJob, date: str, proc: Processing, seed: int) -> list[mef.Card]:
    """PRIMARY header cards of one file: mission, processing (date, pipeline version, tag), exposure."""
    exp = job.exposure
    return [
        ("TELESCOP", "SPHEREx", ""),
        ("INSTRUME", "SPHEREx", ""),
        ("ORIGIN", "spxbatch.sim", f"Simulated IRSA {'R7' if proc.r7 else 'QR2'} Level-2 image"),
        ("DATE", date, "File creation date (processing date)"),
        ("VERSION", proc.version, "Pipeline version"),
        (COLLECTION_CARD, exp.collection, "IRSA collection (wide or deep survey)"),
        ("OBSID", exp.obs_id, "Observation ID"),
        ("DETECTOR", job.detector, "Detector (band) number"),
        ("PROCTAG", proc.tag, "Processing version directory"),
        ("SIMSEED", seed, "Simulator seed"),
    ]


def image_cards(job: FileJob, det: Detector, flags: np.ndarray, date: str, r7_layout: bool) -> list[mef.Card]:
    """Cards of every image plane: exposure times, PSF and solid angle, the SIP and spectral WCS, flag counts
    (R7: its IMAGE cards too, and counts of its own bits)."""
    exp = job.exposure
    bits = r7.R7_FLAG_BITS if r7_layout else FLAG_BITS
    counts = [
        (f"L2 N_{name}", int(np.count_nonzero(flags & (1 << b))), f"Pixels flagged {name}") for name, b in bits.items()
    ]
    return [
        ("DETECTOR", job.detector, "Detector (band) number"),
        ("OBSID", exp.obs_id, "Observation ID"),
        ("EXPIDN", exp.expidn, "Exposure ID"),
        ("DATE", date, "File creation date"),
        ("TIMESYS", "UTC", ""),
        ("MJD-BEG", exp.mjd_beg, "[d] Exposure start (MJD, UTC)"),
        ("MJD-END", exp.mjd_end, "[d] Exposure end (MJD, UTC)"),
        ("MJD-AVG", exp.mjd_avg, "[d] Exposure mid-time (MJD, UTC)"),
        ("MJD-OBS", exp.mjd_beg, "[d] Observation start (MJD, UTC)"),
        ("DATE-OBS", _iso(exp.mjd_beg), "Exposure start (UTC)"),
        ("DATE-BEG", _iso(exp.mjd_beg), "Exposure start (UTC)"),
        ("DATE-AVG", _iso(exp.mjd_avg), "Exposure mid-time (UTC)"),
        ("DATE-END", _iso(exp.mjd_end), "Exposure end (UTC)"),
        ("XPOSURE", EXPOSURE_S, "[s] Exposure time"),
        *(r7.image_cards(det.npix) if r7_layout else []),
        ("PSF_FWHM", round(det.psf_fwhm_arcsec, 3), "[arcsec] PSF core FWHM at the array centre"),
        ("OMEGA_MEDIAN", round(det.omega_median, 4), "[arcsec2] Median pixel solid angle"),
        *optics.celestial_cards(det.optics, job.where.crval[0], job.where.crval[1], exp.pa_deg),
        *optics.pixel_cards(),
        *mef.spectral_cards(),
        *counts,
    ]
