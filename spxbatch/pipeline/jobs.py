"""Jobs from the plan, built once for measuring and staging alike: one per planned image, with the catalog
positions of the sources planned on it."""

from __future__ import annotations

import logging
from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from spxbatch.archive.location import relative_to_root
from spxbatch.plan.catalog import Catalog
from spxbatch.plan.plan import Plan, split_by_image
from spxbatch.sky import epoch_mjd, propagate

log = logging.getLogger(__name__)

#: The epoch of a catalog with proper motions and no epoch column (Julian year; Gaia DR3's).
DEFAULT_EPOCH = 2016.0


@dataclass
class ImageJob:
    """One image (its plan row) and the catalog sources planned on it (small: positions only), with their
    proper motions (pmra, pmdec in mas/yr, catalog epoch as MJD) when the catalog has them."""

    image: dict[str, Any]
    source_index: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    motion: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def mid_mjd(self) -> float:
        """The image's mid-exposure MJD, from the plan row (NaN when the plan has no times)."""
        try:
            return 0.5 * (float(self.image["mjd_start"]) + float(self.image["mjd_end"]))
        except (KeyError, TypeError, ValueError):
            return float("nan")

    def positions(self) -> tuple[np.ndarray, np.ndarray, float]:
        """The sources' positions at the image's mid-exposure time (moved by their proper motions), and that
        MJD; the catalog positions and NaN when there are no motions (or no time to move them to)."""
        when = self.mid_mjd
        if self.motion is None or not np.isfinite(when):
            return self.ra, self.dec, float("nan")
        pmra, pmdec, epoch = self.motion
        ra, dec = propagate(self.ra, self.dec, pmra, pmdec, epoch, when)
        return ra, dec, when


def image_jobs(plan: Plan, catalog: Catalog, skip: Container[int] = ()) -> Iterator[ImageJob]:
    """One job per planned image not in `skip` (e.g. the images already measured), in image_id order,
    with its sources in catalog order; made lazily, one plan partition at a time, so the client holds one
    partition's pairs and the jobs in flight, not the whole run's."""
    images = plan.images.set_index("image_id", drop=False)
    motion = catalog_motion(catalog)
    for part in plan.partitions():
        for image_id, sidx in split_by_image(part).items():
            if image_id in skip:
                continue
            sidx = np.asarray(sidx, dtype=np.int64)
            yield ImageJob(images.loc[image_id].to_dict(), sidx, catalog.ra[sidx], catalog.dec[sidx],
                           None if motion is None else tuple(m[sidx] for m in motion))


def catalog_motion(catalog: Catalog) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(pmra, pmdec, epoch MJD) of every catalog source when it has proper motions (NaN counts as none); a
    catalog with motions but no epoch column is taken at J2016.0 (Gaia DR3's), with a warning."""
    pmra, pmdec = catalog.pmra, catalog.pmdec
    if pmra is None or pmdec is None:
        return None
    pmra = np.nan_to_num(np.asarray(pmra, dtype=np.float64))
    pmdec = np.nan_to_num(np.asarray(pmdec, dtype=np.float64))
    if catalog.epoch is None:
        log.warning("the catalog has proper motions but no epoch column: positions taken at J%.1f", DEFAULT_EPOCH)
        epoch = np.full(pmra.size, DEFAULT_EPOCH)
    else:
        epoch = np.asarray(catalog.epoch, dtype=np.float64)
    return pmra, pmdec, epoch_mjd(epoch)


def use_staged_cutouts(jobs: Iterable[ImageJob], cutouts: Mapping[str, dict[str, Any]]) -> Iterator[ImageJob]:
    """The jobs, those of images a mirror holds as cutouts pointed at their cutout files and parent frame size
    (`cutouts`: image relpath below the root -> {'cutouts', 'ny', 'nx'}, as the mirror's manifest says), one
    at a time as they are taken."""
    for job in jobs:
        record = cutouts.get(relative_to_root(str(job.image["relpath"])))
        if record is not None:
            job.image.update(record)
        yield job
