"""The executor started ahead of need: entered once, in the background, errors handed to whoever asks, and
always exited, even when nobody asked for it."""

from __future__ import annotations

import contextlib
import threading

import pytest

from spxbatch.pipeline.config_tables import ClusterConfig
from spxbatch.pipeline.early_start import ExecutorStarter, may_stay_in_process, tiny


class _Recorder:
    """A context whose entering waits for `go` and records the threads and order of enter and exit."""

    def __init__(self, fail: bool = False) -> None:
        self.go = threading.Event()
        self.events: list[tuple[str, str]] = []
        self.fail = fail

    @contextlib.contextmanager
    def make(self):
        self.go.wait(5)
        self.events.append(("enter", threading.current_thread().name))
        if self.fail:
            raise OSError("no cluster")
        try:
            yield "executor"
        finally:
            self.events.append(("exit", threading.current_thread().name))


def test_started_early_it_is_entered_in_the_background_once_and_exited_on_close():
    rec = _Recorder()
    starter = ExecutorStarter(rec.make)
    starter.start_early()
    assert rec.events == []  # still starting: the caller goes on (plans) meanwhile
    rec.go.set()
    assert starter.get() == "executor" and starter.get() == "executor"
    assert rec.events == [("enter", "spxbatch-cluster-start")]
    starter.close()
    assert [e for e, _ in rec.events] == ["enter", "exit"]


def test_without_early_start_it_is_entered_on_first_use():
    rec = _Recorder()
    rec.go.set()
    starter = ExecutorStarter(rec.make)
    assert starter.get() == "executor" and rec.events == [("enter", threading.current_thread().name)]
    starter.close()
    assert len(rec.events) == 2


def test_a_start_under_way_is_waited_for_and_exited_when_the_run_stops_first():
    rec = _Recorder()
    starter = ExecutorStarter(rec.make)
    starter.start_early()
    threading.Timer(0.05, rec.go.set).start()
    starter.close()  # e.g. the plan failed: nothing started may be left running
    assert [e for e, _ in rec.events] == ["enter", "exit"]


def test_an_error_starting_it_is_raised_to_whoever_asks():
    rec = _Recorder(fail=True)
    rec.go.set()
    starter = ExecutorStarter(rec.make)
    starter.start_early()
    with pytest.raises(OSError, match="no cluster"):
        starter.get()
    starter.close()
    assert rec.events == [("enter", "spxbatch-cluster-start")]


def test_only_a_local_cluster_of_unchosen_size_may_give_way_to_this_process():
    assert may_stay_in_process(ClusterConfig())
    assert not may_stay_in_process(ClusterConfig(workers=2))  # the user asked for worker processes
    assert not may_stay_in_process(ClusterConfig(scheduler="tcp://127.0.0.1:8786"))
    assert not may_stay_in_process(ClusterConfig(kind="slurm"))
    assert not may_stay_in_process(ClusterConfig(in_process_max_images=0))
    limits = ClusterConfig(in_process_max_images=8, in_process_max_pairs=100)
    assert tiny(limits, 8, 100) and not tiny(limits, 9, 10) and not tiny(limits, 2, 101)
