"""The assembly's store: created empty from a one-source template, filled region by region (regions sharing
a chunk keep each other's rows), and a region whose dtype is not the store's is refused, not cast."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from spxbatch.cube.assemble import assemble_cube
from spxbatch.cube.regions import consolidate, write_region
from spxbatch.errors import StageError
from spxbatch.pipeline.assembly.store import create_store


def _template() -> xr.Dataset:
    m = pd.DataFrame({"source_index": [0], "flux": [1.0], "flux_err": [0.1], "wavelength": [1.0], "band": [1],
                      "mjd": [60000.0], "obs_id": ["a"], "good": [True], "flags": np.zeros(1, np.int32)})
    return assemble_cube(np.array(["s"], dtype=object), np.zeros(1), np.zeros(1), m)


def test_regions_sharing_a_chunk_keep_each_others_rows(tmp_path):
    path = tmp_path / "c.zarr"
    create_store(path, _template(), {"source": 3, "obs": 10, "failure": 0}, {"source": 3, "obs": 4, "failure": 4},
                 np.array(["x", "y", "z"], dtype=object), {"title": "t"})
    for start, stop in ((0, 3), (3, 7), (7, 10)):  # every region ends inside a chunk of 4
        rows = xr.Dataset({"mjd": ("obs", np.arange(start, stop, dtype=float)),
                           "obs_id": ("obs", np.array([f"o{i}" for i in range(start, stop)], dtype=object))})
        write_region(path, rows, "obs", start, 4, 10)
    consolidate(path)
    back = xr.open_zarr(path, zarr_format=3, consolidated=True).load()
    assert back["mjd"].values.tolist() == list(range(10))
    assert back["obs_id"].values.tolist() == [f"o{i}" for i in range(10)]
    assert back["source"].values.tolist() == ["x", "y", "z"] and back.attrs["title"] == "t"
    with pytest.raises(StageError, match=r"band is float64 in rows 0\.\.2 of obs but int8"):
        write_region(path, xr.Dataset({"band": ("obs", [1.0, np.nan])}), "obs", 0, 4, 10)


def test_a_small_template_written_whole_makes_the_lazy_templates_store(tmp_path, monkeypatch):
    """A small cube's template is written from memory, a large one's lazily: the same arrays (dtype, fill
    value, chunks, attributes) and, once the regions are written, the same cube."""
    import zarr

    from spxbatch.pipeline.assembly import store

    stores = {}
    for name, limit in (("small", store.SMALL_TEMPLATE_BYTES), ("lazy", 0)):
        monkeypatch.setattr(store, "SMALL_TEMPLATE_BYTES", limit)
        path = tmp_path / f"{name}.zarr"
        create_store(path, _template(), {"source": 3, "obs": 10, "failure": 0}, {"source": 3, "obs": 4, "failure": 4},
                     np.array(["x", "y", "z"], dtype=object), {"title": "t"})
        meta = {k: a.metadata.to_dict() for k, a in zarr.open_group(str(path), mode="r", zarr_format=3).arrays()}
        rows = xr.Dataset({"mjd": ("obs", np.arange(10, dtype=float)),
                           "obs_id": ("obs", np.array([f"o{i}" for i in range(10)], dtype=object))})
        write_region(path, rows, "obs", 0, 4, 10)
        consolidate(path)
        stores[name] = (meta, xr.open_zarr(path, zarr_format=3, consolidated=True).load())
    assert stores["small"][0] == stores["lazy"][0]
    small, lazy = stores["small"][1], stores["lazy"][1]
    assert small.attrs.pop("created") and lazy.attrs.pop("created")  # the time of writing
    xr.testing.assert_identical(small, lazy)
