"""Content digests of arrays: the keys by which PSF models are cached and told apart."""

from __future__ import annotations

import hashlib

import numpy as np


def array_digest(a: np.ndarray) -> str:
    """The content digest of an array: sha1 of its big-endian bytes, i.e. of the bytes a FITS file holds
    (so a cube read from a file and the same cube made in memory have one digest)."""
    big = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder(">"))
    return hashlib.sha1(big.view(np.uint8).reshape(-1)).hexdigest()
