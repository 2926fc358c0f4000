"""A live progress bar for the measure stage: images done, measurements, bytes read, failures, dashboard."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RunProgress:
    """Context manager around a rich Progress; `update(summary)` after each finished image."""

    def __init__(self, total_images: int, dashboard: str | None = None, enabled: bool = True,
                 counted: str = "measurements", count_key: str = "measured"):
        self.enabled = enabled
        #: What is counted from each summary: measurements (key 'measured'), or files fetched when staging.
        self.counted, self.count_key = counted, count_key
        self.total = total_images
        self.dashboard = dashboard
        self.measured = self.bytes = self.failed = 0
        self._progress: Progress | None = None
        self._task = None

    def __enter__(self) -> RunProgress:
        if self.enabled:
            console = Console(stderr=True)
            if self.dashboard:
                console.print(f"Dask dashboard: {self.dashboard}")
            self._progress = Progress(
                TextColumn("images"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
            self._progress.__enter__()
            self._task = self._progress.add_task("measure", total=self.total, stats=self._stats())
        return self

    def _stats(self) -> str:
        return f"{self.measured} {self.counted}, {self.bytes / 1e6:.1f} MB read, {self.failed} failed images"

    def update(self, summary: dict[str, Any]) -> None:
        """Count one finished image."""
        self.measured += int(summary.get(self.count_key, 0))
        self.bytes += int(summary.get("bytes", 0))
        self.failed += bool(summary.get("error"))
        if self._progress is not None:
            self._progress.update(self._task, advance=1, stats=self._stats())

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
