"""Keys of the persistent product store (`fetch.store`): each names its bytes by what fixes their content,
so an entry can only be met by the same bytes."""

from __future__ import annotations

from astropy.io import fits

from spxbatch.fetch.cache import header_digest
from spxbatch.level2.fitsmap import FitsMap, HDUEntry


def file_psf_key(url: str, header: fits.Header) -> str:
    """A Level-2 file's PSF model: by its HDU header, which holds the data's DATASUM, so files sharing one
    model share one entry; a header without DATASUM says nothing of the data, so the file's URL joins the key."""
    where = "" if "DATASUM" in header else url
    return f"psf|{where}|{header_digest(header)}"


def product_key(fmap: FitsMap, entry: HDUEntry) -> str:
    """One HDU of a calibration product: its location, size and header."""
    return f"product|{fmap.url}|{fmap.size}|{entry.index}|{header_digest(entry.header)}"


def block_key(fmap: FitsMap, entry: HDUEntry, block: int, rows: int) -> str:
    """Rows block*rows .. of one calibration plane."""
    return f"{product_key(fmap, entry)}|rows|{block}|{rows}"
