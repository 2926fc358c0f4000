"""The Dask cluster whole-run tests use: real worker processes over TCP on loopback."""

from __future__ import annotations

from distributed import LocalCluster

from spxbatch.pipeline import cluster


def local_cluster(n_workers: int = 2) -> LocalCluster:
    """The LocalCluster a run on a laptop makes (`spxbatch.pipeline.cluster.local_cluster`): single-threaded
    worker processes on 127.0.0.1."""
    return cluster.local_cluster(n_workers)
