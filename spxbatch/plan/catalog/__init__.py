"""Read a source catalog (CSV, ECSV, FITS, VOTable, Parquet) and validate it before any network traffic.

Files become columns in `formats`, columns become validated positions and names in `columns`. Columns are
found under their usual spellings (case-insensitive) or named by the caller. Validation is vectorised so a
10^6-row catalog loads in about a second; every error is one sentence naming the column, the first few bad
rows (1-based data rows, header not counted) and what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spxbatch.plan.catalog.columns import validate
from spxbatch.plan.catalog.errors import CatalogError
from spxbatch.plan.catalog.formats import read_columns

__all__ = ["Catalog", "CatalogError", "make_catalog", "read_catalog"]


@dataclass
class Catalog:
    """Validated sources: unique names, ICRS positions in degrees, and every other column in `extra`."""

    name: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    #: The other columns (numpy arrays, catalog order), proper motions and epoch included when present.
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    path: str | None = None
    #: Which file column gave each role ('name', 'ra', 'dec', 'pmra', 'pmdec', 'epoch'); 'name' absent
    #: when names were made from the row index.
    columns: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ra)

    def _role(self, role: str) -> np.ndarray | None:
        col = self.columns.get(role)
        return None if col is None else self.extra[col]

    @property
    def pmra(self) -> np.ndarray | None:
        """Proper motion in RA (as the catalog gives it, usually mas/yr incl. cos(dec)), or None."""
        return self._role("pmra")

    @property
    def pmdec(self) -> np.ndarray | None:
        """Proper motion in Dec (usually mas/yr), or None."""
        return self._role("pmdec")

    @property
    def epoch(self) -> np.ndarray | None:
        """Epoch of the positions (usually Julian year), or None."""
        return self._role("epoch")


def read_catalog(path: str | Path, *, name_col: str | None = None, ra_col: str | None = None,
                 dec_col: str | None = None, format: str | None = None) -> Catalog:
    """Read and validate a catalog file; raise `CatalogError` with a one-sentence reason if unusable.

    `format` is 'csv', 'ecsv', 'fits', 'votable', 'parquet' or any astropy Table format; by default it
    follows the file name. CSV is read with pyarrow (about 10x faster than astropy's reader) and its
    delimiter (comma, semicolon, tab, pipe) is detected from the header line.
    """
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"Catalog {path} does not exist or is not a file; check the path.")
    if path.stat().st_size == 0:
        raise CatalogError(f"Catalog {path} is empty; give a file with a header line and one row per source.")
    columns, units = read_columns(path, format)
    return _catalog(columns, units, path=str(path), name_col=name_col, ra_col=ra_col, dec_col=dec_col)


def make_catalog(ra, dec, name=None, extra: Mapping[str, np.ndarray] | None = None,
                 path: str | None = None) -> Catalog:
    """A validated Catalog from arrays (positions in degrees); names from the row index when not given."""
    columns: dict[str, np.ndarray] = {"ra": np.asarray(ra), "dec": np.asarray(dec)}
    if name is not None:
        columns["name"] = np.asarray(name)
    columns.update({k: np.asarray(v) for k, v in (extra or {}).items()})
    return _catalog(columns, {}, path=path, name_col="name" if name is not None else None,
                    ra_col="ra", dec_col="dec")


def _catalog(columns: dict[str, np.ndarray], units: dict, *, path: str | None, name_col: str | None,
             ra_col: str | None, dec_col: str | None) -> Catalog:
    """The Catalog of validated columns."""
    sources = validate(columns, units, path=path, name_col=name_col, ra_col=ra_col, dec_col=dec_col)
    return Catalog(name=sources.name, ra=sources.ra, dec=sources.dec, extra=sources.extra, path=path,
                   columns=sources.roles)
