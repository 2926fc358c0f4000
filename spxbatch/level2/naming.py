"""How IRSA names SPHEREx files: observation IDs, publisher DIDs, archive roots and relative paths."""

from __future__ import annotations

import re

#: Relative root of the spectral images inside an archive (IRSA: https://irsa.ipac.caltech.edu/<this>).
IBE_ROOT = "ibe/data/spherex"


#: The real archive.
IRSA_BASE_URL = "https://irsa.ipac.caltech.edu"


#: The AWS mirror: bucket root = IBE_ROOT.
S3_BUCKET = "nasa-irsa-spherex"


_OBS_ID_RE = re.compile(r"^(?P<period>\d{4}W\d{2}_\d[A-Z])_(?P<large>\d{4})_(?P<small>\d)$")


_DID_RE = re.compile(r"\?([^/]+)/D(\d)")


#: A Level-2 processing tag as it appears in paths: 'l2b-v21-2025-354', or a retry 'l2b_retry-v26-2026-197'.
PROCESSING_TAG_RE = re.compile(r"l2b(?:_retry)?-v(\d+)-(\d{4})-(\d{3})")


#: The exposure in a Level-2 file name: level2_<period>_<large>_<small>D<detector>_spx_...
_FILE_RE = re.compile(r"level2_(\d{4}W\d{2}_\d[A-Z]_\d{4})_(\d)D(\d)_")


def exposure_of_name(path: str) -> tuple[str, int] | None:
    """(obs_id, detector) that a Level-2 file's name gives, or None for another name."""
    m = _FILE_RE.search(path)
    return (f"{m[1]}_{m[2]}", int(m[3])) if m else None


def processing_tag(path: str) -> str:
    """The processing tag in a path ('' when it has none)."""
    m = PROCESSING_TAG_RE.search(path)
    return m.group(0) if m else ""


def version_key(version: str) -> tuple[int, int, int]:
    """Sort key of a processing tag, newest last: (tag version, year, day of year), so a retry of v26 made
    a day later sorts after the v26 it retried; unknown tags sort first."""
    m = PROCESSING_TAG_RE.fullmatch(version or "")
    return (int(m[1]), int(m[2]), int(m[3])) if m else (-1, -1, -1)


def obs_id_parts(obs_id: str) -> tuple[str, int, int]:
    """('2025W18_2B', large slew, small slew) from an observation ID like '2025W18_2B_0001_1'."""
    m = _OBS_ID_RE.match(obs_id)
    if not m:
        raise ValueError(f"not a SPHEREx observation ID: {obs_id!r}")
    return m["period"], int(m["large"]), int(m["small"])


def parse_did(did: str) -> tuple[str, int]:
    """(obs_id, detector) from an obs_publisher_did like 'ivo://irsa.ipac/spherex_qr2?2025W49_1A_0332_1/D2'."""
    m = _DID_RE.search(did)
    if not m:
        raise ValueError(f"not a SPHEREx publisher DID: {did!r}")
    return m.group(1), int(m.group(2))


def make_did(obs_id: str, detector: int, collection: str = "spherex_qr2") -> str:
    """The obs_publisher_did of one detector image."""
    return f"ivo://irsa.ipac/{collection}?{obs_id}/D{detector}"


def level2_relpath(obs_id: str, detector: int, version: str, release: str = "qr2") -> str:
    """IRSA's relative path (no leading slash) of a Level-2 image below the archive root.

    `version` is the processing directory tag, e.g. 'l2b-v20-2025-253'.
    """
    period, _, _ = obs_id_parts(obs_id)
    return (
        f"{IBE_ROOT}/{release}/level2/{period}/{version}/{detector}/"
        f"level2_{obs_id[: -2]}_{obs_id[-1]}D{detector}_spx_{version}.fits"
    )


#: Calibration products: (folder, file stem, version tag) below `{IBE_ROOT}/{release}/`.
CALIBRATION_PRODUCTS: dict[str, tuple[str, str, str]] = {
    "solid_angle_pixel_map": ("solid_angle_pixel_map", "solid_angle_pixel_map", "cal-sapm-v2-2025-164"),
    "spectral_wcs": ("spectral_wcs", "spectral_wcs", "cal-wcs-v4-2025-254"),
    "average_psf": ("average_psf", "average_psf", "cal-psf-v3-2025-254"),
}


def calibration_relpath(product: str, detector: int, release: str = "qr2") -> str:
    """Relative path of one detector's calibration file, e.g. the solid-angle pixel map of D3."""
    folder, stem, version = CALIBRATION_PRODUCTS[product]
    return f"{IBE_ROOT}/{release}/{folder}/{version}/{detector}/{stem}_D{detector}_spx_{version}.fits"

