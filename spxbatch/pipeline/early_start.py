"""An executor made when first needed, or started in the background ahead of that: a local cluster's worker
processes start while the client queries the archive and makes the plan, instead of after it; and the rule
that keeps a tiny run in this process, with no worker processes at all."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from spxbatch.pipeline.config_tables import ClusterConfig
from spxbatch.pipeline.executor import Executor


def may_stay_in_process(cluster: ClusterConfig) -> bool:
    """Whether a run of this cluster config may be measured in this process when it is tiny: a local cluster
    whose worker count the user left to spxbatch (a scheduler, batch jobs or chosen workers are kept)."""
    return not cluster.kind and not cluster.scheduler and cluster.workers is None and \
        cluster.in_process_max_images > 0


def tiny(cluster: ClusterConfig, images: int, pairs: int) -> bool:
    """Whether a plan of `images` images and `pairs` pairs is small enough to measure in this process."""
    return images <= cluster.in_process_max_images and pairs <= cluster.in_process_max_pairs


class ExecutorStarter:
    """Enters the context `make()` returns (an executor and the cluster behind it) once: in a background
    thread after `start_early()`, else on the first `get()`; `close()` exits it (waiting for a start under
    way), so nothing started is ever left running."""

    def __init__(self, make: Callable[[], contextlib.AbstractContextManager[Executor]]) -> None:
        self._make = make
        self._thread: threading.Thread | None = None
        self._entered: tuple[contextlib.AbstractContextManager[Executor], Executor] | None = None
        self._error: BaseException | None = None

    def _enter(self) -> None:
        try:
            cm = self._make()
            self._entered = (cm, cm.__enter__())
        except BaseException as exc:  # handed to whoever asks for the executor
            self._error = exc

    @property
    def started(self) -> bool:
        """Whether it is started or being started."""
        return self._thread is not None or self._entered is not None

    def start_early(self) -> None:
        """Start entering it in the background (once)."""
        if self._thread is None and self._entered is None:
            self._thread = threading.Thread(target=self._enter, name="spxbatch-cluster-start", daemon=True)
            self._thread.start()

    def _wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        elif self._entered is None and self._error is None:
            self._enter()

    def get(self) -> Executor:
        """The executor, started now unless it already is (an error starting it is raised here)."""
        self._wait()
        if self._error is not None:
            raise self._error
        assert self._entered is not None
        return self._entered[1]

    def close(self, *exc_info: Any) -> None:
        """Exit the executor's context if it was (or is being) entered."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._entered is not None:
            cm, self._entered = self._entered[0], None
            cm.__exit__(*(exc_info or (None, None, None)))
