"""Forced aperture photometry of catalog sources on one Level-2 image region (vectorised over sources)."""

from spxbatch.photometry.aperture import neighbourhood_halfsize
from spxbatch.photometry.config import PhotometryConfig
from spxbatch.photometry.measure import measure_region
from spxbatch.photometry.positions import sky_to_parent_pixel
from spxbatch.photometry.quality import CONDITION_BITS, good_verdict

__all__ = [
    "CONDITION_BITS",
    "PhotometryConfig",
    "good_verdict",
    "measure_region",
    "neighbourhood_halfsize",
    "sky_to_parent_pixel",
]
