"""The one way a test waits for what another process or thread does: poll the condition itself until a
deadline, then fail saying what did not happen. A fixed sleep is too short on a loaded machine (the flake of
issue 18) and too long on an idle one."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], what: str, timeout: float = 120.0, interval: float = 0.02) -> T:
    """The first truthy value of `condition()`, polled every `interval` s; TimeoutError naming `what` (e.g.
    'two parts written') once `timeout` s have passed without one."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"waited {timeout:g} s for {what}")
        time.sleep(interval)
