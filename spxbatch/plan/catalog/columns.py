"""Catalog columns into validated positions and names, vectorised: the name/ra/dec columns found under
their usual spellings (or named by the caller), coordinates in decimal or sexagesimal degrees (or with
angle units) checked for range, names checked unique and non-empty; each error one sentence naming the
column and the first bad rows."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import pandas as pd

from spxbatch.plan.catalog.errors import ROWS_NOTE, CatalogError, column_list, row_list
from spxbatch.plan.catalog.formats import DELIMITERS

log = logging.getLogger(__name__)

#: Usual spellings, in order of preference (compared case-insensitively, surrounding blanks ignored).
NAME_COLUMNS = ("name", "source_name", "objname", "obj_name", "object", "object_name", "target",
                "target_name", "designation", "id", "source_id", "objid", "obj_id", "srcid", "main_id")
RA_COLUMNS = ("ra", "raj2000", "_raj2000", "ra_j2000", "ra2000", "ra_deg", "radeg", "ra_icrs", "ra_d",
              "alpha", "alpha_j2000")
DEC_COLUMNS = ("dec", "dej2000", "_dej2000", "decj2000", "dec_j2000", "de_j2000", "dec2000", "dec_deg",
               "decdeg", "dedeg", "de_icrs", "dec_icrs", "dec_d", "de", "delta", "delta_j2000")
PMRA_COLUMNS = ("pmra", "pm_ra", "pmra_cosdec", "pmracosdec")
PMDEC_COLUMNS = ("pmdec", "pm_dec", "pmde")
EPOCH_COLUMNS = ("epoch", "ref_epoch", "epoch_yr", "epoch_year")

#: Sexagesimal 'dd:mm:ss.s', 'dd mm ss', '12h34m56.7s', '-12d34m56s' (degree sign or d forces degrees).
_SEXAGESIMAL = re.compile(r"^\s*(?P<sign>[+-]?)\s*(?P<a>\d{1,3})\s*(?P<u>[:\shHdD°])\s*(?P<b>\d{1,2})"
                          r"\s*[:\smM']\s*(?P<c>\d{1,2}(?:\.\d*)?)\s*[sS\"]?\s*$")


class Sources(NamedTuple):
    """Validated catalog columns: names, positions (deg), the other columns, and which column gave each role."""

    name: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    extra: dict[str, np.ndarray]
    roles: dict[str, str]


def _find(columns: Mapping[str, np.ndarray], wanted: str | None, candidates: tuple[str, ...],
          role: str, path: str | None) -> str | None:
    """The column playing `role`: the one named by the user, else the first usual spelling present."""
    lower = {c.strip().lower(): c for c in columns}
    if wanted is not None:
        if wanted in columns:
            return wanted
        if wanted.strip().lower() in lower:
            return lower[wanted.strip().lower()]
        raise CatalogError(f"Catalog {path}: the {role} column {wanted!r} you named is not in the file, "
                           f"which has columns {column_list(columns)}; name one of those.")
    return next((lower[c] for c in candidates if c in lower), None)


def _to_degrees(values: np.ndarray, unit, role: str, col: str, path: str | None) -> np.ndarray:
    """Float64 degrees from a numeric, string (decimal or sexagesimal) or unit-carrying column."""
    if values.dtype.kind in "iuf":
        out = values.astype(np.float64, copy=False)
    elif values.dtype.kind == "b":
        raise CatalogError(f"Catalog {path}: column {col!r} ({role}) holds true/false values, not "
                           f"coordinates; name the right column with the {role.lower()}_col option.")
    else:
        strings = pd.Series(values, dtype=object)
        out = np.array(pd.to_numeric(strings, errors="coerce"), dtype=np.float64)
        bad = np.isnan(out) & strings.notna().to_numpy() & (strings.astype(str).str.strip() != "").to_numpy()
        if bad.any():
            sexa = _parse_sexagesimal(strings[bad], hours_by_default=(role == "RA"))
            out[np.flatnonzero(bad)] = sexa
            still = np.zeros(len(out), bool)
            still[np.flatnonzero(bad)] = np.isnan(sexa)
            if still.any():
                raise CatalogError(
                    f"Catalog {path}: column {col!r} ({role}) is not a number at {row_list(still, values)} "
                    f"({ROWS_NOTE}); give decimal degrees (or sexagesimal like '12:34:56.7' / '+12:34:56')"
                    " and fix or remove these rows.")
            log.info("%s: column %r read as sexagesimal (%s)", path, col,
                     "hours unless marked d" if role == "RA" else "degrees")
    if unit is not None:
        import astropy.units as u

        try:
            out = (out * unit).to_value(u.deg)
        except u.UnitConversionError as exc:
            raise CatalogError(f"Catalog {path}: column {col!r} ({role}) has unit {unit}, not an angle; "
                               f"name the right column with the {role.lower()}_col option.") from exc
    return out


def _parse_sexagesimal(strings: pd.Series, *, hours_by_default: bool) -> np.ndarray:
    """Degrees from sexagesimal strings (NaN where not sexagesimal); RA is in hours unless marked 'd'/'°'."""
    parts = strings.astype(str).str.extract(_SEXAGESIMAL)
    a, b, c = (pd.to_numeric(parts[k], errors="coerce").to_numpy(np.float64) for k in ("a", "b", "c"))
    value = a + b / 60.0 + c / 3600.0
    value[(b >= 60) | (c >= 60)] = np.nan
    sign = np.where(parts["sign"].to_numpy(object) == "-", -1.0, 1.0)
    if hours_by_default:
        degrees = parts["u"].isin(["d", "D", "°"]).to_numpy()
        value = np.where(degrees, value, value * 15.0)
    return sign * value


def _names(values: np.ndarray, col: str, path: str | None) -> np.ndarray:
    """Unique, non-empty names as a numpy str array."""
    if values.dtype.kind == "f":
        missing = np.isnan(values)
        if missing.any():
            raise CatalogError(f"Catalog {path}: column {col!r} (name) is empty at {row_list(missing)} "
                               f"({ROWS_NOTE}); give every source a name or drop the name column.")
        if np.all(values == np.round(values)):
            values = values.astype(np.int64)
    if values.dtype.kind in "iu":  # integer IDs (Gaia source_id): checked as integers, fast
        names = pd.Series(values)
    else:
        series = pd.Series(values, dtype=object)
        names = series.astype(str).str.strip()
        missing = series.isna().to_numpy() | (names == "").to_numpy()
        if missing.any():
            raise CatalogError(f"Catalog {path}: column {col!r} (name) is empty at {row_list(missing)} ({ROWS_NOTE}); "
                               "give every source a name or drop the name column.")
    dup = names.duplicated(keep=False).to_numpy()
    if dup.any():
        first = np.flatnonzero(dup)[0]
        other = np.flatnonzero(dup & (names == names.iloc[first]).to_numpy())[1]
        n_dup = int(names[dup].nunique())
        raise CatalogError(f"Catalog {path}: column {col!r} (name) has duplicate name {str(names.iloc[first])!r} "
                           f"at rows {first + 1} and {other + 1} ({ROWS_NOTE}"
                           + (f"; {n_dup} names are repeated in all" if n_dup > 1 else "")
                           + "); names must be unique: rename or remove the duplicates.")
    return names.to_numpy().astype(str)


def validate(columns: dict[str, np.ndarray], units: dict, *, path: str | None, name_col: str | None,
             ra_col: str | None, dec_col: str | None) -> Sources:
    """Find the roles, convert and validate (raising CatalogError for the first problem); every check is
    vectorised."""
    if not columns:
        raise CatalogError(f"Catalog {path} has no columns; give a header line naming the columns.")
    nrows = len(next(iter(columns.values())))
    ra_name = _find(columns, ra_col, RA_COLUMNS, "RA", path)
    dec_name = _find(columns, dec_col, DEC_COLUMNS, "Dec", path)
    if ra_name is None or dec_name is None:
        missing = " and ".join(r for r, c in (("RA", ra_name), ("Dec", dec_name)) if c is None)
        hint = ""
        if len(columns) == 1:
            only = next(iter(columns))
            seps = [w for d, w in (*DELIMITERS.items(), (" ", "space")) if d in only.strip()]
            if seps:
                hint = (f" (the whole header {only!r} was read as one column: the file looks "
                        f"{seps[0]}-separated; save it comma-separated or read it with format='ascii')")
        raise CatalogError(f"Catalog {path}: no {missing} column found among {column_list(columns)}{hint}; "
                           "rename the columns (e.g. 'ra', 'dec' in degrees) or name them with the "
                           "ra_col/dec_col options.")
    if nrows == 0:
        raise CatalogError(f"Catalog {path} has a header but no rows; give at least one source.")
    ra = _to_degrees(np.asarray(columns[ra_name]), units.get(ra_name), "RA", ra_name, path)
    dec = _to_degrees(np.asarray(columns[dec_name]), units.get(dec_name), "Dec", dec_name, path)
    for role, col, val in (("RA", ra_name, ra), ("Dec", dec_name, dec)):
        bad = ~np.isfinite(val)
        if bad.any():
            raise CatalogError(f"Catalog {path}: column {col!r} ({role}) is missing or NaN at {row_list(bad)} "
                               f"({ROWS_NOTE}); fill in or remove these rows.")
    bad = (ra < 0.0) | (ra >= 360.0)
    if bad.any():
        raise CatalogError(f"Catalog {path}: column {ra_name!r} (RA) is outside [0, 360) deg at "
                           f"{row_list(bad, ra)} ({ROWS_NOTE}); give RA in degrees in [0, 360) (wrap negative "
                           "values by adding 360).")
    bad = (dec < -90.0) | (dec > 90.0)
    if bad.any():
        raise CatalogError(f"Catalog {path}: column {dec_name!r} (Dec) is outside [-90, 90] deg at "
                           f"{row_list(bad, dec)} ({ROWS_NOTE}); give Dec in degrees and check that RA and Dec "
                           "are not swapped.")

    roles = {"ra": ra_name, "dec": dec_name}
    name_name = _find(columns, name_col, NAME_COLUMNS, "name", path)
    if name_name is None:
        width = max(6, len(str(nrows - 1)))
        names = np.char.add("src", np.char.zfill(np.arange(nrows).astype(str), width))
        log.warning("%s: no name column among %s; naming sources by 0-based row index (%s...)", path,
                    column_list(columns), names[0])
    else:
        names = _names(np.asarray(columns[name_name]), name_name, path)
        roles["name"] = name_name
    extra = {k: np.asarray(v) for k, v in columns.items() if k not in (ra_name, dec_name, name_name)}
    for role, candidates in (("pmra", PMRA_COLUMNS), ("pmdec", PMDEC_COLUMNS), ("epoch", EPOCH_COLUMNS)):
        col = _find(extra, None, candidates, role, path)
        if col is not None:
            roles[role] = col
    return Sources(names, ra, dec, extra, roles)
