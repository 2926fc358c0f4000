"""`--cluster slurm` against a real single-node SLURM (munge, slurmctld, slurmd on loopback): worker jobs
seen in squeue and gone after the run, the cube equal to a LocalCluster run's, a worker job cancelled
mid-run, adaptive scaling, Ctrl-C, and the archive-reachability check on the workers.

Skipped, with the reason, only when the slurm-wlm / munge packages are missing (or not running as root).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cubes import assert_cubes_equal
from slurm_cluster import LocalSlurm, free_port, unavailable_reason

from spxbatch.archive.errors import ArchiveUnreachable
from spxbatch.cube.store import open_cube
from spxbatch.errors import ConfigError
from spxbatch.pipeline.cluster import dask_client
from spxbatch.pipeline.config import ClusterConfig
from spxbatch.pipeline.reachability import check_archive_reachable
from spxbatch.pipeline.stages import run
from spxbatch.sim.server import serve_archive

#: Options of every worker job: one core each on the 2-CPU node.
JOB_OPTIONS = {"queue": "debug", "walltime": "00:10:00", "cores": 1, "memory": "1GB"}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """One SLURM cluster for the module; SLURM_CONF points every command (and dask-jobqueue) at it."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"), cpus=2)
    with pytest.MonkeyPatch.context() as mp, cluster:
        daemons = list(cluster.procs.values())
        assert len(daemons) == 3  # munged, slurmctld, slurmd
        mp.setenv("SLURM_CONF", str(cluster.conf))
        yield cluster
    assert all(p.poll() is not None for p in daemons)  # stopped at teardown


@pytest.fixture(autouse=True)
def no_jobs_left(request):
    """Every test starts and ends with an empty queue (jobs are cancelled when a run ends)."""
    if "slurm" not in request.fixturenames:
        yield
        return
    cluster = request.getfixturevalue("slurm")
    assert cluster.jobs() == []
    yield
    assert wait_until(lambda: cluster.jobs() == [], 20), cluster.jobs()


@pytest.fixture(scope="module")
def server(sim_archive):
    with serve_archive(sim_archive.root) as srv:
        yield srv


@pytest.fixture(scope="module")
def local_cube(sim_archive, server, tmp_path_factory):
    """The reference: the same catalog on a LocalCluster of 2 processes."""
    out = tmp_path_factory.mktemp("local") / "cube.zarr"
    run(sim_archive.catalog, out, archive=server.url, progress=False, cluster=ClusterConfig(workers=2))
    return open_cube(out).load()


def wait_until(predicate, timeout: float, step: float = 0.2) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


class QueueWatcher(threading.Thread):
    """Polls squeue in the background: the most RUNNING jobs seen at once, and every job id seen."""

    def __init__(self, cluster: LocalSlurm, on_poll=None):
        super().__init__(daemon=True)
        self.cluster, self.on_poll = cluster, on_poll
        self.max_running, self.ids, self.history = 0, set(), []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            jobs = self.cluster.jobs()
            running = [j for j in jobs if j["state"] == "RUNNING"]
            self.max_running = max(self.max_running, len(running))
            self.ids |= {j["id"] for j in jobs}
            self.history.append(len(running))
            if self.on_poll:
                self.on_poll(jobs)
            time.sleep(0.2)

    def __enter__(self) -> QueueWatcher:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join(timeout=30)


def slurm_config(tmp_path: Path, jobs: str) -> ClusterConfig:
    return ClusterConfig(kind="slurm", jobs=jobs, log_directory=str(tmp_path / "logs"), **JOB_OPTIONS)


def test_two_worker_jobs_cube_equals_local(slurm, sim_archive, server, local_cube, tmp_path):
    out = tmp_path / "slurm.zarr"
    with QueueWatcher(slurm) as watch:
        run(sim_archive.catalog, out, archive=server.url, progress=False, cluster=slurm_config(tmp_path, "2"))
    assert watch.max_running == 2, watch.history
    assert len(watch.ids) == 2
    assert wait_until(lambda: slurm.jobs() == [], 20), slurm.jobs()
    assert_cubes_equal(local_cube, open_cube(out).load())
    logs = list((tmp_path / "logs").glob("*.err"))  # the job logs went where the options said
    assert len(logs) == 2 and all("Start worker at" in p.read_text() for p in logs)


@pytest.mark.slow  # ~9 s; adaptive jobs are in the default suite through test_adaptive_jobs_grow_while_...
def test_adaptive_run_from_zero_jobs_cube_equals_local(slurm, sim_archive, server, local_cube, tmp_path):
    """`--jobs 0:2`: no job until there is work (the reachability probe asks for the first), none after."""
    out = tmp_path / "adaptive.zarr"
    with QueueWatcher(slurm) as watch:
        run(sim_archive.catalog, out, archive=server.url, progress=False, cluster=slurm_config(tmp_path, "0:2"))
    assert watch.max_running >= 1, watch.history
    assert wait_until(lambda: slurm.jobs() == [], 20), slurm.jobs()
    assert_cubes_equal(local_cube, open_cube(out).load())


