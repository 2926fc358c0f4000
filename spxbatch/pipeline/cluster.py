"""Dask clusters for a run: a LocalCluster of processes, an existing scheduler, or SLURM/PBS jobs.

SEP holds the GIL, so workers are processes with one thread each. Batch-system workers come from
dask-jobqueue; their jobs are cancelled when the run ends, fails or is interrupted (the cluster is closed
in a `finally`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator

import dask
from distributed import Client, LocalCluster
from distributed.core import Status
from distributed.utils import get_mp_context

from spxbatch.errors import ConfigError
from spxbatch.pipeline.config_tables import ClusterConfig, parse_jobs

#: The address the scheduler of batch-job workers listens on (default: this host's main address, which
#: compute nodes must be able to reach; dask-jobqueue's `interface` setting in the Dask config also works).
SCHEDULER_HOST_ENV = "SPXBATCH_SCHEDULER_HOST"
#: Modules a local cluster's fork server imports once for all its workers: Dask's and the measuring task's.
WORKER_PRELOAD = ("distributed", "spxbatch.pipeline.measure")


def _import_jobqueue():
    """The dask_jobqueue module, without the SIGINT handler its import installs (`sys.exit()`, i.e. exit code
    0 on Ctrl-C): Ctrl-C must stay a KeyboardInterrupt so an interrupted run exits 130, jobs cancelled."""
    import dask_jobqueue

    handler = signal.getsignal(signal.SIGINT)
    if (getattr(handler, "__module__", "") or "").startswith("dask_jobqueue") and \
            threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return dask_jobqueue


def jobqueue_cluster(cfg: ClusterConfig):
    """A dask-jobqueue SLURMCluster or PBSCluster built from the options (no jobs submitted yet)."""
    jq = _import_jobqueue()
    kinds = {"slurm": jq.SLURMCluster, "pbs": jq.PBSCluster}
    if cfg.kind not in kinds:
        raise ConfigError(f"--cluster takes slurm or pbs, not {cfg.kind!r}")
    scheduler_options = {"dashboard_address": ":0"}
    if os.environ.get(SCHEDULER_HOST_ENV):
        scheduler_options["host"] = os.environ[SCHEDULER_HOST_ENV]
    kwargs = dict(
        cores=cfg.cores, processes=cfg.processes or cfg.cores, memory=cfg.memory, walltime=cfg.walltime,
        queue=cfg.queue, account=cfg.account, job_extra_directives=list(cfg.job_extra),
        python=cfg.python or sys.executable, log_directory=cfg.log_directory,
        scheduler_options=scheduler_options,
    )
    return kinds[cfg.kind](**kwargs)


def job_script(cfg: ClusterConfig) -> str:
    """The batch job script that `--cluster slurm|pbs` would submit for these options."""
    cluster = jobqueue_cluster(cfg)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


def _submit_jobs(cluster, n_jobs: int, kind: str) -> None:
    """Submit `n_jobs` worker jobs now and wait for the submissions (not for the jobs to start), so that a
    job the batch system refuses (unknown queue or account, walltime too long...) stops the run with a
    clear message instead of leaving it waiting forever for workers."""
    cluster.scale(jobs=n_jobs)
    with contextlib.suppress(RuntimeError):  # judged below: the error goes to whichever call ran sbatch
        cluster.sync(cluster._correct_state)  # waits for the submissions scale() started (they hold its lock)
    refused = [job for job in cluster.workers.values() if getattr(job, "job_id", None) is None]
    if refused:
        for job in refused:  # never submitted: nothing to cancel, and closing the cluster must not wait on them
            job.status = Status.failed
        raise ConfigError(f"the {kind} batch system refused the worker job ({_refusal_detail(cluster, kind)}); "
                          "check --queue, --account, --walltime, --cores and --memory")


def _refusal_detail(cluster, kind: str) -> str:
    """The batch system's own reason: `sbatch --test-only` says it without submitting anything."""
    if kind != "slurm":
        return "its error is logged above"
    with tempfile.NamedTemporaryFile("w", suffix=".sh") as script:
        script.write(cluster.job_script())
        script.flush()
        res = subprocess.run(["sbatch", "--test-only", script.name], capture_output=True, text=True, timeout=60)
    return " ".join(res.stderr.split()) or "sbatch failed"


@contextlib.contextmanager
def dask_client(cfg: ClusterConfig) -> Iterator[Client]:
    """A connected Client for the run; whatever cluster it started is closed (jobs cancelled) on exit."""
    cluster = None
    try:
        if cfg.scheduler:
            client = _connect(cfg.scheduler)
        elif cfg.kind:
            cluster = jobqueue_cluster(cfg)
            lo, hi = parse_jobs(cfg.jobs)
            if lo:
                _submit_jobs(cluster, lo, cfg.kind)
            if hi is not None:
                cluster.adapt(minimum_jobs=lo, maximum_jobs=hi)
            client = Client(cluster)
        else:
            n = cfg.workers or os.cpu_count() or 1
            cluster = local_cluster(n)
            client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        if cluster is not None:
            _close(cluster, batch=bool(cfg.kind) and not cfg.scheduler)


def local_cluster(n_workers: int) -> LocalCluster:
    """A LocalCluster of `n_workers` single-threaded worker processes on 127.0.0.1, forked from a fork server
    that imported the measuring modules once (where the platform has one): spawned workers each re-import
    them (seconds of CPU apiece, on the cores the plan and the first images need) and take seconds to close."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                            host="127.0.0.1")
    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        get_mp_context()  # distributed sets its own preload list once; ours replaces it before the server starts
        multiprocessing.get_context("forkserver").set_forkserver_preload(list(WORKER_PRELOAD))
        # the fork server keeps the environment it started with: each worker gets this process's as it is now
        # (credentials, an S3 endpoint or a cache directory set since), as a spawned worker would
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                            host="127.0.0.1", env=dict(os.environ))


def _connect(address: str) -> Client:
    """A Client of the running scheduler at `address`; a ConfigError (exit 2) saying so when there is none."""
    try:
        return Client(address)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot connect to the Dask scheduler {address} ({exc}); check the scheduler option "
                          "(--scheduler) and that the scheduler is running") from None


def _close(cluster, batch: bool) -> None:
    """Close the cluster; batch jobs are cancelled with Ctrl-C held off meanwhile (a second, impatient
    Ctrl-C would otherwise abort the cancelling and leave the jobs queued until their walltime)."""
    if not batch or threading.current_thread() is not threading.main_thread():
        cluster.close()
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        cluster.close()
    finally:
        signal.signal(signal.SIGINT, previous)
