"""Deterministic random streams for the simulator: one independent generator per named purpose.

Every random draw is keyed by (seed, purpose, ...) so that adding a draw in one place never shifts the
numbers drawn anywhere else, and the same seed always gives the same archive.
"""

from __future__ import annotations

import zlib

import numpy as np


def rng_for(seed: int, *keys: object) -> np.random.Generator:
    """A generator keyed by the archive seed and any labels (strings or ints)."""
    words = [int(seed) & 0xFFFFFFFF] + [zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(words))


#: Seed of the simulated instrument (optics, LVF, PSF, defects): fixed, so calibration products are the
#: same in every simulated archive whatever its sky seed.
INSTRUMENT_SEED = 20250311
