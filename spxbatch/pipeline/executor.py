"""Where tasks run: the `Executor` seam (submit a batch of tasks, take their outcomes as they finish, cancel),
a serial in-process executor for tests and tiny runs, and a Dask one for everything else (a LocalCluster,
an existing scheduler, or batch jobs through `cluster.dask_client`).

`run_in_waves` drives either: a few tasks per connected worker in flight (the window follows the workers,
so a growing or shrinking allocation gets more or less work), each outcome handed on as it arrives, and
what is still pending cancelled when the caller stops (an error, Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import contextlib
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from distributed import Client, Future, as_completed

from spxbatch.pipeline.cluster import dask_client
from spxbatch.pipeline.config_tables import ClusterConfig

T = TypeVar("T")
#: Tasks kept in flight per connected worker.
TASKS_PER_WORKER = 4


@dataclass(frozen=True)
class Task:
    """One call to run somewhere: `fn(*args)`, under `key` (None: the executor names it)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    key: str | None = None


@dataclass(frozen=True)
class Outcome:
    """A finished task: its result, or the exception it still ended with after its retries."""

    key: str
    result: Any = None
    error: BaseException | None = None


@runtime_checkable
class Executor(Protocol):
    """What the stages need from whatever runs their tasks."""

    #: Where to watch the tasks (a Dask dashboard), if anywhere.
    dashboard_link: str | None

    def capacity(self) -> int:
        """How many tasks are worth having in flight now."""

    def workers(self) -> int:
        """How many tasks run at once now (connected workers; 1 in this process)."""

    def submit(self, tasks: Sequence[Task]) -> list[str]:
        """Queue the tasks; returns their keys, in order."""

    def as_completed(self) -> Iterator[Outcome]:
        """The outcome of every submitted task as it finishes, tasks submitted meanwhile included; ends when
        none is pending."""

    def cancel(self) -> None:
        """Drop every task not finished yet (its outcome is never delivered)."""

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one small task on one worker (waiting for a worker to exist) and return its result."""


class SerialExecutor:
    """Runs tasks one at a time in this process, in submission order, each retried up to `retries` times."""

    dashboard_link: str | None = None

    def __init__(self, retries: int = 0):
        self.retries = retries
        self._queue: deque[tuple[str, Task]] = deque()
        self._count = itertools.count()

    def capacity(self) -> int:
        return 1

    def workers(self) -> int:
        return 1

    def submit(self, tasks: Sequence[Task]) -> list[str]:
        keys = [task.key or f"task-{next(self._count)}" for task in tasks]
        self._queue.extend(zip(keys, tasks, strict=True))
        return keys

    def as_completed(self) -> Iterator[Outcome]:
        while self._queue:
            key, task = self._queue.popleft()
            yield self._run(key, task)

    def _run(self, key: str, task: Task) -> Outcome:
        for attempt in range(self.retries + 1):
            try:
                return Outcome(key, task.fn(*task.args))
            except Exception as exc:  # what a Dask task would report after its retries
                if attempt == self.retries:
                    return Outcome(key, error=exc)
        raise AssertionError("unreachable")

    def cancel(self) -> None:
        self._queue.clear()

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)


class DaskExecutor:
    """Runs tasks on a Dask cluster through `client`; a failed task is retried `retries` times by Dask
    (on another worker when its worker died)."""

    def __init__(self, client: Client, retries: int = 0, per_worker: int = TASKS_PER_WORKER):
        self.client, self.retries, self.per_worker = client, retries, per_worker
        self._pending: dict[str, Future] = {}
        self._finished = as_completed()

    @property
    def dashboard_link(self) -> str | None:
        return self.client.dashboard_link

    def capacity(self) -> int:
        return self.per_worker * self.workers()

    def workers(self) -> int:
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def submit(self, tasks: Sequence[Task]) -> list[str]:
        keys = []
        for task in tasks:
            kwargs = {"key": task.key} if task.key else {}
            future = self.client.submit(task.fn, *task.args, retries=self.retries, pure=False, **kwargs)
            self._pending[future.key] = future
            self._finished.add(future)
            keys.append(future.key)
        return keys

    def as_completed(self) -> Iterator[Outcome]:
        for future in self._finished:
            if self._pending.pop(future.key, None) is None:
                continue  # cancelled meanwhile
            try:
                yield Outcome(future.key, future.result())
            except Exception as exc:  # a task that kept failing (e.g. its workers died)
                yield Outcome(future.key, error=exc)

    def cancel(self) -> None:
        futures = list(self._pending.values())
        self._pending.clear()
        self._finished.clear()
        with contextlib.suppress(Exception):  # a scheduler already gone has nothing left to cancel
            self.client.cancel(futures)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return self.client.submit(fn, *args, pure=False).result()


def as_executor(target: Executor | Client, retries: int = 0) -> Executor:
    """An Executor for `target`: itself, or a DaskExecutor for a distributed Client (the Python API takes
    either)."""
    return DaskExecutor(target, retries) if isinstance(target, Client) else target


@contextlib.contextmanager
def dask_executor(cluster: ClusterConfig, retries: int = 0) -> Iterator[DaskExecutor]:
    """A DaskExecutor on the cluster the options describe; the cluster is closed (jobs cancelled) on exit."""
    with dask_client(cluster) as client:
        yield DaskExecutor(client, retries)


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive runs of `items` of `size` (at least 1) each: the work of one task; taken from `items` as
    they are asked for (an iterator of jobs is never materialised)."""
    items = iter(items)
    while batch := list(itertools.islice(items, max(1, size))):
        yield batch


def run_in_waves(executor: Executor, batches: Iterable[list[T]], task_of: Callable[[list[T]], Task],
                 done: Callable[[list[T], Outcome], None]) -> None:
    """Run one task per batch, at most `executor.capacity()` in flight (the scheduler never holds the whole
    run), handing each outcome to `done` with its batch and topping up the window; whatever is pending is
    cancelled when this stops early (an exception, KeyboardInterrupt)."""
    batches = iter(batches)
    pending: dict[str, list[T]] = {}

    def fill() -> None:
        wave = list(itertools.islice(batches, max(0, executor.capacity() - len(pending))))
        if wave:
            pending.update(zip(executor.submit([task_of(b) for b in wave]), wave, strict=True))

    try:
        fill()
        for outcome in executor.as_completed():
            done(pending.pop(outcome.key), outcome)
            fill()
    except BaseException:
        executor.cancel()
        raise
