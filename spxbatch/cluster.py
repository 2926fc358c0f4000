"""Dask clusters for a run: a LocalCluster of processes, an existing scheduler, or SLURM/PBS jobs.

SEP holds the GIL, so workers are processes with one thread each. Batch-system workers come from
dask-jobqueue; their jobs are cancelled when the run ends, fails or is interrupted (the cluster is closed
in a `finally`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from distributed import Client, LocalCluster

from .config import ClusterConfig, ConfigError


def parse_jobs(jobs: str) -> tuple[int, int | None]:
    """'2' -> (2, None): a fixed number of jobs; '1:4' -> (1, 4): adaptive between 1 and 4 jobs."""
    try:
        if ":" in str(jobs):
            lo, hi = (int(v) for v in str(jobs).split(":", 1))
            if not 0 <= lo <= hi or hi == 0:
                raise ValueError
            return lo, hi
        n = int(jobs)
        if n < 1:
            raise ValueError
        return n, None
    except ValueError:
        raise ConfigError(f"--jobs takes a count like 2 or an adaptive range like 1:4, not {jobs!r}") from None


def jobqueue_cluster(cfg: ClusterConfig):
    """A dask-jobqueue SLURMCluster or PBSCluster built from the options (no jobs submitted yet)."""
    from dask_jobqueue import PBSCluster, SLURMCluster

    kinds = {"slurm": SLURMCluster, "pbs": PBSCluster}
    if cfg.kind not in kinds:
        raise ConfigError(f"--cluster takes slurm or pbs, not {cfg.kind!r}")
    kwargs = dict(
        cores=cfg.cores, processes=cfg.processes or cfg.cores, memory=cfg.memory, walltime=cfg.walltime,
        queue=cfg.queue, account=cfg.account, job_extra_directives=list(cfg.job_extra),
        python=cfg.python or sys.executable, log_directory=cfg.log_directory,
        scheduler_options={"host": os.environ.get("SPXBATCH_SCHEDULER_HOST", "127.0.0.1"),
                           "dashboard_address": ":0"},
    )
    return kinds[cfg.kind](**kwargs)


def job_script(cfg: ClusterConfig) -> str:
    """The batch job script that `--cluster slurm|pbs` would submit for these options."""
    cluster = jobqueue_cluster(cfg)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


@contextlib.contextmanager
def dask_client(cfg: ClusterConfig) -> Iterator[Client]:
    """A connected Client for the run; whatever cluster it started is closed (jobs cancelled) on exit."""
    cluster = None
    try:
        if cfg.scheduler:
            client = Client(cfg.scheduler)
        elif cfg.kind:
            cluster = jobqueue_cluster(cfg)
            lo, hi = parse_jobs(cfg.jobs)
            if hi is None:
                cluster.scale(jobs=lo)
            else:
                cluster.adapt(minimum_jobs=lo, maximum_jobs=hi)
            client = Client(cluster)
        else:
            n = cfg.workers or os.cpu_count() or 1
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                   dashboard_address=":0", host="127.0.0.1")
            client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()