def _cli(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "spxbatch.cli", *args], cwd=cwd, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow  # ~24 s; a worker lost mid-task is in the default suite (test_worker_killed_mid_task_...)
def test_cli_scancel_one_worker_job_mid_run(slurm, sim_archive, local_cube, tmp_path):
    out = tmp_path / "cancel.zarr"
    parts = tmp_path / "cancel.run" / "parts"
    cancelled: list[str] = []

    def cancel_one(jobs):
        running = [j for j in jobs if j["state"] == "RUNNING"]
        if not cancelled and len(running) == 2 and len(list(parts.glob("img_*.parquet"))) >= 2:
            slurm.run("scancel", running[0]["id"])
            cancelled.append(running[0]["id"])

    with serve_archive(sim_archive.root, latency=0.1) as srv, QueueWatcher(slurm, cancel_one):
        proc = _cli([str(sim_archive.catalog), "-o", str(out), "--archive", srv.url, "--no-progress",
                     "--images-per-task", "1", "--cluster", "slurm", "--jobs", "2", "--queue", "debug",
                     "--walltime", "00:10:00", "--cores", "1", "--memory", "1GB"], cwd=tmp_path)
        text, _ = proc.communicate(timeout=240)
    assert cancelled, "the run ended before a worker job could be cancelled"
    assert proc.returncode == 0, text
    assert_cubes_equal(local_cube, open_cube(out).load())  # nothing lost, nothing recorded as failed


def test_adaptive_jobs_grow_while_work_is_queued_then_shrink(slurm, tmp_path):
    with QueueWatcher(slurm) as watch, dask_client(slurm_config(tmp_path, "1:2")) as client:
        assert wait_until(lambda: len(slurm.running_jobs()) == 1, 60), slurm.jobs()  # the minimum
        futures = client.map(time.sleep, [1.5] * 10, pure=False)
        assert wait_until(lambda: len(slurm.running_jobs()) == 2, 60), slurm.jobs()
        client.gather(futures)
        assert wait_until(lambda: len(slurm.jobs()) == 1, 60), slurm.jobs()
    assert watch.max_running == 2
    assert wait_until(lambda: slurm.jobs() == [], 20), slurm.jobs()


@pytest.mark.parametrize("interrupts", [1, pytest.param(3, marks=pytest.mark.slow)])  # 3: an impatient user, slow
def test_ctrl_c_cancels_worker_jobs(slurm, sim_archive, tmp_path, interrupts):
    """SIGINT to the CLI's process group (what Ctrl-C does) mid-run: exit 130 and an empty queue; an impatient
    user's repeated Ctrl-C (50 ms apart, landing while the jobs are being cancelled) leaves no job either."""
    config = tmp_path / "run.toml"  # the cluster options from a config file this time
    config.write_text('[cluster]\nkind = "slurm"\njobs = "1:2"\n'
                      + "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in JOB_OPTIONS.items()))
    parts = tmp_path / "int.run" / "parts"
    with serve_archive(sim_archive.root, latency=0.25) as srv:
        proc = _cli([str(sim_archive.catalog), "-o", str(tmp_path / "int.zarr"), "--archive", srv.url,
                     "--config", str(config), "--no-progress", "--images-per-task", "1"], cwd=tmp_path)
        started = wait_until(lambda: slurm.running_jobs() and any(parts.glob("img_*.parquet")), 120)
        assert started and proc.poll() is None, proc.communicate()[0] if proc.poll() is not None else ""
        for _ in range(interrupts):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                time.sleep(0.05)
        text, _ = proc.communicate(timeout=60)
    assert "interrupted" in text
    if interrupts == 1:
        assert proc.returncode == 130, text
    assert wait_until(lambda: slurm.jobs() == [], 20), slurm.jobs()


def test_cli_stops_when_worker_jobs_cannot_reach_the_archive(slurm, sim_archive, tmp_path):
    """Planned while the archive was up; measured after it went away: exit 4, the mirror hint, no jobs left."""
    args = [str(sim_archive.catalog), "-o", str(tmp_path / "gone.zarr"), "--no-progress"]
    with serve_archive(sim_archive.root) as srv:
        proc = _cli([*args, "--archive", srv.url, "--stages", "plan"], cwd=tmp_path)
        text, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, text
    proc = _cli([*args, "--cluster", "slurm", "--jobs", "1", "--queue", "debug", "--walltime", "00:05:00",
                 "--cores", "1", "--memory", "1GB"], cwd=tmp_path)
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 4, text
    assert "cannot reach the archive" in text and "spxbatch stage" in text and "--archive MIRROR_DIR" in text
    assert not any((tmp_path / "gone.run" / "parts").glob("img_*.parquet"))  # nothing was submitted


@pytest.fixture(scope="module")
def local_client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        yield client


def test_reachability_check(local_client, sim_archive, server, tmp_path):
    """Any HTTP answer counts as reachable (even 404); a refused connection or a missing mirror does not."""
    check_archive_reachable(local_client, server.url)  # the file root itself answers 404
    check_archive_reachable(local_client, server.url, server.url + "/ibe/data/spherex/no/such.fits")
    check_archive_reachable(local_client, str(sim_archive.root))
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(ArchiveUnreachable, match="spxbatch stage") as err:
        check_archive_reachable(local_client, dead)
    assert "--archive MIRROR_DIR" in str(err.value) and dead in str(err.value)
    with pytest.raises(ArchiveUnreachable, match="local mirror"):
        check_archive_reachable(local_client, str(sim_archive.root), str(tmp_path / "not-shared" / "x.fits"))


def test_a_refused_worker_job_stops_the_run_with_the_reason(slurm, tmp_path):
    """sbatch refusing the job (unknown partition) is a ConfigError saying why, not a run waiting forever."""
    cfg = dataclasses.replace(slurm_config(tmp_path, "1:2"), queue="nosuch")
    t0 = time.time()
    with pytest.raises(ConfigError, match=r"refused the worker job.*(?i:invalid partition).*--queue"), \
            dask_client(cfg):
        pass
    assert time.time() - t0 < 30
