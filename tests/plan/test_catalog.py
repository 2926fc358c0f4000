"""Catalog reading and validation: every format, column spellings, and one clear error per bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from astropy.table import Table

from spxbatch.plan.catalog import CatalogError, make_catalog, read_catalog

RA = np.array([10.0, 359.5, 0.0, 150.25])
DEC = np.array([-5.0, 89.9, -90.0, 2.5])
NAMES = np.array(["a", "b", "c", "d"])


def _table() -> Table:
    return Table({"Name": NAMES, "RAJ2000": RA, "DEJ2000": DEC, "pmra": [1.0, 2, 3, 4],
                  "pmdec": [0.5, 0, 0, 0], "ref_epoch": [2016.0] * 4, "mag": [10.0, 11, 12, 13]})


@pytest.mark.parametrize("suffix,fmt", [(".csv", "ascii.csv"), (".ecsv", "ascii.ecsv"), (".fits", "fits"),
                                        (".xml", "votable"), (".parquet", "parquet")])
def test_every_format_same_result(tmp_path, suffix, fmt):
    path = tmp_path / f"cat{suffix}"
    _table().write(path, format=fmt)
    cat = read_catalog(path)
    assert cat.name.tolist() == NAMES.tolist()
    assert cat.ra.dtype == np.float64 and np.array_equal(cat.ra, RA) and np.array_equal(cat.dec, DEC)
    assert cat.columns["ra"] == "RAJ2000" and cat.columns["name"] == "Name"
    assert np.array_equal(cat.pmra, [1, 2, 3, 4]) and np.array_equal(cat.epoch, [2016.0] * 4)
    assert set(cat.extra) == {"pmra", "pmdec", "ref_epoch", "mag"}
    assert cat.path == str(path) and len(cat) == 4


def test_explicit_columns_and_spellings(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("# a comment line\nObjID, Alpha ,Delta,RA\nx1,10.5,-3.0,99\nx2,20.5,4.0,99\n")
    cat = read_catalog(path)  # 'RA' wins over 'Alpha' by preference order; blanks in names are ignored
    assert cat.ra.tolist() == [99.0, 99.0] and cat.columns["dec"] == "Delta"
    cat = read_catalog(path, ra_col="alpha", name_col="objid")
    assert cat.ra.tolist() == [10.5, 20.5] and cat.name.tolist() == ["x1", "x2"]
    with pytest.raises(CatalogError, match=r"RA column 'ra_x' you named is not in the file"):
        read_catalog(path, ra_col="ra_x")


def test_integer_ids_become_names(tmp_path):
    path = tmp_path / "gaia.csv"
    path.write_text("source_id,ra,dec\n4295806720,1,2\n38655544960,3,4\n")
    assert read_catalog(path).name.tolist() == ["4295806720", "38655544960"]


def test_no_name_column_names_from_row_index(tmp_path, caplog):
    path = tmp_path / "anon.csv"
    path.write_text("ra,dec\n1,2\n3,4\n")
    with caplog.at_level(logging.WARNING, logger="spxbatch.plan.catalog"):
        cat = read_catalog(path)
    assert cat.name.tolist() == ["src000000", "src000001"] and "name" not in cat.columns
    assert "no name column" in caplog.text


def test_semicolon_file_is_detected_and_read(tmp_path, caplog):
    path = tmp_path / "semi.csv"
    path.write_text("name;ra;dec\na;1.5;2\nb;3;4\n")
    with caplog.at_level(logging.WARNING, logger="spxbatch.plan.catalog"):
        cat = read_catalog(path)
    assert cat.ra.tolist() == [1.5, 3.0] and "semicolon-separated" in caplog.text


def test_one_column_file_says_which_delimiter(tmp_path):
    path = tmp_path / "spaces.csv"
    path.write_text("name ra dec\na 1 2\n")
    with pytest.raises(CatalogError, match=r"read as one column: the file looks space-separated"):
        read_catalog(path)
    assert read_catalog(path, format="ascii").ra.tolist() == [1.0]
    txt = tmp_path / "spaces.txt"  # unknown suffix: astropy's ASCII reader guesses the layout
    txt.write_text("# comment\nname ra dec\na 10.0 -5\nb 20 5\n")
    assert read_catalog(txt).dec.tolist() == [-5.0, 5.0]


def test_unreadable_file_message_is_short(tmp_path):
    path = tmp_path / "bad.fits"
    path.write_bytes(b"not a fits file\n\x00\x01")
    with pytest.raises(CatalogError, match=r"cannot be read as fits .*convert it to CSV") as err:
        read_catalog(path)
    assert len(str(err.value)) < 500


def test_sexagesimal_is_accepted(tmp_path):
    path = tmp_path / "sexa.csv"
    path.write_text("name,ra,dec\na,10:00:00.0,-30:30:00\nb,00 30 00,+05 00 36\nc,12h00m00s,-00:30:00\n"
                    "d,150d30m00s,10d00m00s\n")
    cat = read_catalog(path)
    np.testing.assert_allclose(cat.ra, [150.0, 7.5, 180.0, 150.5])
    np.testing.assert_allclose(cat.dec, [-30.5, 5.01, -0.5, 10.0])


def test_units_are_converted(tmp_path):
    t = Table({"name": ["a"], "ra": [np.pi / 2], "dec": [0.1]})
    t["ra"].unit, t["dec"].unit = "rad", "deg"
    t.write(tmp_path / "u.fits")
    assert read_catalog(tmp_path / "u.fits").ra[0] == pytest.approx(90.0)


@pytest.mark.parametrize("body,pattern", [
    ("name,ra,dec\na,1,2\nb,x12,3\n", r"column 'ra' \(RA\) is not a number at row 2 \(value 'x12'\)"),
    ("name,ra,dec\na,1,2\nb,,3\n", r"column 'ra' \(RA\) is missing or NaN at row 2"),
    ("name,ra,dec\na,1,nan\n", r"column 'dec' \(Dec\) is missing or NaN at row 1"),
    ("name,ra,dec\na,360,2\nb,-1,2\nc,5,5\n", r"outside \[0, 360\) deg at row 1 \(value 360.0\), row 2"),
    ("name,ra,dec\na,1,2\nb,1,91\n", r"column 'dec' \(Dec\) is outside \[-90, 90\] deg at row 2"),
    ("name,ra,dec\na,1,2\nb,1,3\na,1,4\n", r"duplicate name 'a' at rows 1 and 3"),
    ("name,ra,dec\na,1,2\n,1,3\n", r"column 'name' \(name\) is empty at row 2"),
    ("id,x,y\n1,2,3\n", r"no RA and Dec column found among 'id', 'x', 'y'"),
    ("name,ra,dec\n", r"has a header but no rows"),
    ("name,ra,dec\na,1,2,3\n", r"cannot be parsed as comma-separated"),
])
def test_errors_name_row_and_column(tmp_path, body, pattern):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(CatalogError, match=pattern) as err:
        read_catalog(path)
    assert str(bad_path := path) in str(err.value) and bad_path.exists()


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(CatalogError, match="is empty"):
        read_catalog(tmp_path / "e.csv")
    with pytest.raises(CatalogError, match="does not exist"):
        read_catalog(tmp_path / "nope.csv")


def test_error_lists_only_first_rows_of_many():
    ra = np.full(1000, 10.0)
    ra[100:900] = 400.0
    with pytest.raises(CatalogError) as err:
        make_catalog(ra, np.zeros(1000))
    msg = str(err.value)
    assert "row 101 (value 400.0), row 102 (value 400.0), row 103 (value 400.0) and 797 more rows" in msg
    assert len(msg) < 400


def test_masked_fits_values_are_reported(tmp_path):
    t = Table({"name": ["a", "b"], "ra": np.ma.masked_array([1.0, 2.0], [False, True]), "dec": [0.0, 1.0]})
    t.write(tmp_path / "m.fits")
    with pytest.raises(CatalogError, match=r"missing or NaN at row 2"):
        read_catalog(tmp_path / "m.fits")


def test_million_rows_load_fast(tmp_path):
    import time

    import pandas as pd

    n = 1_000_000
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"name": np.char.add("s", np.arange(n).astype(str)), "ra": rng.uniform(0, 360, n),
                       "dec": rng.uniform(-90, 90, n)})
    df.to_parquet(tmp_path / "big.parquet")
    t0 = time.perf_counter()
    cat = read_catalog(tmp_path / "big.parquet")
    assert time.perf_counter() - t0 < 10 and len(cat) == n and cat.name[-1] == f"s{n - 1}"
