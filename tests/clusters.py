"""The Dask cluster whole-run tests use: real worker processes over TCP on loopback."""

from __future__ import annotations

from distributed import LocalCluster


def local_cluster(n_workers: int = 2) -> LocalCluster:
    """A LocalCluster of single-threaded worker processes on 127.0.0.1 (as a run on a laptop makes)."""
    return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                        host="127.0.0.1")
