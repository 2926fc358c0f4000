"""The simulated TAP service's wire formats as pyvo and astropy read them: result VOTables (OK, OVERFLOW,
geometry xtypes, units), error documents, CSV, uploaded tables."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io.votable import from_table as votable_from_table
from astropy.io.votable import parse, parse_single_table
from astropy.table import MaskedColumn, Table
from pyvo.dal import DALQueryError
from pyvo.dal.tap import TAPResults

from spxbatch.sim.tap.engine import QueryResult, rows_to_table
from spxbatch.sim.tap.errors import TapError
from spxbatch.sim.tap.votable import csv_bytes, error_votable, read_upload, votable_bytes

ROWS = [(1, "qr2/a.fits", "{(1d,2d),(3d,4d),(5d,6d)}", "(1d,2d)", 60800.25),
        (2, None, "{(359.5d,-1d),(0.5d,-1d),(0.5d,1d)}", "(0.5d,0d)", None)]


@pytest.fixture
def result() -> QueryResult:
    return QueryResult(rows_to_table(["planeid", "uri", "poly", "pt", "t_min"], ROWS), overflow=False)


def _tap_results(body: bytes) -> TAPResults:
    return TAPResults(parse(io.BytesIO(body)), url="http://sim/TAP/sync")


def test_result_votable_as_pyvo_reads_it(result):
    res = _tap_results(votable_bytes(result))
    assert res.query_status == "OK" and len(res) == 2
    t = res.to_table()
    assert list(t["planeid"]) == [1, 2] and t["uri"][0] == "qr2/a.fits"
    assert np.ma.getmaskarray(t["uri"])[1] or t["uri"][1] == ""  # NULL text is an empty cell
    assert np.allclose(t["poly"][1], [359.5, -1, 0.5, -1, 0.5, 1]) and np.allclose(t["pt"][0], [1, 2])
    assert str(t["t_min"].unit) == "d" and t["t_min"][0] == 60800.25
    fields = {f.name: f for f in res.fielddescs}
    assert (fields["poly"].xtype, fields["pt"].xtype) == ("polygon", "point")
    assert (fields["uri"].datatype, fields["uri"].arraysize) == ("char", "*")


def test_overflow_is_flagged(result):
    result.overflow = True
    assert _tap_results(votable_bytes(result)).query_status == "OVERFLOW"
    vot = parse(io.BytesIO(votable_bytes(result)))
    assert vot.resources[0].type == "results"
    assert [i.value for i in vot.resources[0].infos if i.name == "QUERY_STATUS"] == ["OK", "OVERFLOW"]


def test_error_document_carries_the_message():
    message = "no such column: p.bogus <in> 'WHERE' & more"
    with pytest.raises(DALQueryError) as err:
        _tap_results(error_votable(message))
    assert str(err.value) == message
    info = parse(io.BytesIO(error_votable(message))).resources[0].infos[0]
    assert (info.name, info.value, info.content) == ("QUERY_STATUS", "ERROR", message)


def test_csv_rows_and_geometry(result):
    lines = [line.split(",") for line in csv_bytes(result).decode().strip().splitlines()]
    assert lines[0] == ["planeid", "uri", "poly", "pt", "t_min"] and len(lines) == 3
    assert lines[1][:2] == ["1", "qr2/a.fits"] and lines[2][:2] == ["2", ""]
    assert np.allclose([float(x) for x in lines[1][2].split()], [1, 2, 3, 4, 5, 6], atol=1e-12)
    assert np.allclose([float(x) for x in lines[2][2].split()], [359.5, -1, 0.5, -1, 0.5, 1], atol=1e-12)
    assert np.allclose([float(x) for x in lines[2][3].split()], [0.5, 0], atol=1e-12)
    assert float(lines[1][4]) == 60800.25 and lines[2][4] in ("", "nan")


def test_uploads_read_back():
    src = Table({"name": ["a", "b"], "ra": MaskedColumn([1.5, 2.5], mask=[False, True]), "dec": [3.0, 4.0]})
    buf = io.BytesIO()
    votable_from_table(src).to_xml(buf)
    got = read_upload(buf.getvalue())
    assert list(got["name"]) == ["a", "b"] and got["ra"][0] == 1.5 and got["ra"].mask[1]
    assert parse_single_table(io.BytesIO(buf.getvalue())).to_table().colnames == got.colnames
    with pytest.raises(TapError, match="cannot read the uploaded table"):
        read_upload(b"name,ra\na,1\n")
