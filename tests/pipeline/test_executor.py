"""The executor seam without a cluster: the serial executor (order, retries, cancel, errors as outcomes) and
`run_in_waves` (bounded in-flight tasks that follow the capacity, outcomes handed on, cancel on the way out)."""

from __future__ import annotations

import pytest

from spxbatch.pipeline.executor import Executor, Outcome, SerialExecutor, Task, batched, run_in_waves


def square(x: int) -> int:
    return x * x


class FailTimes:
    """A callable that raises the first `n` times."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def __call__(self, x: int) -> int:
        self.calls += 1
        if self.calls <= self.n:
            raise RuntimeError(f"attempt {self.calls} failed")
        return x


def test_serial_runs_in_order_with_named_keys():
    ex = SerialExecutor()
    assert isinstance(ex, Executor) and ex.dashboard_link is None and ex.capacity() == 1
    keys = ex.submit([Task(square, (i,)) for i in range(3)] + [Task(square, (5,), key="mine")])
    assert keys[-1] == "mine" and len(set(keys)) == 4
    assert [(o.key, o.result, o.error) for o in ex.as_completed()] == [
        (keys[0], 0, None), (keys[1], 1, None), (keys[2], 4, None), ("mine", 25, None)]
    assert list(ex.as_completed()) == []  # nothing pending


def test_serial_retries_then_reports_the_error():
    flaky = FailTimes(2)
    ex = SerialExecutor(retries=2)
    ex.submit([Task(flaky, (7,))])
    assert [o.result for o in ex.as_completed()] == [7] and flaky.calls == 3
    always = FailTimes(10)
    ex.submit([Task(always, (1,))])
    (outcome,) = ex.as_completed()
    assert isinstance(outcome.error, RuntimeError) and "attempt 3 failed" in str(outcome.error)
    assert always.calls == 3


def test_serial_cancel_drops_what_has_not_run():
    ex = SerialExecutor()
    ran = []
    ex.submit([Task(ran.append, (i,)) for i in range(5)])
    done = []
    for outcome in ex.as_completed():
        done.append(outcome)
        if len(done) == 2:
            ex.cancel()
    assert ran == [0, 1] and len(done) == 2
    assert ex.call(square, 4) == 16


class Recording:
    """An executor that records how many tasks are in flight; runs them when asked for outcomes."""

    def __init__(self, capacities):
        self.capacities, self.inner = list(capacities), SerialExecutor()
        self.in_flight, self.peaks, self.cancelled = 0, [], False
        self.dashboard_link = None

    def capacity(self) -> int:
        return self.capacities.pop(0) if len(self.capacities) > 1 else self.capacities[0]

    def submit(self, tasks):
        self.in_flight += len(tasks)
        self.peaks.append(self.in_flight)
        return self.inner.submit(tasks)

    def as_completed(self):
        for outcome in self.inner.as_completed():
            self.in_flight -= 1
            yield outcome

    def cancel(self):
        self.cancelled = True
        self.inner.cancel()

    def call(self, fn, *args):
        return fn(*args)


def test_waves_follow_the_capacity_and_hand_on_every_outcome():
    ex = Recording([2, 2, 5, 5, 5, 1])  # an allocation that grows, then shrinks
    seen: list[tuple[list[int], int]] = []
    run_in_waves(ex, batched(list(range(20)), 3), lambda b: Task(sum, (b,)),
                 lambda batch, outcome: seen.append((batch, outcome.result)))
    assert [b for b, _ in seen] == [list(range(i, min(i + 3, 20))) for i in range(0, 20, 3)]
    assert all(total == sum(b) for b, total in seen)
    assert max(ex.peaks) <= 5 and ex.peaks[0] == 2 and not ex.cancelled


def test_waves_cancel_what_is_pending_when_stopped():
    ex = Recording([4])

    def done(batch: list[int], outcome: Outcome) -> None:
        if batch == [1]:
            raise KeyboardInterrupt  # Ctrl-C (or SIGTERM) while following the run

    with pytest.raises(KeyboardInterrupt):
        run_in_waves(ex, batched(list(range(10)), 1), lambda b: Task(square, (b[0],)), done)
    assert ex.cancelled and list(ex.inner.as_completed()) == []


def test_failed_tasks_are_outcomes_not_exceptions():
    outcomes = []
    run_in_waves(SerialExecutor(), batched([1, 2], 1), lambda b: Task(FailTimes(1), (b[0],)),
                 lambda b, o: outcomes.append(o))
    assert all(isinstance(o.error, RuntimeError) for o in outcomes) and len(outcomes) == 2


def test_batched():
    assert list(batched([1, 2, 3, 4, 5], 2)) == [[1, 2], [3, 4], [5]]
    assert list(batched([1, 2], 0)) == [[1], [2]]
    assert list(batched([], 3)) == []
