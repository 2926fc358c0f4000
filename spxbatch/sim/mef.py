"""The Level-2 MEF writers: seven HDUs in IRSA's order with the real header cards, QR2 and R7.

QR2: PRIMARY, IMAGE (float32 MJy/sr), FLAGS (int32 with HIERARCH MP_<NAME> = bit), VARIANCE, ZODI, PSF (the
121-plane cube with its zone cards) and WCS-WAVE (the one-row -TAB lookup table of the spectral WCS 'W').
R7: the same planes with FLAGS RICE_1 tile-compressed (MSKNxxxx = 'NAME' cards), the EPSF table in place
of the PSF cube, and a 9 x 9 WCS-WAVE. astropy writes the data big-endian, as the archive has it. Nothing
here reads the clock: DATE cards come from the caller, so the same inputs give the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from astropy.io import fits

from spxbatch.level2.constants import FLAG_BITS

Card = tuple[str, object, str]


def _header(cards: Iterable[Card]) -> fits.Header:
    hdr = fits.Header()
    for key, value, comment in cards:
        if len(key) > 8 or " " in key or key.startswith("MP_"):
            hdr.append(fits.Card(f"HIERARCH {key}", value, comment), end=True)
        else:
            hdr.append(fits.Card(key, value, comment), end=True)
    return hdr


def spectral_cards(x0: int = 0, y0: int = 0) -> list[Card]:
    """Alternate WCS 'W': wavelength and bandwidth (um) by -TAB lookup in the WCS-WAVE extension.

    The table's X and Y hold 1-based parent pixels; a cutout with origin (x0, y0) shifts CRPIXnW by it.
    """
    return [
        ("WCSAXESW", 2, ""),
        ("WCSNAMEW", "WAVELENGTH", "Spectral WCS: central wavelength and bandwidth"),
        ("CTYPE1W", "WAVE-TAB", ""),
        ("CTYPE2W", "WAVE-TAB", ""),
        ("CUNIT1W", "um", ""),
        ("CUNIT2W", "um", ""),
        ("CRPIX1W", float(-x0), ""),
        ("CRPIX2W", float(-y0), ""),
        ("CRVAL1W", 0.0, ""),
        ("CRVAL2W", 0.0, ""),
        ("CDELT1W", 1.0, ""),
        ("CDELT2W", 1.0, ""),
        ("PS1_0W", "WCS-WAVE", "Table extension name"),
        ("PS2_0W", "WCS-WAVE", "Table extension name"),
        ("PS1_1W", "VALUES", "Coordinate array column"),
        ("PS2_1W", "VALUES", "Coordinate array column"),
        ("PS1_2W", "X", "Index vector column, axis 1"),
        ("PS2_2W", "Y", "Index vector column, axis 2"),
        ("PV1_3W", 1, "Coordinate array axis for axis 1"),
        ("PV2_3W", 2, "Coordinate array axis for axis 2"),
    ]


def flag_cards() -> list[Card]:
    """The FLAGS header's bit definitions, HIERARCH MP_<NAME> = bit."""
    return [(f"MP_{name}", bit, f"bit {bit}") for name, bit in FLAG_BITS.items()]


def wave_table_hdu(x: np.ndarray, y: np.ndarray, values: np.ndarray) -> fits.BinTableHDU:
    """The WCS-WAVE table: one row with X (nX), Y (nY) and VALUES (TDIM (2, nX, nY); numpy [iy, ix, k])."""
    nx, ny = x.size, y.size
    cols = [
        fits.Column(name="X", format=f"{nx}D", array=x[None, :]),
        fits.Column(name="Y", format=f"{ny}D", array=y[None, :]),
        fits.Column(name="VALUES", format=f"{2 * nx * ny}D", dim=f"(2,{nx},{ny})", array=values.reshape(1, ny, nx, 2)),
    ]
    return fits.BinTableHDU.from_columns(cols, name="WCS-WAVE")


def _plane(
    common: fits.Header, data: np.ndarray, name: str, bunit: str | None, extra: list[Card] = ()
) -> fits.ImageHDU:
    """An image-plane HDU: the common image cards (BUNIT first when given), then `extra`."""
    hdr = common.copy()
    if bunit:
        hdr.insert(0, ("BUNIT", bunit, "Pixel units"))
    hdr.extend(_header(extra), end=True)
    return fits.ImageHDU(data=data, header=hdr, name=name)


def _write(path: Path, hdul: fits.HDUList) -> int:
    """Write an HDU list with CHECKSUM/DATASUM on every HDU; returns the file's size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # CHECKSUM/DATASUM as FITS pipelines write them: a PSF cube that differs under the same version then
    # differs in its header too, so readers can cache PSFs by content without reading every cube. A fixed
    # comment instead of astropy's timestamp keeps the bytes a function of the seed alone.
    for hdu in hdul:
        hdu.add_checksum(when="data unit checksum")
    hdul.writeto(path, overwrite=True)
    return path.stat().st_size


def write_l2(
    path: Path,
    *,
    primary: list[Card],
    image_cards: list[Card],
    image: np.ndarray,
    flags: np.ndarray,
    variance: np.ndarray,
    zodi: np.ndarray,
    psf_cube: np.ndarray,
    psf_cards: list[Card],
    wave: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> int:
    """Write one QR2 Level-2 file; `image_cards` (WCS, times, ids) go on every image-plane HDU. Returns bytes."""
    common = _header(image_cards)
    hdul = fits.HDUList(
        [
            fits.PrimaryHDU(header=_header(primary)),
            _plane(common, image.astype(np.float32), "IMAGE", "MJy/sr"),
            _plane(common, flags.astype(np.int32), "FLAGS", None, flag_cards()),
            _plane(common, variance.astype(np.float32), "VARIANCE", "MJy2/sr2"),
            _plane(common, zodi.astype(np.float32), "ZODI", "MJy/sr"),
            fits.ImageHDU(data=psf_cube.astype(np.float32), header=_header(psf_cards), name="PSF"),
            wave_table_hdu(*wave),
        ]
    )
    return _write(path, hdul)


def compressed_flags(flags: np.ndarray, header: fits.Header) -> fits.CompImageHDU:
    """R7's FLAGS: int32, RICE_1 tile-compressed with one tile per image row."""
    return fits.CompImageHDU(
        data=flags.astype(np.int32), header=header, name="FLAGS", compression_type="RICE_1",
        tile_shape=(1, flags.shape[1]),
    )


def write_r7(
    path: Path,
    *,
    primary: list[Card],
    image_cards: list[Card],
    image: np.ndarray,
    flags: np.ndarray,
    flag_names: list[Card],
    variance: np.ndarray,
    zodi: np.ndarray,
    epsf_table: fits.BinTableHDU,
    wave: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> int:
    """Write one R7 Level-2 file: PRIMARY, IMAGE, FLAGS (tile-compressed, `flag_names` = MSKN cards),
    VARIANCE, ZODI, EPSF (the ePSF table), WCS-WAVE. Returns bytes."""
    common = _header(image_cards)
    flags_header = common.copy()
    flags_header.extend(_header(flag_names), end=True)
    hdul = fits.HDUList(
        [
            fits.PrimaryHDU(header=_header(primary)),
            _plane(common, image.astype(np.float32), "IMAGE", "MJy / sr"),
            compressed_flags(flags, flags_header),
            _plane(common, variance.astype(np.float32), "VARIANCE", "MJy2/sr2"),
            _plane(common, zodi.astype(np.float32), "ZODI", "MJy/sr"),
            epsf_table.copy(),
            wave_table_hdu(*wave),
        ]
    )
    return _write(path, hdul)
