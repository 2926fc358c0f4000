"""One TAP request answered: the parameters of `doQuery` checked, uploads read, the query run and encoded.

The same for /sync and for an async job's run. Parameter names are upper-case (the HTTP side upper-cases
them); `parts` are the posted file parts by field name, which `UPLOAD=name,param:field` refers to.
"""

from __future__ import annotations

from spxbatch.sim.tap.engine import TapEngine
from spxbatch.sim.tap.errors import TapError
from spxbatch.sim.tap.votable import VOTABLE_TYPE, csv_bytes, read_upload, votable_bytes

#: FORMAT / RESPONSEFORMAT values served (lower case).
FORMATS = ("votable", "application/x-votable+xml", "text/xml", "csv", "text/csv")


def answer(engine: TapEngine, params: dict[str, str], parts: dict[str, bytes]) -> tuple[bytes, str]:
    """(body, content type) of one TAP request; TapError for anything the client got wrong."""
    if params.get("REQUEST", "doQuery").lower() != "doquery":
        raise TapError(f"REQUEST={params['REQUEST']} is not supported (only doQuery)")
    if params.get("LANG", "ADQL").upper().split("-")[0] != "ADQL":
        raise TapError(f"LANG={params['LANG']} is not supported (only ADQL)")
    query = params.get("QUERY", "").strip()
    if not query:
        raise TapError("missing QUERY parameter")
    maxrec = _maxrec(params)
    fmt = (params.get("RESPONSEFORMAT") or params.get("FORMAT") or "votable").lower()
    if fmt not in FORMATS:
        raise TapError(f"unsupported FORMAT {fmt!r} (votable or csv)")
    tables = {name: read_upload(data) for name, data in upload_parts(params, parts).items()}
    result = engine.run(query, maxrec=maxrec, uploads=tables)
    if "csv" in fmt:
        return csv_bytes(result), "text/csv"
    return votable_bytes(result), VOTABLE_TYPE


def _maxrec(params: dict[str, str]) -> int | None:
    """MAXREC as a row limit (None when absent or empty)."""
    if not params.get("MAXREC", "").strip():
        return None
    try:
        maxrec = int(params["MAXREC"])
    except ValueError:
        raise TapError(f"MAXREC must be an integer, got {params['MAXREC']!r}") from None
    if maxrec < 0:
        raise TapError("MAXREC must be >= 0")
    return maxrec


def upload_parts(params: dict[str, str], parts: dict[str, bytes]) -> dict[str, bytes]:
    """UPLOAD=name,param:field[;name2,param:field2] -> {name: bytes of the posted part `field`}."""
    out = {}
    spec = params.get("UPLOAD", "").strip()
    for item in filter(None, (s.strip() for s in spec.split(";"))):
        name, _, ref = item.partition(",")
        if not ref.startswith("param:"):
            raise TapError(f"only inline uploads (name,param:part) are supported, got {item!r}")
        part = ref[len("param:") :]
        if part not in parts:
            raise TapError(f"upload {name!r} refers to a missing part {part!r}")
        out[name.strip()] = parts[part]
    return out
