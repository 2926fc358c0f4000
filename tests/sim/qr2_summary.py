"""A machine-independent summary of Level-2 files: header cards (floats to 8 significant digits, checksums
left out) hashed per HDU, and each data array's sum and sum of absolute values.

Raw byte digests differed between machines (last-bit float differences of the simulator's maths on other
CPUs and time libraries), so the QR2 regression test compares these summaries instead: any real change
to what the simulator writes moves a card or a sum far beyond the tolerances used.
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

import numpy as np
from astropy.io import fits

#: Cards that change with every byte of the data, not with what the file says.
UNSUMMARISED = {"CHECKSUM", "DATASUM"}


def _card_text(key: str, value: object) -> str:
    """One card as text, floats rounded so that last-bit differences do not show."""
    if isinstance(value, float):
        return f"{key}={value:.8g}"
    return f"{key}={value!r}"


def summarise(root: str | Path, relpaths: list[str]) -> dict[str, dict[str, list]]:
    """file name -> HDU name -> [header digest, data sum, data sum of |values|] (sums None without data)."""
    out: dict[str, dict[str, list]] = {}
    for rel in relpaths:
        per_hdu: dict[str, list] = {}
        with fits.open(Path(root) / rel, disable_image_compression=True) as hdul:
            for hdu in hdul:
                text = "\n".join(_card_text(k, v) for k, v in hdu.header.items() if k not in UNSUMMARISED)
                digest = hashlib.sha256(text.encode()).hexdigest()[:16]
                sums: list = [None, None]
                if isinstance(hdu, fits.BinTableHDU):
                    data = np.concatenate([np.asarray(hdu.data[c], dtype=float).ravel() for c in hdu.columns.names])
                    sums = [float(np.nansum(data)), float(np.nansum(np.abs(data)))]
                elif hdu.data is not None:
                    data = np.asarray(hdu.data, dtype=float)
                    sums = [float(np.nansum(data)), float(np.nansum(np.abs(data)))]
                per_hdu[hdu.name] = [digest, *sums]
        out[PurePosixPath(rel).name] = per_hdu
    return out
