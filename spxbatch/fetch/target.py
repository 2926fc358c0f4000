"""One image to fetch, as the plan describes it: where its bytes are, what it is, where its detector's
calibration products lie; built once from a plan images row and never changed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from spxbatch.archive.location import fsspec_location, relative_to_root
from spxbatch.fetch.options import FetchOptions
from spxbatch.level2.constants import DETECTOR_NPIX


@dataclass(frozen=True)
class ImageTarget:
    """Where one image's bytes are read from (`protocol`, `path`), its detector, processing version and
    release, its size when the plan knows it, and the parent frame's (ny, nx)."""

    path: str
    protocol: str
    detector: int
    version: str
    release: str
    #: The archive's file root (IRSA's .../ibe/data/spherex/) the calibration products lie below, if known.
    calib_base: str | None
    size: int | None
    #: The parent frame's (ny, nx) before any header is read (plan columns ny/naxis2, else 2040).
    parent_shape: tuple[int, int]
    #: Local paths of the cutouts a staged mirror holds for this image (empty: read the image itself).
    mirror_cutouts: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, image: Mapping, options: FetchOptions) -> ImageTarget:
        """The target of a plan images row (a dict or a pandas row), read from a mirror when configured."""
        protocol, path = file_location(image, options)
        short = relative_to_root(str(image["relpath"]))  # 'qr2/level2/PERIOD/VERSION/DET/file.fits'
        parts = short.split("/")
        return cls(
            path=path,
            protocol=protocol,
            detector=int(image["detector"]),
            version=_text(image.get("version")) or (parts[3] if len(parts) > 3 else ""),
            release=_text(image.get("release")) or parts[0],
            calib_base=path[: len(path) - len(short)] if path.endswith(short) else None,
            size=_positive_int(image.get("size_bytes")),
            parent_shape=(_first(image, ("ny", "naxis2", "s_xel2")), _first(image, ("nx", "naxis1", "s_xel1"))),
            mirror_cutouts=tuple(_mirror_cutouts(image, options)),
        )

    @property
    def layout_key(self) -> tuple:
        """What files laid out alike share (release, detector, parent frame): the key of the header scan's
        learned hint (`execute.scan_headers`)."""
        return ("level2", self.release, self.detector, self.parent_shape)

    @property
    def has_cutout_service(self) -> bool:
        """Whether the image is served by an IRSA-like HTTP server (S3 and local files have no cutouts)."""
        return self.protocol in ("http", "https")


def file_location(row: Mapping, options: FetchOptions) -> tuple[str, str]:
    """(protocol, path) of a plan row's file: below the local mirror root when configured, else its URL."""
    if options.file_root:
        return "file", f"{options.file_root.rstrip('/')}/{relative_to_root(str(row['relpath']))}"
    return fsspec_location(str(row["url"]))


def _mirror_cutouts(image: Mapping, options: FetchOptions) -> list[str]:
    """The local paths of the cutout files a staged mirror holds for this image (plan column `cutouts`;
    empty for a whole file or when not reading a mirror)."""
    relpaths = image.get("cutouts")
    if not options.file_root or not isinstance(relpaths, list | tuple | np.ndarray) or not len(relpaths):
        return []
    return [f"{options.file_root.rstrip('/')}/{relative_to_root(str(r))}" for r in relpaths]


def _positive_int(value) -> int | None:
    """A plan cell as a positive int; None for missing values (None, NaN, pd.NA) and non-numbers."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return int(v) if np.isfinite(v) and v > 0 else None


def _text(value) -> str:
    """A plan cell as text; '' for missing values (None, NaN, pd.NA)."""
    return value if isinstance(value, str) else ""


def _first(row: Mapping, keys: tuple[str, ...]) -> int:
    """The first positive integer among `keys` of a plan row (the frame size), else the full detector."""
    for key in keys:
        value = _positive_int(row.get(key))
        if value is not None:
            return value
    return DETECTOR_NPIX
