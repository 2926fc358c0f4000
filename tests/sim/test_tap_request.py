"""One TAP request's parameters, without HTTP: REQUEST, LANG, QUERY, MAXREC, FORMAT/RESPONSEFORMAT, UPLOAD."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from astropy.io.votable import from_table, parse
from astropy.table import Table
from pyvo.dal.tap import TAPResults

from spxbatch.sim.tap.engine import TapEngine
from spxbatch.sim.tap.errors import TapError
from spxbatch.sim.tap.request import answer, upload_parts
from spxbatch.sim.tap.votable import VOTABLE_TYPE

QUERY = "SELECT planeid, band FROM plane ORDER BY planeid"


@pytest.fixture(scope="module")
def eng() -> TapEngine:
    return TapEngine({"plane": pd.DataFrame({"planeid": [1, 2, 3], "band": ["SPHEREx-D1", "SPHEREx-D2", "x"]})})


def _votable(body: bytes) -> TAPResults:
    return TAPResults(parse(io.BytesIO(body)), url="http://sim/TAP/sync")


def _upload(table: Table) -> bytes:
    buf = io.BytesIO()
    from_table(table).to_xml(buf)
    return buf.getvalue()


def test_defaults_give_a_votable(eng):
    body, ctype = answer(eng, {"QUERY": QUERY}, {})
    assert ctype == VOTABLE_TYPE
    res = _votable(body)
    assert res.query_status == "OK" and list(res.to_table()["planeid"]) == [1, 2, 3]
    body, _ = answer(eng, {"REQUEST": "doQuery", "LANG": "ADQL-2.0", "QUERY": QUERY}, {})
    assert len(_votable(body)) == 3


def test_formats(eng):
    body, ctype = answer(eng, {"QUERY": QUERY, "FORMAT": "CSV"}, {})
    assert ctype == "text/csv" and body.decode().splitlines()[0] == "planeid,band"
    body, ctype = answer(eng, {"QUERY": QUERY, "FORMAT": "csv", "RESPONSEFORMAT": "votable"}, {})
    assert ctype == VOTABLE_TYPE  # RESPONSEFORMAT wins
    for fmt in ("text/xml", "application/x-votable+xml", "text/csv"):
        answer(eng, {"QUERY": QUERY, "FORMAT": fmt}, {})


def test_maxrec(eng):
    res = _votable(answer(eng, {"QUERY": QUERY, "MAXREC": "2"}, {})[0])
    assert res.query_status == "OVERFLOW" and list(res.to_table()["planeid"]) == [1, 2]
    assert _votable(answer(eng, {"QUERY": QUERY, "MAXREC": "3"}, {})[0]).query_status == "OK"
    assert len(_votable(answer(eng, {"QUERY": QUERY, "MAXREC": " "}, {})[0])) == 3  # empty: no limit


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"REQUEST": "getCapabilities", "QUERY": QUERY}, "REQUEST=getCapabilities is not supported"),
        ({"LANG": "PQL", "QUERY": QUERY}, "LANG=PQL is not supported"),
        ({"QUERY": "  "}, "missing QUERY"),
        ({}, "missing QUERY"),
        ({"QUERY": QUERY, "MAXREC": "ten"}, "MAXREC must be an integer, got 'ten'"),
        ({"QUERY": QUERY, "MAXREC": "-1"}, "MAXREC must be >= 0"),
        ({"QUERY": QUERY, "FORMAT": "fits"}, "unsupported FORMAT 'fits'"),
        ({"QUERY": QUERY, "UPLOAD": "t,http://elsewhere/t.xml"}, "only inline uploads"),
        ({"QUERY": QUERY, "UPLOAD": "t,param:nothere"}, "missing part 'nothere'"),
    ],
)
def test_client_errors(eng, params, message):
    with pytest.raises(TapError, match=message):
        answer(eng, params, {})


def test_uploads_by_part_name(eng):
    a, b = _upload(Table({"x": [1, 2]})), _upload(Table({"y": [5.0]}))
    assert upload_parts({"UPLOAD": " one,param:p1 ; two,param:p2;"}, {"p1": a, "p2": b}) == {"one": a, "two": b}
    assert upload_parts({}, {"p1": a}) == {}
    q = "SELECT t.x, p.band FROM TAP_UPLOAD.one AS t JOIN plane AS p ON p.planeid = t.x ORDER BY t.x"
    body, _ = answer(eng, {"QUERY": q, "UPLOAD": "one,param:p1"}, {"p1": a})
    assert list(_votable(body).to_table()["band"]) == ["SPHEREx-D1", "SPHEREx-D2"]
