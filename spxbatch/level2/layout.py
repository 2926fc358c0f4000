"""Which HDUs a Level-2 file holds and how its pixel planes are stored: the one description of a layout.

QR2 (pipeline 6.x): a PSF image cube, plain int32 FLAGS with `MP_<NAME>` cards, 11 x 11 WCS-WAVE. R7 (7.x,
QR3 and the reprocessings of QR2): an EPSF table, RICE_1 tile-compressed FLAGS with `MSKNxxxx = 'NAME'`
cards, 9 x 9 WCS-WAVE (see shared/docs/spherex-r7.md). `layout_of` tells them apart from the file itself
(PRIMARY VERSION, the HDU list), never from its path. Everything that checks a file's structure asks here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from astropy.io import fits

from spxbatch.level2.constants import HDU_NAMES
from spxbatch.level2.fitsmap import FitsMap, FitsStructureError


@dataclass(frozen=True)
class Layout:
    """One Level-2 layout: HDU names in file order, the pixel planes read at the same rows and their numpy
    dtype kinds (4-byte items), which of them are tile-compressed, the PSF and wavelength HDUs, and how
    FLAGS cards name their bits."""

    name: str
    hdu_names: tuple[str, ...]
    #: Plane name -> dtype kind ('f' float, 'i' signed int); every plane is 2-D with 4-byte items.
    plane_kinds: Mapping[str, str]
    psf_hdu: str
    wave_hdu: str
    #: FLAGS header cards: '<prefix><NAME> = bit' (QR2) or '<prefix>xxxx = NAME' (R7, xxxx the bit).
    flag_card_prefix: str
    #: Planes stored tile-compressed (their rows are read through the tile table, `level2.tiled`).
    compressed_planes: frozenset[str] = frozenset()

    @property
    def planes(self) -> tuple[str, ...]:
        """The pixel planes, in the order they are read and stored."""
        return tuple(self.plane_kinds)


_PLANE_KINDS = MappingProxyType({"IMAGE": "f", "FLAGS": "i", "VARIANCE": "f", "ZODI": "f"})

#: Quick Release 2 (pipeline 6.x).
QR2 = Layout(name="QR2", hdu_names=HDU_NAMES, plane_kinds=_PLANE_KINDS, psf_hdu="PSF", wave_hdu="WCS-WAVE",
             flag_card_prefix="MP_")
#: Pipeline R7 (7.x): QR3, DR1 and the reprocessings of QR2.
R7 = Layout(name="R7", hdu_names=("PRIMARY", "IMAGE", "FLAGS", "VARIANCE", "ZODI", "EPSF", "WCS-WAVE"),
            plane_kinds=_PLANE_KINDS, psf_hdu="EPSF", wave_hdu="WCS-WAVE", flag_card_prefix="MSKN",
            compressed_planes=frozenset({"FLAGS"}))
LAYOUTS = (QR2, R7)
#: The four pixel planes read at the same rows (both layouts).
PLANES = QR2.planes
#: Bytes per pixel of every plane.
PLANE_ITEMSIZE = 4
#: The first pipeline major version that writes R7 files.
R7_MAJOR = 7


def pipeline_major(version: object) -> int | None:
    """The major number of a pipeline VERSION ('6.5.4+psffix1', '7.0.0b6.post2+g6b3a1a7'), None when absent
    or unparsable."""
    m = re.match(r"\s*v?(\d+)\.", str(version or ""))
    return int(m.group(1)) if m else None


def layout_of(names: Sequence[str], what: str, version: object = None) -> Layout:
    """The layout of a file with these HDU names and PRIMARY VERSION (raises FitsStructureError when none
    fits, or when the VERSION names one layout and the HDUs are the other's)."""
    names = tuple(names)
    found = next((lay for lay in LAYOUTS if names == lay.hdu_names), None)
    if found is None:
        expected = " or ".join(str(lay.hdu_names) for lay in LAYOUTS)
        raise FitsStructureError(f"{what}: HDUs {names}, expected {expected}")
    major = pipeline_major(version)
    if major is not None and (major >= R7_MAJOR) != (found is R7):
        raise FitsStructureError(f"{what}: VERSION {version} but the HDUs of a {found.name} file")
    return found


def check_fitsmap(fmap: FitsMap) -> Layout:
    """The layout of a scanned file, checked: its HDUs, and planes of one 2-D shape and the right dtypes,
    compressed exactly where the layout says."""
    layout = layout_of(fmap.names, fmap.url, fmap["PRIMARY"].header.get("VERSION"))
    shapes = {fmap[n].shape for n in layout.planes}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise FitsStructureError(f"{fmap.url}: image planes have shapes {shapes}")
    for name, kind in layout.plane_kinds.items():
        entry = fmap[name]
        if entry.compressed != (name in layout.compressed_planes):
            state = "tile-compressed" if entry.compressed else "not tile-compressed"
            raise FitsStructureError(f"{fmap.url}: {name} is {state}, unlike a {layout.name} file")
        if entry.dtype.kind != kind or entry.dtype.itemsize != PLANE_ITEMSIZE:
            bitpix = entry.header["ZBITPIX" if entry.compressed else "BITPIX"]
            raise FitsStructureError(f"{fmap.url}: {name} has BITPIX {bitpix}")
    return layout


def check_hdul(hdul: fits.HDUList, what: str) -> Layout:
    """The layout of an opened file (a whole file or a cutout), checked by its HDU names and VERSION."""
    return layout_of([str(h.name).upper() for h in hdul], what, hdul[0].header.get("VERSION"))
