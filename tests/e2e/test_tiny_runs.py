"""A tiny run is measured in this process: no worker processes are started for a plan of a few images, and
its cube equals the one a cluster makes; a run the archive's answer shows to be bigger starts its cluster
while it plans, as before."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from spxbatch.cube.store import open_cube
from spxbatch.pipeline import cluster as cluster_module
from spxbatch.pipeline.config import ClusterConfig, RunConfig
from spxbatch.pipeline.stages import Pipeline


@pytest.fixture
def cluster_starts(monkeypatch):
    """The threads local clusters were started from (a spy around the real local_cluster)."""
    started: list[str] = []
    real = cluster_module.local_cluster

    def spy(n_workers: int):
        started.append(threading.current_thread().name)
        return real(n_workers)

    monkeypatch.setattr(cluster_module, "local_cluster", spy)
    return started


def _run(sim_archive, tmp_path, name: str, rows: int, **cluster) -> tuple[Pipeline, object]:
    cat = pd.read_csv(sim_archive.catalog).head(rows)
    cat_path = tmp_path / f"{name}.csv"
    cat.to_csv(cat_path, index=False)
    cfg = RunConfig(catalog=str(cat_path), output=str(tmp_path / f"{name}.zarr"), archive=str(sim_archive.root),
                    bands=[1], progress=False, cluster=ClusterConfig(**cluster))
    pipe = Pipeline(cfg)
    pipe.run(in_memory=False)
    return pipe, open_cube(cfg.output).load()


def test_a_tiny_plan_starts_no_workers_and_equals_a_cluster_run(sim_archive, tmp_path, cluster_starts):
    pipe, tiny = _run(sim_archive, tmp_path, "tiny", 3)
    planned = pipe.rundir.read_state()["stages"]["plan"]
    assert 0 < planned["images"] <= ClusterConfig().in_process_max_images
    assert cluster_starts == []  # no worker process was started, early or late
    assert tiny.sizes["obs"] > 0
    _, on_cluster = _run(sim_archive, tmp_path, "cluster", 3, in_process_max_images=0)
    assert len(cluster_starts) == 1
    assert tiny.sizes == on_cluster.sizes
    for var in ("flux", "flux_err", "flux_psf", "mjd", "good", "obs_id"):
        np.testing.assert_array_equal(tiny[var].values, on_cluster[var].values, err_msg=var)


def test_a_plan_the_archive_shows_to_be_bigger_starts_its_cluster_while_planning(sim_archive, tmp_path,
                                                                                 cluster_starts):
    pipe, cube = _run(sim_archive, tmp_path, "bigger", 3, in_process_max_images=1)
    assert pipe.rundir.read_state()["stages"]["plan"]["images"] > 1
    assert cluster_starts == ["spxbatch-cluster-start"]  # started in the background, during the plan
    assert cube.sizes["obs"] > 0
