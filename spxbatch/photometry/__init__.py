"""Forced aperture and PSF photometry of catalog sources on one Level-2 image region (vectorised over sources).

The public names are imported on first use, so that the quality rules and the config (all that plotting
and `spxbatch qc` need) load without SEP and the measurement engine."""

from __future__ import annotations

from typing import Any

_LAZY = {"neighbourhood_halfsize": "aperture", "PhotometryConfig": "config", "measure_region": "measure",
         "measure_regions": "measure",
         "CONDITION_BITS": "conditions", "good_verdict": "quality"}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'spxbatch.photometry' has no attribute {name!r}")


__all__ = [
    "CONDITION_BITS",
    "PhotometryConfig",
    "good_verdict",
    "measure_region",
    "measure_regions",
    "neighbourhood_halfsize",
]
