"""Exports of a cube: per-source light-curve CSVs (SPXQuery's columns), one Parquet table of every
measurement, and a VOTable in the layout of the archive's spectrophotometry service.

Every export goes block of sources by block (`source_blocks`: at most EXPORT_BLOCK_ROWS measurements read at
a time), so a cube larger than memory exports; the VOTable's rows are written by astropy one block at a time
between the header and the tail astropy writes for the first block.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import xarray as xr
from astropy.io.votable import from_table
from astropy.table import Table

from spxbatch.cube.blocks import BLOCK_ROWS, source_ranges
from spxbatch.cube.filenames import output_file, output_folder, source_file_stems, write_name_map
from spxbatch.files import atomic_path

AB_ZERO_POINT_UJY = 3631e6
#: Measurements read at a time by the block-wise exports (a block holds whole sources, at least one).
EXPORT_BLOCK_ROWS = BLOCK_ROWS
#: Where astropy's TABLEDATA rows begin and end in a VOTable it writes.
ROWS_BEGIN, ROWS_END = b"<TABLEDATA>\n", b"</TABLEDATA>"


#: SPXQuery's lightcurve.csv columns, in order.
SPXQUERY_COLUMNS = ("obs_id", "mjd", "flux", "flux_error", "mag_ab", "mag_ab_error", "wavelength", "bandwidth",
                    "band", "flag", "flag_binary", "pix_x", "pix_y", "is_upper_limit", "snr", "good")


def _obs_variables(ds: xr.Dataset) -> list[str]:
    """The per-measurement variables."""
    return [v for v in ds.data_vars if ds[v].dims == ("obs",)]


def measurements_table(ds: xr.Dataset) -> pd.DataFrame:
    """Every measurement as one row with its source's name, ra and dec (the cube's obs order)."""
    df = ds[_obs_variables(ds)].to_dataframe().reset_index(drop=True)
    sidx = df["source_index"].to_numpy()
    df.insert(0, "source", ds["source"].values.astype(str)[sidx])
    df.insert(1, "ra", ds["ra"].values[sidx])
    df.insert(2, "dec", ds["dec"].values[sidx])
    return df


def spxquery_lightcurve(df: pd.DataFrame) -> pd.DataFrame:
    """One source's rows in SPXQuery's lightcurve.csv layout, sorted by mjd."""
    mag, mag_err = ab_magnitude(df["flux"].to_numpy(), df["flux_err"].to_numpy())
    flags = df["flags"].to_numpy(np.int64)
    out = pd.DataFrame({
        "obs_id": df["obs_id"].astype(str), "mjd": df["mjd"], "flux": df["flux"], "flux_error": df["flux_err"],
        "mag_ab": mag, "mag_ab_error": mag_err, "wavelength": df["wavelength"], "bandwidth": df["bandwidth"],
        "band": [f"D{b}" for b in df["band"]], "flag": flags,
        "flag_binary": [np.binary_repr(f, width=32) for f in flags], "pix_x": df["x"], "pix_y": df["y"],
        "is_upper_limit": df["flux_err"] > df["flux"], "snr": df["flux"] / df["flux_err"], "good": df["good"],
    })
    if "flux_psf" in df.columns:  # the PSF fit beside whichever flux feeds `flux`
        out["flux_psf"], out["flux_psf_error"] = df["flux_psf"].to_numpy(), df["flux_psf_err"].to_numpy()
    return out.sort_values("mjd", kind="stable").reset_index(drop=True)


def source_blocks(ds: xr.Dataset, max_rows: int = EXPORT_BLOCK_ROWS) -> Iterator[xr.Dataset]:
    """The cube's measurements in consecutive blocks of whole sources, each at most `max_rows` rows (or one
    source's rows, when it has more): slices of the ragged `obs` dimension, read as they are asked for."""
    columns = ds[[*_obs_variables(ds), "ra", "dec"]]  # not the (source, channel) spectra
    for _, _, o0, o1 in source_ranges(ds, max_rows):
        if o1 > o0:
            yield columns.isel(obs=slice(o0, o1)).load()


def export_csv(ds: xr.Dataset, outdir: str | Path, block_rows: int = EXPORT_BLOCK_ROWS) -> list[Path]:
    """One SPXQuery-style light-curve CSV per source with measurements, named after the source (unique,
    bounded names: `filenames.source_file_stems`), and the name map beside them; block by block."""
    outdir = output_folder(outdir, "light-curve CSVs")
    stems = source_file_stems(ds["source"].values.astype(str))
    named: list[tuple[str, Path]] = []
    for block in source_blocks(ds, block_rows):
        for name, rows in measurements_table(block).groupby("source", sort=False):
            path = outdir / f"{stems[str(name)]}.csv"
            spxquery_lightcurve(rows).to_csv(path, index=False)
            named.append((str(name), path))
    write_name_map(outdir, named)
    return [path for _, path in named]


