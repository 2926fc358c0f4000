"""File names of per-source outputs: plain names kept, distinct names never share a file (case-insensitively
too), long names bounded, the same name given the same file whichever sources are drawn; and through
`plot_cube` and `export_csv` on a real cube whose names collide and run to 300 characters."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from spxbatch.cube.export import export_csv
from spxbatch.cube.filenames import MAX_STEM_BYTES, NAME_MAP, safe_filename, source_file_stems
from spxbatch.cube.store import open_cube, write_cube
from spxbatch.figures.batch import plot_cube

COLLIDING = ["a b", "a/b", "a_b", "A_B", "a?b", "x" * 300, "x" * 299 + "y", ".hidden", "..", "Ω" * 100,
             "a_b-" + source_file_stems(["a b"])["a b"].split("-")[-1]]


def test_stems_are_unique_bounded_and_plain_names_kept():
    names = [*COLLIDING, "demo-00001", "NGC_1068", "3C.273+x"]
    stems = source_file_stems(names)
    assert len({s.casefold() for s in stems.values()}) == len(names)
    assert all(len(s.encode()) <= MAX_STEM_BYTES and s == safe_filename(s) and not s.startswith(".")
               for s in stems.values())
    assert stems["demo-00001"] == "demo-00001" and stems["NGC_1068"] == "NGC_1068" and stems["3C.273+x"] == "3C.273+x"
    assert stems["a b"].startswith("a_b-") and stems["x" * 300].startswith("x" * 40)
    assert source_file_stems(names) == stems  # deterministic
    assert source_file_stems(list(reversed(names)))["a b"] == stems["a b"]  # not the order of the catalog


def _renamed_cube(sim_run, tmp_path, new_names: list[str]):
    """The test run's cube with its first measured sources renamed (a cube spxbatch wrote, other names)."""
    ds = open_cube(sim_run, dask=False).load()
    names = ds["source"].values.astype(object)
    measured = np.flatnonzero(ds["row_size"].values > 0)[:len(new_names)]
    names[measured] = new_names
    ds = ds.assign_coords(source=names) if "source" in ds.coords else ds.assign(source=("source", names))
    path = tmp_path / "renamed.zarr"
    write_cube(ds, path)
    return path, list(names[measured])


def test_plot_and_export_keep_colliding_and_long_names_apart(sim_run, tmp_path):
    cube, names = _renamed_cube(sim_run, tmp_path, ["a b", "a/b", "a_b", "x" * 300, "x" * 299 + "y"])
    figures = plot_cube(cube, names, tmp_path / "figs", workers=1)[1:]
    assert len(set(figures)) == len(names) and all(p.is_file() and len(p.name) <= 100 for p in figures)
    pixels = [np.asarray(Image.open(p)) for p in figures]
    assert all(not np.array_equal(pixels[0], other) for other in pixels[1:])  # five sources, five figures
    mapping = pd.read_csv(tmp_path / "figs" / NAME_MAP, keep_default_na=False)
    assert list(mapping["source"]) == names and list(mapping["file"]) == [p.name for p in figures]

    curves = export_csv(open_cube(cube).load(), tmp_path / "csv")
    table = pd.read_csv(tmp_path / "csv" / NAME_MAP, keep_default_na=False).set_index("source")
    assert len(set(curves)) == len(curves) and all(len(p.name) <= 100 for p in curves)
    ds = open_cube(cube, dask=False)
    for name in names:
        lc = pd.read_csv(tmp_path / "csv" / table.loc[name, "file"])
        np.testing.assert_allclose(np.sort(lc["flux"]), np.sort(ds.spx.source(name)["flux"].values))
