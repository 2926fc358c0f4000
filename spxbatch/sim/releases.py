"""Which detector images a simulated archive holds and in which processings, per release.

- `qr2`: QR2 (pipeline 6.x) as it was: three processing tags by planning period, two bands dropped from
  two exposures, one file superseded by a later QR2 version, a variant PSF in some long-wave files.
- `qr3`: QR3 exposures (summer 2026, pipeline R7) under `qr3/level2/`, collection `spherex_qr3`
  (`spherex_qr3_deep` with `deep`), two bands dropped.
- `mixed`: the QR2 archive, plus R7 reprocessings of some of its files under `qr2/` (a newer tag; every
  third exposure for all detectors, the next one for the short-wave detectors only), one QR2 file whose
  only reprocessing has the retry tag and one whose reprocessing was retried, plus QR3 exposures in the
  wide and the deep collection.
The processings of one (exposure, detector) are listed oldest first; the last is the one a tool measures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from spxbatch.level2.naming import level2_relpath
from spxbatch.sim import render, sky, survey
from spxbatch.sim.instrument import Detector
from spxbatch.sim.paths import strip_ibe
from spxbatch.sim.r7 import VERSION as R7_VERSION
from spxbatch.sim.r7 import is_r7
from spxbatch.sim.rng import rng_for

RELEASES = ("qr2", "qr3", "mixed")
#: Pipeline VERSION of the R7 reprocessings of QR2 exposures (QR3 files have r7.VERSION).
REPROCESSING_VERSION = "7.0.4"
#: QR3 starts in ISO week 2026W30 (MJD 61241 = 2026-07-20); its deep-field pass a few days later.
QR3_START_MJD = 61241.0
QR3_DEEP_START_MJD = 61246.0
#: QR3 processing tags by planning period (each after the period it processes).
QR3_VERSIONS = tuple((f"l2b-v27-2026-{doy}", R7_VERSION) for doy in (222, 250, 285, 320, 350))
#: Large-slew numbers of the QR3 deep pass start here, so its observation IDs never meet the wide pass's.
DEEP_LARGE_OFFSET = 5000
#: QR3 exposures in a mixed archive: wide (a fraction of the QR2 visits) and deep.
MIXED_QR3_WIDE_FRACTION = 0.5
MIXED_QR3_DEEP_VISITS = 3

_TAG_RE = re.compile(r"v(\d+)-(\d{4})-(\d{3})$")


@dataclass(frozen=True)
class Processing:
    """One processing of an image: its tag (the path's version directory), pipeline VERSION and release."""

    tag: str
    version: str
    release: str = "qr2"

    @property
    def r7(self) -> bool:
        """Whether the file has the R7 layout (pipeline major version >= 7)."""
        return is_r7(self.version)

    @property
    def layout(self) -> str:
        return "R7" if self.r7 else "QR2"

    @property
    def order(self) -> tuple[int, int, int]:
        """(tag version, year, day of year): later processings sort later ('l2b_retry-v26-2026-197' too)."""
        m = _TAG_RE.search(self.tag)
        return int(m[1]), int(m[2]), int(m[3])

    def relpath(self, obs_id: str, detector: int) -> str:
        """The file's path below the archive root."""
        return strip_ibe(level2_relpath(obs_id, detector, self.tag, self.release))


#: The R7 reprocessing of QR2 exposures, and its retry.
REPROCESSED = Processing("l2b-v26-2026-196", REPROCESSING_VERSION, "qr2")
RETRIED = Processing("l2b_retry-v26-2026-197", REPROCESSING_VERSION, "qr2")


@dataclass
class FileJob:
    """One planned detector image: its exposure, detector, sources, and its processings (oldest first)."""

    exposure: survey.Exposure
    detector: int
    where: render.Placement
    versions: list[Processing]
    psf_variant: bool = False


def plan(release: str, n_visits: int, npix: int, seed: int, field: str, deep: bool, sources, dets,
         ra0: float, dec0: float, slew_offset: int = 0) -> tuple[list[survey.Exposure], list[FileJob]]:
    """The exposures and the planned files of an archive of `release` (see the module doc); `slew_offset`
    is added to every large-slew number (observation IDs), so that fields written into one archive differ."""
    if release not in RELEASES:
        raise ValueError(f"release must be one of {', '.join(RELEASES)}, got {release!r}")
    field_args = (sources, dets, ra0, dec0, seed, field, npix)
    exposures: list[survey.Exposure] = []
    jobs: list[FileJob] = []
    if release in ("qr2", "mixed"):
        exposures = survey.plan(n_visits, npix, seed, field, deep=deep, large_offset=slew_offset)
        jobs = _plan_files(exposures, *field_args)
        if release == "mixed":
            _reprocess(jobs, exposures)
    qr3_passes = {"qr3": [(n_visits, deep)], "mixed": [
        (max(2, round(MIXED_QR3_WIDE_FRACTION * n_visits)), False), (MIXED_QR3_DEEP_VISITS, True)]}
    for visits, qr3_deep in qr3_passes.get(release, []):
        qr3 = _qr3_exposures(visits, npix, seed, field, qr3_deep, slew_offset)
        exposures += qr3
        jobs += _plan_files(qr3, *field_args, release="qr3", quirk_keys=("qr3", qr3_deep))
    ids = [e.obs_id for e in exposures]
    if len(set(ids)) != len(ids):
        raise RuntimeError("two simulated exposures share an observation ID")  # a planning bug, never data
    return exposures, jobs


def _qr3_exposures(n_visits: int, npix: int, seed: int, field: str, deep: bool,
                   slew_offset: int = 0) -> list[survey.Exposure]:
    """QR3's exposures of the field (wide, or the deep field's cadence with collection spherex_qr3_deep)."""
    return survey.plan(
        n_visits, npix, seed, field, deep=deep,
        start_mjd=QR3_DEEP_START_MJD if deep else QR3_START_MJD,
        versions=QR3_VERSIONS,
        collection="spherex_qr3_deep" if deep else "spherex_qr3",
        stream=("qr3", "deep" if deep else "wide"),
        large_offset=(DEEP_LARGE_OFFSET if deep else 0) + slew_offset,
    )


def _plan_files(exposures, sources, dets: dict[int, Detector], ra0, dec0, seed, field, npix,
                release: str = "qr2", quirk_keys: tuple = ()) -> list[FileJob]:
    """Which detector images exist: the centred pair always, the side pairs when they hold a source.

    Two centred-pair images are dropped (bands missing from an exposure). In QR2 the first centred
    short-wave image also exists in a later, superseding processing version, and the centred long-wave
    images of the first large slew's small slews 2-4 carry the variant PSF (same detector and version,
    another cube). `quirk_keys` give another release its own draws.
    """
    rng = rng_for(seed, "archive-quirks", field, *quirk_keys)
    first = exposures[0]
    qr2_quirks = release == "qr2"

    def variant(exp: survey.Exposure) -> bool:
        return qr2_quirks and (exp.period, exp.large) == (first.period, first.large) and exp.small >= 2

    jobs: list[FileJob] = []
    missing: set[tuple[int, int]] = set()
    if len(exposures) >= 3:
        for ei in rng.choice(np.arange(1, len(exposures)), size=2, replace=False):
            q = exposures[ei].centred_pair
            long_wave = rng.uniform() < 0.5 and not variant(exposures[ei])
            missing.add((int(ei), int(q + 3 if long_wave else q)))
    for ei, exp in enumerate(exposures):
        for q in (1, 2, 3):
            cra, cdec = sky.offsets_to_sky(ra0, dec0, *exp.pair_offsets[q - 1])
            for d in (q, q + 3):
                where = render.place(dets[d], (float(cra), float(cdec)), exp.pa_deg, sources,
                                     0.5 * (exp.mjd_beg + exp.mjd_end))
                centred = q == exp.centred_pair
                if not centred and not where.on_image(npix).any():
                    continue
                versions = [Processing(exp.version_dir, exp.version, release)]
                if qr2_quirks and ei == 0 and d == q and centred:
                    versions.append(Processing(*survey.SUPERSEDING))
                if (ei, d) in missing:
                    versions = []
                jobs.append(FileJob(exp, d, where, versions, centred and d > 3 and variant(exp)))
    return jobs


def _reprocess(jobs: list[FileJob], exposures: list[survey.Exposure]) -> None:
    """Add the R7 reprocessings of a mixed archive's QR2 files (see the module doc)."""
    index = {e.obs_id: i for i, e in enumerate(exposures)}
    retry_only = retried = False
    for job in jobs:
        if not job.versions:
            continue
        turn = index[job.exposure.obs_id] % 3
        if turn == 0 or (turn == 1 and job.detector <= 3):
            job.versions.append(REPROCESSED)
            if not retried and turn == 0 and job.detector > 3:
                job.versions.append(RETRIED)
                retried = True
        elif turn == 2 and not retry_only:
            job.versions.append(RETRIED)
            retry_only = True


def fixed_by_later_qr2(versions: list[Processing], index: int) -> bool:
    """Whether processing `index` is a QR2-layout one that a later QR2-layout processing superseded (the
    calibration error SUPERSEDED_GAIN that the later QR2 version fixed)."""
    return not versions[index].r7 and any(not v.r7 for v in versions[index + 1 :])
