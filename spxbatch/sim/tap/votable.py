"""The TAP wire formats: result VOTables (QUERY_STATUS OK or OVERFLOW), CSV, error documents, uploads."""

from __future__ import annotations

import io

from astropy.io.votable import from_table, parse_single_table
from astropy.io.votable.tree import Info, Resource, VOTableFile
from astropy.table import Table

from spxbatch.sim.tap.engine import QueryResult
from spxbatch.sim.tap.errors import TapError

#: The media type of every VOTable the service sends (results and error documents).
VOTABLE_TYPE = "application/x-votable+xml"


def votable_bytes(result: QueryResult) -> bytes:
    """A TAP result VOTable: QUERY_STATUS OK, plus OVERFLOW when MAXREC cut the rows."""
    vot = from_table(result.table)
    resource = vot.resources[0]
    resource.type = "results"
    resource.infos.append(Info(name="QUERY_STATUS", value="OK"))
    if result.overflow:
        resource.infos.append(Info(name="QUERY_STATUS", value="OVERFLOW"))
    for field, name in zip(resource.tables[0].fields, result.table.colnames, strict=True):
        meta = result.table[name].meta
        if "xtype" in meta:
            field.xtype = meta["xtype"]
        elif field.datatype == "unicodeChar":
            field.datatype, field.arraysize = "char", "*"
    buf = io.BytesIO()
    vot.to_xml(buf)
    return buf.getvalue()


def error_votable(message: str) -> bytes:
    """A TAP error document: RESOURCE type=results with INFO QUERY_STATUS=ERROR holding the message."""
    vot = VOTableFile()
    resource = Resource(type="results")
    info = Info(name="QUERY_STATUS", value="ERROR")
    info.content = message
    resource.infos.append(info)
    vot.resources.append(resource)
    buf = io.BytesIO()
    vot.to_xml(buf)
    return buf.getvalue()


def csv_bytes(result: QueryResult) -> bytes:
    """FORMAT=csv: a header line then the rows; geometry arrays as space-separated numbers."""
    table = result.table.copy(copy_data=False)
    for name in table.colnames:
        if table[name].dtype == object:
            table[name] = [" ".join(repr(float(x)) for x in v) for v in table[name]]
    buf = io.StringIO()
    table.write(buf, format="ascii.csv")
    return buf.getvalue().encode()


def read_upload(data: bytes) -> Table:
    """An uploaded table (VOTable, as pyvo sends it) as an astropy Table."""
    try:
        return parse_single_table(io.BytesIO(data)).to_table()
    except Exception as exc:
        raise TapError(f"cannot read the uploaded table: {exc}") from None
