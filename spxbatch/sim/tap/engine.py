"""The ADQL engine: queries parsed and translated by queryparser, run on SQLite, rows typed into a Table.

`queryparser.adql.ADQLQueryTranslator` checks the grammar (bad syntax is a TapError) and emits its MySQL
dialect, whose geometry calls are the functions of `functions`. The tables live in an attached SQLite
schema `spherex`; an upload named `name` becomes `TAP_UPLOAD.name`. There is no TAP_SCHEMA.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from astropy.table import MaskedColumn, Table
from queryparser.adql import ADQLQueryTranslator
from queryparser.exceptions import QueryError, QuerySyntaxError

from spxbatch.sim.tap.errors import TapError
from spxbatch.sim.tap.functions import SQL_FUNCTIONS, sql_function
from spxbatch.sim.tap.notation import XTYPES, dali_array, is_geometry_text, parse_geometry
from spxbatch.sim.tap.schema import COLUMN_UNITS

#: Seconds a single query may run before it is interrupted (an error, not a hang).
QUERY_TIME_LIMIT_S = 60.0
#: POLYGON with column arguments: the translator pastes column names into the literal.
_SPOLY_COLUMNS_RE = re.compile(r"spoly\('[^']*`")
_UPLOAD_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class QueryResult:
    """Rows of one query as an astropy Table, and whether MAXREC cut it short."""

    table: Table
    overflow: bool


class _Translator(ADQLQueryTranslator):
    """queryparser's translator parsing once (the base class parses in set_query and again in to_mysql)."""

    def set_query(self, query: str) -> None:
        self._query = query.lstrip("\n").rstrip().rstrip(";") + ";"


@lru_cache(maxsize=1024)
def translate(adql: str) -> str:
    """ADQL -> the SQL this engine runs (queryparser's MySQL dialect); TapError on a syntax error.

    The grammar is slow in pure Python (~0.3 s per query), hence the cache.
    """
    try:
        sql = _Translator(adql).to_mysql()
    except QuerySyntaxError as exc:
        where = ", ".join(f"line {ln} column {col} near {tok!r}" for ln, col, tok in exc.syntax_errors)
        raise TapError(f"ADQL syntax error at {where}") from None
    except QueryError as exc:
        raise TapError(f"ADQL error: {exc}") from None
    except Exception as exc:  # the translator raises bare errors on some odd input
        raise TapError(f"ADQL not understood: {exc}") from None
    if _SPOLY_COLUMNS_RE.search(sql):
        raise TapError("POLYGON vertices must be numeric constants in this service")
    return sql.strip().rstrip(";")


class TapEngine:
    """Runs ADQL against a fixed set of tables; thread-safe (each query gets its own SQLite connection)."""

    def __init__(self, tables: dict[str, pd.DataFrame]) -> None:
        master = sqlite3.connect(":memory:")
        for name, frame in tables.items():
            frame.to_sql(name, master, index=False)
        self._image = master.serialize()
        master.close()
        self.table_names = tuple(tables)

    def _connect(self, errors: list[str]) -> sqlite3.Connection:
        conn = sqlite3.connect(":memory:")
        conn.execute("ATTACH ':memory:' AS spherex")
        conn.deserialize(self._image, name="spherex")
        conn.execute("ATTACH ':memory:' AS TAP_UPLOAD")
        for name, (nargs, fn) in SQL_FUNCTIONS.items():
            conn.create_function(name, nargs, sql_function(fn, errors), deterministic=True)
        return conn

    def run(self, adql: str, maxrec: int | None = None, uploads: dict[str, Table] | None = None) -> QueryResult:
        """Execute one ADQL query; TapError (with a message fit for the client) if it cannot be run."""
        sql = translate(adql)
        errors: list[str] = []
        conn = self._connect(errors)
        deadline = time.monotonic() + QUERY_TIME_LIMIT_S
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10000)
        try:
            for name, table in (uploads or {}).items():
                _load_upload(conn, name, table)
            try:
                cur = conn.execute(sql)
                names = [d[0] for d in cur.description]
                rows = cur.fetchall() if maxrec is None else cur.fetchmany(maxrec + 1)
            except (sqlite3.Error, TapError, ValueError, ArithmeticError) as exc:
                if errors:
                    raise TapError(errors[-1]) from None
                msg = "query exceeded the time limit" if "interrupted" in str(exc) else str(exc)
                raise TapError(msg) from None
        finally:
            conn.close()
        overflow = maxrec is not None and len(rows) > maxrec
        if overflow:
            rows = rows[:maxrec]
        return QueryResult(rows_to_table([n.replace("`", "") for n in names], rows), overflow)


def _load_upload(conn: sqlite3.Connection, name: str, table: Table) -> None:
    """Create TAP_UPLOAD.name holding the rows of an uploaded table (masked values as NULL)."""
    if not _UPLOAD_NAME_RE.fullmatch(name):
        raise TapError(f"bad upload table name {name!r}")
    cols = list(table.colnames)
    decl = ", ".join(f'"{c}"' for c in cols)
    conn.execute(f'CREATE TABLE TAP_UPLOAD."{name}" ({decl})')
    data = []
    for row in table:
        data.append(tuple(None if np.ma.is_masked(v) else (v.item() if hasattr(v, "item") else v) for v in row))
    marks = ", ".join("?" for _ in cols)
    conn.executemany(f'INSERT INTO TAP_UPLOAD."{name}" VALUES ({marks})', data)


def _unique(names: list[str]) -> list[str]:
    """Column names made unique case-insensitively (a second `a` becomes `a_1`), as VOTable needs."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = n.lower()
        if k in seen:
            seen[k] += 1
            n = f"{n}_{seen[k]}"
        else:
            seen[k] = 0
        out.append(n)
    return out


def rows_to_table(names: list[str], rows: list[tuple]) -> Table:
    """Rows -> astropy Table, typing each column from its values; geometry text -> DALI arrays."""
    table = Table()
    for j, name in enumerate(_unique(names)):
        values = [r[j] for r in rows]
        present = [v for v in values if v is not None]
        mask = [v is None for v in values]
        meta = {}
        if present and all(isinstance(v, str) for v in present) and is_geometry_text(present[0]):
            geoms = [None if v is None else parse_geometry(v) for v in values]
            meta["xtype"] = XTYPES[type(next(g for g in geoms if g is not None))]
            col = np.empty(len(values), dtype=object)
            col[:] = [np.zeros(0) if g is None else dali_array(g) for g in geoms]
            table[name] = col
        elif present and all(isinstance(v, int) for v in present):
            table[name] = MaskedColumn([0 if v is None else v for v in values], dtype=np.int64, mask=mask)
        elif present and all(isinstance(v, int | float) for v in present):
            table[name] = np.array([np.nan if v is None else float(v) for v in values])
        else:
            table[name] = MaskedColumn(["" if v is None else str(v) for v in values], dtype=str, mask=mask)
        if name.lower() in COLUMN_UNITS:
            table[name].unit = COLUMN_UNITS[name.lower()]
        table[name].meta.update(meta)
    return table