def export_parquet(ds: xr.Dataset, path: str | Path, block_rows: int = EXPORT_BLOCK_ROWS) -> Path:
    """Every measurement in one Parquet table (units in the column metadata of the cube), block by block."""
    path = output_file(path, "the Parquet export")
    writer = None
    try:
        for block in source_blocks(ds, block_rows):
            table = pa.Table.from_pandas(measurements_table(block), preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table.cast(writer.schema))
        if writer is None:  # no measurement: the table's columns, no rows
            measurements_table(ds.isel(obs=slice(0, 0))).to_parquet(path, index=False)
    finally:
        if writer is not None:
            writer.close()
    return path


def export_votable(ds: xr.Dataset, path: str | Path, block_rows: int = EXPORT_BLOCK_ROWS) -> Path:
    """The archive spectrophotometry service's layout (lambda, lambda_width, flux, flux_err, flags, mjd, ...),
    block by block: astropy writes each block's rows; the header and tail come from the first block."""
    path = output_file(path, "the VOTable export")
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        tail = None
        for block in source_blocks(ds, block_rows):
            head, rows, tail = _votable_pieces(votable_table(measurements_table(block)))
            if out.tell() == 0:
                out.write(head)
            out.write(rows)
        if tail is None:  # no measurement: the table's fields, no rows
            empty = votable_table(measurements_table(ds.isel(obs=slice(0, 0))))
            from_table(empty).to_xml(out, tabledata_format="tabledata")
        else:
            out.write(tail)
    return path


def _votable_pieces(table: Table) -> tuple[bytes, bytes, bytes]:
    """The VOTable astropy writes for `table`, cut into its header (up to the rows), rows and tail."""
    buf = io.BytesIO()
    from_table(table).to_xml(buf, tabledata_format="tabledata")
    text = buf.getvalue()
    begin = text.index(ROWS_BEGIN) + len(ROWS_BEGIN)
    end = text.rindex(b"\n", 0, text.index(ROWS_END, begin)) + 1
    return text[:begin], text[begin:end], text[end:]


def votable_table(df: pd.DataFrame) -> Table:
    """A measurements table in the spectrophotometry service's columns and units."""
    # strings as objects: arraysize "*", the same header for every block (astropy cannot type an empty object
    # column: a table without rows gets fixed-width ones)
    text = object if len(df) else "U1"
    t = Table()
    t["source"] = df["source"].astype(str).to_numpy(text)
    t["ra"], t["dec"] = df["ra"].to_numpy(), df["dec"].to_numpy()
    t["obs_id"] = df["obs_id"].astype(str).to_numpy(text)
    t["band"] = df["band"].to_numpy(np.int16)
    t["lambda"] = df["wavelength"].to_numpy()
    t["lambda_width"] = df["bandwidth"].to_numpy()
    t["flux"] = df["flux"].to_numpy()
    t["flux_err"] = df["flux_err"].to_numpy()
    combined = df["flags"].to_numpy(np.int64)
    if "condition" in df:
        combined = combined | df["condition"].to_numpy(np.int64)
    t["flags"] = combined
    t["mjd"] = df["mjd"].to_numpy()
    t["x"], t["y"] = df["x"].to_numpy(), df["y"].to_numpy()
    t["good"] = df["good"].to_numpy(bool)
    for col, unit in (("ra", "deg"), ("dec", "deg"), ("lambda", "um"), ("lambda_width", "um"), ("flux", "uJy"),
                      ("flux_err", "uJy"), ("mjd", "d"), ("x", "pix"), ("y", "pix")):
        t[col].unit = unit
    t.meta["description"] = "spxbatch forced photometry; flags = FILE bits (0-31) | condition bits (32+)"
    return t


def ab_magnitude(flux_ujy: np.ndarray, err_ujy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AB magnitude and its error; NaN where the flux is not positive."""
    flux_ujy = np.asarray(flux_ujy, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mag = np.where(flux_ujy > 0, -2.5 * np.log10(flux_ujy / AB_ZERO_POINT_UJY), np.nan)
        err = np.where(flux_ujy > 0, 1.0857 * np.asarray(err_ujy, float) / flux_ujy, np.nan)
    return mag, err
