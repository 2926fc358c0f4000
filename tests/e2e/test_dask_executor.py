"""The Dask executor against a real LocalCluster: the same outcomes as the serial executor, waves sized by
the connected workers, Dask's task retries, cancel, and `Pipeline.measure` giving the same parts either way."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
from waits import wait_until

from spxbatch.pipeline.config import RunConfig
from spxbatch.pipeline.executor import DaskExecutor, Executor, SerialExecutor, Task, as_executor, batched, run_in_waves
from spxbatch.pipeline.stages import Pipeline


def cube_of(batch: list[int]) -> list[int]:
    return [x**3 for x in batch]


def fail_once(marker: str, x: int) -> int:
    """Fails the first time it runs anywhere (the marker file is shared by the worker processes)."""
    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise RuntimeError("first attempt fails")
    return x


def test_dask_and_serial_give_the_same_outcomes(client):
    def collect(executor: Executor) -> list[tuple[list[int], list[int]]]:
        out = []
        run_in_waves(executor, batched(list(range(40)), 3), lambda b: Task(cube_of, (b,)),
                     lambda b, o: out.append((b, o.result)))
        return sorted(out)

    dask = DaskExecutor(client)
    assert isinstance(dask, Executor) and dask.dashboard_link and dask.capacity() == 8  # 4 per worker
    assert collect(dask) == collect(SerialExecutor())


def test_dask_retries_a_failed_task(client, tmp_path):
    ex = as_executor(client, retries=1)
    ex.submit([Task(fail_once, (str(tmp_path / "m"), 7))])
    assert [o.result for o in ex.as_completed()] == [7]
    ex = DaskExecutor(client, retries=0)
    ex.submit([Task(fail_once, (str(tmp_path / "n"), 7))])
    (outcome,) = ex.as_completed()
    assert isinstance(outcome.error, RuntimeError)


def sleep_then_mark(folder: str, i: int) -> int:
    time.sleep(2.0)
    (Path(folder) / str(i)).touch()
    return i


def test_cancel_drops_pending_tasks(client, tmp_path):
    ex = DaskExecutor(client)
    ex.submit([Task(sleep_then_mark, (str(tmp_path), i)) for i in range(12)])
    wait_until(lambda: any(client.processing().values()), "the first tasks running", timeout=30)
    ex.cancel()
    assert list(ex.as_completed()) == []
    # the tasks already running finish (a worker cannot stop one): their marks appear; then one task's length
    # more, in which a queued task that wrongly started after the cancel would have marked too
    wait_until(lambda: any(tmp_path.iterdir()), "the running tasks' marks", timeout=60)
    time.sleep(2.5)
    ran = len(list(tmp_path.iterdir()))
    assert ran <= 4  # at most those already running on the 2 workers finished; the queued ones never ran
    assert ex.call(sum, [1, 2]) == 3  # the cluster is free for more work


def test_measure_gives_the_same_parts_on_dask_and_serially(client, sim_archive, tmp_path):
    parts = []
    for name, executor in (("dask", DaskExecutor(client, retries=2)), ("serial", SerialExecutor())):
        pipe = Pipeline(RunConfig(catalog=str(sim_archive.catalog), output=str(tmp_path / f"{name}.zarr"),
                                  archive=str(sim_archive.root), progress=False))
        pipe.plan()
        pipe.measure(executor)
        table = pipe.rundir.read_parts().drop(columns="date_added")  # when it was measured: run-specific
        parts.append(table.sort_values(["image_id", "source_index"]).reset_index(drop=True))
    pd.testing.assert_frame_equal(parts[0], parts[1])


def test_a_cluster_started_during_a_failing_plan_is_shut_down(sim_archive, tmp_path):
    """The run's own local cluster starts while the plan is made; when the plan fails (the archive does not
    answer), its worker processes are gone when the error reaches the caller."""
    import socket

    import psutil

    from spxbatch.archive.errors import ArchiveUnreachable
    from spxbatch.pipeline.stages import run

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(ArchiveUnreachable):
        run(sim_archive.catalog, tmp_path / "c.zarr", archive=dead, progress=False, fetch_attempts=1,
            cluster={"workers": 1})
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before and p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE]
    assert left == []
