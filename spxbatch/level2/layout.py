"""Which HDUs a Level-2 file holds and how its pixel planes are stored: the one description of a layout.

Only QR2 (pipeline 6.x: a PSF image cube, plain int32 FLAGS with `MP_<NAME>` cards) is read today. R7 (7.x:
an EPSF table, tile-compressed FLAGS, `MSKNxxxx` cards; see shared/docs/spherex-r7.md) plugs in here: a
second `Layout` and `layout_of` telling the two apart from the file itself (VERSION, the HDU list), never
from its path. Everything that checks a file's structure asks this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from astropy.io import fits

from spxbatch.level2.constants import HDU_NAMES
from spxbatch.level2.fitsmap import FitsMap, FitsStructureError


@dataclass(frozen=True)
class Layout:
    """One Level-2 layout: HDU names in file order, the pixel planes read at the same rows and their numpy
    dtype kinds (4-byte items), the PSF and wavelength HDUs, and how FLAGS cards name their bits."""

    name: str
    hdu_names: tuple[str, ...]
    #: Plane name -> dtype kind ('f' float, 'i' signed int); every plane is 2-D with 4-byte items.
    plane_kinds: Mapping[str, str]
    psf_hdu: str
    wave_hdu: str
    #: FLAGS header cards '<prefix><NAME> = bit'.
    flag_card_prefix: str

    @property
    def planes(self) -> tuple[str, ...]:
        """The pixel planes, in the order they are read and stored."""
        return tuple(self.plane_kinds)


#: Quick Release 2 (pipeline 6.x).
QR2 = Layout(
    name="QR2",
    hdu_names=HDU_NAMES,
    plane_kinds=MappingProxyType({"IMAGE": "f", "FLAGS": "i", "VARIANCE": "f", "ZODI": "f"}),
    psf_hdu="PSF",
    wave_hdu="WCS-WAVE",
    flag_card_prefix="MP_",
)
#: The four pixel planes read at the same rows (QR2).
PLANES = QR2.planes
#: Bytes per pixel of every plane.
PLANE_ITEMSIZE = 4


def layout_of(names: Sequence[str], what: str) -> Layout:
    """The layout of a file with these HDU names (raises FitsStructureError when none fits)."""
    if tuple(names) != QR2.hdu_names:
        raise FitsStructureError(f"{what}: HDUs {tuple(names)}, expected {QR2.hdu_names}")
    return QR2


def check_fitsmap(fmap: FitsMap) -> Layout:
    """The layout of a scanned file, checked: its HDUs, and planes of one 2-D shape and the right dtypes."""
    layout = layout_of(fmap.names, fmap.url)
    shapes = {fmap[n].shape for n in layout.planes}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise FitsStructureError(f"{fmap.url}: image planes have shapes {shapes}")
    for name, kind in layout.plane_kinds.items():
        if fmap[name].dtype.kind != kind or fmap[name].dtype.itemsize != PLANE_ITEMSIZE:
            raise FitsStructureError(f"{fmap.url}: {name} has BITPIX {fmap[name].header['BITPIX']}")
    return layout


def check_hdul(hdul: fits.HDUList, what: str) -> Layout:
    """The layout of an opened file (a whole file or a cutout), checked by its HDU names."""
    return layout_of([str(h.name).upper() for h in hdul], what)
