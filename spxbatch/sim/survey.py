"""Survey-like pointings of a field: planning periods, large slews with 1-4 small slews, repeat visits.

Each large slew centres one detector pair on the field (D3/D6, then D2/D5, then D1/D4, as a source crosses
the focal plane); the other two pairs see the adjacent sky on either side. Small slews 129 s apart step
the field along the LVF axis, so every visit sees a source at a new wavelength. Planning periods are weeks
apart and each is processed by a different pipeline version (one of them the PSF-erratum version).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from spxbatch.level2.constants import PIXEL_SCALE_ARCSEC, SMALL_SLEW_SPACING_S, TIME_BOUNDS_SPAN_S
from spxbatch.sim.rng import rng_for

#: Science operations start, MJD (2025-05-01).
START_MJD = 60796.0
#: One orbit (d): the deep fields are revisited about every orbit.
ORBIT_D = 98.6 / 1440.0
#: Processing version directory and pipeline VERSION by planning period index (later ones use the last).
VERSIONS = (
    ("l2b-v20-2025-253", "6.5.4+psffix1"),
    ("l2b-v20-2025-262", "6.5.4"),  # PSF zone cards with x and y swapped (the erratum)
    ("l2b-v21-2025-354", "6.5.6"),
)
#: The version that supersedes one file of the first period.
SUPERSEDING = VERSIONS[2]
#: Pair centres along the focal-plane x axis, in detector widths (pair 1 = D1/D4, ...).
PAIR_SPACING = 1.03
#: Large-slew dither (fraction of a detector width, each axis) and small-slew step along y.
DITHER = 0.10
SMALL_STEP = 0.07


@dataclass(frozen=True)
class Exposure:
    """One exposure (one obs_id): when, where the boresight points, and how it was processed."""

    obs_id: str
    period: str
    period_index: int
    large: int
    small: int
    mjd_beg: float
    mjd_end: float
    centred_pair: int
    pa_deg: float
    #: Tangent-plane offset (arcsec, east, north) of each pair's centre from the field centre, pairs 1-3.
    pair_offsets: tuple[tuple[float, float], ...]
    version_dir: str
    version: str
    collection: str
    expidn: int

    @property
    def mjd_avg(self) -> float:
        """Mid-exposure MJD."""
        return 0.5 * (self.mjd_beg + self.mjd_end)


def mjd_to_datetime(mjd: float) -> datetime:
    """UTC datetime of an MJD."""
    return datetime(1858, 11, 17) + timedelta(days=float(mjd))


def period_name(mjd: float, index: int) -> str:
    """A planning-period name like '2025W18_2B' (ISO year and week, half week, a letter)."""
    dt = mjd_to_datetime(mjd)
    year, week, weekday = dt.isocalendar()
    half = 1 if weekday <= 3 else 2
    return f"{year}W{week:02d}_{half}{'ABC'[index % 3]}"


def _slew_counts(n_visits: int, rng: np.random.Generator) -> list[int]:
    """Small slews per large slew (1-4, summing to n_visits).

    The first three large slews (one per detector pair) get at least two exposures each when the budget
    allows, so every band sees a source more than once; with enough visits one large slew has 4 small
    slews and one has a single exposure.
    """
    counts = [4, int(rng.integers(2, 5)), int(rng.integers(2, 5))]
    if n_visits > sum(counts):
        counts.append(1)
    while sum(counts) < n_visits:
        counts.append(int(rng.integers(1, 5)))
    keep_first = n_visits >= 9
    while sum(counts) > n_visits:
        rest = counts[1:] if keep_first else counts
        counts[int(np.argmax(rest)) + keep_first] -= 1
    return [c for c in counts if c > 0]


def plan(
    n_visits: int,
    npix: int,
    seed: int,
    field: str,
    deep: bool = False,
    *,
    start_mjd: float = START_MJD,
    versions: tuple[tuple[str, str], ...] = VERSIONS,
    collection: str | None = None,
    stream: tuple[str, ...] = (),
    large_offset: int = 0,
) -> list[Exposure]:
    """The exposures that target the field, in time order (n_visits of them).

    The defaults give QR2's survey. Another release passes its own start, processing versions (by planning
    period), collection, random `stream` (labels added to the key) and a large-slew number offset that
    keeps its observation IDs apart from another plan's.
    """
    rng = rng_for(seed, "survey", field, *stream)
    width = npix * PIXEL_SCALE_ARCSEC
    counts = _slew_counts(n_visits, rng)
    per_period = 6 if deep else 2
    collection = collection or ("spherex_qr2_deep" if deep else "spherex_qr2")
    exposures: list[Exposure] = []
    t_period = start_mjd + float(rng.uniform(0, 3))
    period_pa = float(rng.uniform(0, 360))
    large = int(rng.integers(1, 60)) + large_offset
    for li, n_small in enumerate(counts):
        pi = li // per_period
        if li % per_period == 0 and li > 0:
            t_period += float(rng.uniform(10, 30)) if not deep else float(rng.uniform(3.5, 8))
            period_pa = float(rng.uniform(0, 360))
            large = int(rng.integers(1, 60)) + large_offset
        pname = period_name(t_period, pi)
        vdir, version = versions[min(pi, len(versions) - 1)]
        if deep:
            t_large = t_period + (li % per_period) * ORBIT_D + float(rng.uniform(0, 0.01))
        else:
            t_large = t_period + 0.2 + (li % per_period) * float(rng.uniform(0.3, 1.5))
        large += int(rng.integers(1, 40))
        pa = period_pa + float(rng.normal(0, 2.0))
        t = np.radians(pa)
        ex = np.array([-np.cos(t), np.sin(t)])
        ey = np.array([np.sin(t), np.cos(t)])
        centred = 3 - li % 3
        dither = rng.uniform(-DITHER, DITHER, 2) * width
        for s in range(n_small):
            step = (s - (n_small - 1) / 2) * SMALL_STEP * width
            bore = dither[0] * ex + (dither[1] + step) * ey
            offsets = tuple(
                tuple(float(c) for c in bore + (q - centred) * PAIR_SPACING * width * ex) for q in (1, 2, 3)
            )
            beg = t_large + s * SMALL_SLEW_SPACING_S / 86400.0
            exposures.append(
                Exposure(
                    obs_id=f"{pname}_{large:04d}_{s + 1}",
                    period=pname,
                    period_index=pi,
                    large=large,
                    small=s + 1,
                    mjd_beg=beg,
                    mjd_end=beg + TIME_BOUNDS_SPAN_S / 86400.0,
                    centred_pair=centred,
                    pa_deg=pa % 360.0,
                    pair_offsets=offsets,
                    version_dir=vdir,
                    version=version,
                    collection=collection,
                    expidn=int(seed % 1000) * 100000 + len(exposures) + 1,
                )
            )
    return exposures
