"""The fetch strategy never changes a number: photometry on every strategy's regions gives identical tables."""

from __future__ import annotations

import pandas as pd

from spxbatch.fetch.cache import FetchCache
from spxbatch.fetch.fetch import FetchOptions, fetch_image
from spxbatch.level2.naming import IBE_ROOT
from spxbatch.photometry import PhotometryConfig, neighbourhood_halfsize
from spxbatch.photometry.measure import measure_region
from spxbatch.sim.server import serve_archive


def _measure(result, ra, dec, config) -> pd.DataFrame:
    assert result.error is None, result.error
    parts = [pd.DataFrame(measure_region(region, ra[idx], dec[idx], config, source_index=idx, neighbours=(ra, dec)))
             for region, idx in result.regions]
    return pd.concat(parts).sort_values("source_index").reset_index(drop=True)


def test_same_photometry_whatever_the_strategy(sim_archive):
    config = PhotometryConfig()
    halfsize = neighbourhood_halfsize(config)
    truth = pd.read_parquet(sim_archive.truth["measurements"])
    catalog = pd.read_csv(sim_archive.truth["catalog"]).set_index("name")
    relpath = sim_archive.files[0]
    rows = truth[truth["relpath"] == relpath].join(catalog[["ra", "dec"]], on="name").iloc[::8]
    ra, dec = rows["ra"].to_numpy(), rows["dec"].to_numpy()
    variants = {"boxes": ("range", {}), "strips": ("range", {"boxes": False}), "cutout": ("cutout", {}),
                "whole": ("whole", {})}
    tables = {}
    with serve_archive(sim_archive.root) as srv:
        row = srv.index.set_index("relpath").loc[relpath]
        image = {"url": srv.file_url(relpath), "relpath": f"{IBE_ROOT}/{relpath}",
                 "detector": int(row["detector"]), "nx": int(row["nx"]), "ny": int(row["ny"])}
        for name, (strategy, changes) in variants.items():
            result = fetch_image(image, ra, dec, strategy=strategy, halfsize=halfsize, cache=FetchCache(),
                                 options=FetchOptions(**changes))
            tables[name] = _measure(result, ra, dec, config)
    local = fetch_image(image, ra, dec, halfsize=halfsize, cache=FetchCache(),
                        options=FetchOptions(file_root=str(sim_archive.root)))
    tables["local"] = _measure(local, ra, dec, config)
    reference = tables.pop("whole")
    assert len(reference) == ra.size and reference["flux"].notna().sum() > ra.size // 2
    for name, table in tables.items():
        pd.testing.assert_frame_equal(table, reference, check_exact=True, obj=name)
