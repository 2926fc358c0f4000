"""Jobs from the plan, built once for measuring and staging alike: one per planned image, with the catalog
positions of the sources planned on it."""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from spxbatch.archive.location import relative_to_root
from spxbatch.plan.catalog import Catalog
from spxbatch.plan.plan import Plan


@dataclass
class ImageJob:
    """One image (its plan row) and the catalog sources planned on it (small: positions only)."""

    image: dict[str, Any]
    source_index: np.ndarray
    ra: np.ndarray
    dec: np.ndarray


def image_jobs(plan: Plan, catalog: Catalog, skip: Container[int] = ()) -> list[ImageJob]:
    """One job per planned image not in `skip` (e.g. the images already measured), in image_id order,
    with its sources in catalog order."""
    images = plan.images.set_index("image_id", drop=False)
    jobs = []
    for image_id, sidx in sorted(plan.sources_by_image().items()):
        if image_id in skip:
            continue
        sidx = np.asarray(sidx, dtype=np.int64)
        jobs.append(ImageJob(images.loc[image_id].to_dict(), sidx, catalog.ra[sidx], catalog.dec[sidx]))
    return jobs


def use_staged_cutouts(jobs: list[ImageJob], cutouts: Mapping[str, dict[str, Any]]) -> None:
    """Point the jobs of images a mirror holds as cutouts at their cutout files and parent frame size
    (`cutouts`: image relpath below the root -> {'cutouts', 'ny', 'nx'}, as the mirror's manifest says)."""
    for job in jobs:
        record = cutouts.get(relative_to_root(str(job.image["relpath"])))
        if record is not None:
            job.image.update(record)
