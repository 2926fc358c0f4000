"""Dask cluster options: job counts, and the SLURM / PBS job scripts generated from the options."""

import socket

import dask
import pytest

from spxbatch.errors import ConfigError
from spxbatch.pipeline.cluster import dask_client, job_script, parse_jobs
from spxbatch.pipeline.config import ClusterConfig


def test_parse_jobs():
    assert parse_jobs("2") == (2, None)
    assert parse_jobs("1:4") == (1, 4)
    for bad in ("0", "4:1", "x", "1:"):
        with pytest.raises(ConfigError):
            parse_jobs(bad)


def test_slurm_job_script_from_options():
    cfg = ClusterConfig(kind="slurm", queue="debug", account="astro42", walltime="02:30:00", cores=4,
                        processes=2, memory="16GB", job_extra=["--constraint=cpu"], python="/opt/venv/bin/python")
    script = job_script(cfg)
    assert "#SBATCH -p debug" in script
    assert "#SBATCH -A astro42" in script
    assert "#SBATCH -t 02:30:00" in script
    assert "#SBATCH --cpus-per-task=4" in script
    assert "#SBATCH --constraint=cpu" in script
    assert "/opt/venv/bin/python -m distributed.cli.dask_worker" in script
    assert "--nworkers 2" in script and "--nthreads 2" in script
    assert "--memory-limit 7.45GiB" in script  # 16 GB over 2 worker processes


def test_pbs_job_script_from_options():
    cfg = ClusterConfig(kind="pbs", queue="workq", account="astro42", walltime="01:00:00", cores=8,
                        memory="32GB", python="/opt/venv/bin/python")
    script = job_script(cfg)
    assert "#PBS -q workq" in script
    assert "#PBS -A astro42" in script
    assert "#PBS -l walltime=01:00:00" in script
    assert "#PBS -l select=1:ncpus=8:mem=30GB" in script
    # one single-threaded worker process per core: SEP holds the GIL
    assert "--nworkers 8" in script and "--nthreads 1" in script
    assert "/opt/venv/bin/python -m distributed.cli.dask_worker" in script


def test_unknown_cluster_kind():
    with pytest.raises(ConfigError, match="slurm or pbs"):
        job_script(ClusterConfig(kind="lsf"))


def test_a_scheduler_that_is_not_there_is_one_sentence():
    """--scheduler at a port nobody listens on: a ConfigError (exit 2) naming the address, not an OSError."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(ConfigError, match=f"cannot connect to the Dask scheduler {address}"), \
            dask_client(ClusterConfig(scheduler=address)):
        pass


def test_local_workers_see_the_environment_as_it_is_when_the_cluster_starts(monkeypatch):
    """Workers forked from the fork server (started by an earlier cluster) still get this process's current
    environment: an S3 endpoint or credentials set after the first cluster reach the second one's workers."""
    from distributed import Client

    from spxbatch.pipeline.cluster import local_cluster

    def workers_value(name: str) -> str | None:  # read in the worker (a bound os.environ.get would carry ours)
        return __import__("os").environ.get(name)

    with local_cluster(1) as first, Client(first) as client:
        assert client.submit(workers_value, "SPXBATCH_TEST_LATE_VARIABLE").result() is None
    monkeypatch.setenv("SPXBATCH_TEST_LATE_VARIABLE", "set after the first cluster")
    with local_cluster(1) as second, Client(second) as client:
        assert client.submit(workers_value, "SPXBATCH_TEST_LATE_VARIABLE").result() == "set after the first cluster"
