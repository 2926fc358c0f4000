"""Where a detector's calibration product lies, found through the archive's own folder listings: the newest
delivery tag of `{release}/{product}/` that holds the detector's folder, and the FITS file in it.

Tags change with every delivery (QR3: `cal-epsf-v1-2026-191`, D3 redelivered as `v2`), so none is
hard-coded: each folder is listed once per process (the tag folders of a product once for every detector)
and the answer kept in the fetch cache, as is where each (archive, release, product, detector)'s file lies;
a folder that is not there means the product is absent (a mirror of level-2 files alone), a listing that
fails for another reason is reported and asked again next time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

from spxbatch.archive.io import ReadError
from spxbatch.archive.location import relative_to_root
from spxbatch.fetch.execute import FetchContext
from spxbatch.fetch.target import ImageTarget
from spxbatch.level2.naming import CALIBRATION_PRODUCTS

T = TypeVar("T")

#: A calibration delivery tag, e.g. 'cal-sapm-v3-2026-191': product code, version, year, day of year.
CAL_TAG_RE = re.compile(r"cal-[a-z0-9]+-v(\d+)-(\d{4})-(\d{3})")


def tag_key(tag: str) -> tuple[int, int, int]:
    """Sort key of a delivery tag, newest last: (version, year, day of year); other names sort first."""
    m = CAL_TAG_RE.fullmatch(tag)
    return (int(m[1]), int(m[2]), int(m[3])) if m else (-1, -1, -1)


def calibration_file(ctx: FetchContext, target: ImageTarget, product: str, release: str | None = None) -> str:
    """The path of the target detector's newest `product` file of `release` (default: the image's own).
    Raises LookupError saying why there is none (absent: remembered for the process), or ReadError when a
    listing failed for good (transient: asked again next time)."""
    if target.calib_base is None:
        raise LookupError(f"{product}: no calibration location for {target.path}")
    release = release or target.release
    folder = CALIBRATION_PRODUCTS.get(product, (product,))[0]

    def newest() -> str:
        try:
            return _newest(ctx, f"{target.calib_base}{release}/{folder}", target.detector)
        except LookupError as exc:
            raise LookupError(f"{product}: absent ({exc})") from None

    return _remembered(ctx, _key(target, product, release), newest)


def _remembered(ctx: FetchContext, key: tuple, find: Callable[[], T]) -> T:
    """`find()`'s answer for `key`, asked once per process: a value, or its LookupError (the archive has no
    such thing) remembered and raised again; any other error (a transient failure) is not remembered."""
    known = ctx.cache.calib.get(key)
    if known is None:
        try:
            known = ("found", find())
        except LookupError as exc:
            known = ("absent", str(exc))
        ctx.cache.calib[key] = known
    kind, answer = known
    if kind == "absent":
        raise LookupError(answer)
    return answer


def _key(target: ImageTarget, product: str, release: str | None) -> tuple:
    """The fetch cache key of where a target's product lies."""
    return ("where", target.calib_base, release or target.release, product, target.detector)


def _newest(ctx: FetchContext, base: str, detector: int) -> str:
    """The FITS file of `detector` in the newest tag folder below `base` that has one (LookupError if none;
    a transient listing failure raises ReadError)."""
    tags = sorted((t for t in _entries(ctx, base) if tag_key(t)[0] >= 0), key=tag_key, reverse=True)
    if not tags:
        raise LookupError(f"no delivery below {relative_to_root(base)}")
    for tag in tags:
        try:
            names = _entries(ctx, f"{base}/{tag}/{detector}")
        except LookupError:
            continue
        fits_files = sorted(n for n in names if n.endswith((".fits", ".fits.gz")))
        if fits_files:
            mine = [n for n in fits_files if f"D{detector}" in n]
            return f"{base}/{tag}/{detector}/{(mine or fits_files)[0]}"
    raise LookupError(f"no delivery below {relative_to_root(base)} for D{detector}")


def _entries(ctx: FetchContext, folder: str) -> list[str]:
    """A folder's entry names; LookupError when the folder is not there (HTTP 4xx, no such directory).
    Both answers are remembered for the process (a product's tag folders serve every detector); a transient
    failure is not."""
    def listing() -> list[str]:
        try:
            return ctx.io.list_folder(folder, ctx.stats)
        except FileNotFoundError:
            raise LookupError(f"no folder {relative_to_root(folder)}") from None
        except ReadError as exc:
            if exc.status is None or not 400 <= exc.status < 500:
                raise
            raise LookupError(f"no folder {relative_to_root(folder)}") from None

    return _remembered(ctx, ("listing", folder), listing)
