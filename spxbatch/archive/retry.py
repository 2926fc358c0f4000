"""One retry policy for every request to the archive (file reads, calibration products, cutouts, TAP), and
the one loop that applies it.

`RetryPolicy.decide` is the only place that says whether a failed attempt is tried again and how long to
wait first: exponential backoff with jitter, the server's Retry-After honoured (up to a cap, beyond which the
request fails at once), a bounded number of attempts. `call_with_retries` runs an async request under a
policy; `call_blocking_with_retries` runs a blocking one (pyvo's TAP client) through the same loop.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from fsspec.asyn import get_loop, sync

T = TypeVar("T")

#: HTTP statuses worth retrying besides every 5xx: request timeout, too early, too many requests.
RETRY_STATUS = frozenset({408, 425, 429})


def retryable_status(status: int) -> bool:
    """Whether an HTTP error status is transient (5xx, 408, 425, 429) rather than a verdict on the request."""
    return status >= 500 or status in RETRY_STATUS


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None when absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class Failure:
    """One failed attempt, classified: may it be tried again, its HTTP status, the server's Retry-After, why."""

    retryable: bool
    reason: str
    status: int | None = None
    retry_after_s: float | None = None


@dataclass(frozen=True)
class Decision:
    """What to do after a failed attempt: try again after `wait_s`, or stop (`reason` says why)."""

    retry: bool
    wait_s: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts, backoff, the Retry-After cap, per-attempt and stall timeouts, concurrency."""

    #: Attempts per request (the first included) before it fails for good.
    max_attempts: int = 5
    #: The first wait (s); it doubles with each attempt, up to `max_backoff_s`, and is jittered (x 0.5-1).
    backoff_s: float = 0.5
    max_backoff_s: float = 20.0
    #: A Retry-After longer than this is not waited for: the request fails at once (recorded).
    max_retry_after_s: float = 60.0
    #: Wall-clock limit of one attempt (request + body).
    attempt_timeout_s: float = 600.0
    #: A transfer that delivers no bytes for this long is abandoned (and retried).
    stall_timeout_s: float = 30.0
    #: Concurrent requests per call that reads several ranges or objects.
    concurrency: int = 8

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The jittered wait after failed attempt number `attempt` (1-based), before any Retry-After."""
        return min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * rng.uniform(0.5, 1.0)

    def decide(self, attempt: int, failure: Failure, rng: random.Random) -> Decision:
        """Retry or not after failed attempt number `attempt`, and how long to wait first."""
        if not failure.retryable or attempt >= self.max_attempts:
            return Decision(False, reason=failure.reason)
        retry_after = failure.retry_after_s
        if retry_after is not None and retry_after > self.max_retry_after_s:
            return Decision(False, reason=f"{failure.reason}; Retry-After {retry_after:.0f} s exceeds "
                                          f"{self.max_retry_after_s:.0f} s")
        wait = self.backoff(attempt, rng)
        return Decision(True, max(wait, retry_after) if retry_after is not None else wait)


#: Turns an exception of one attempt into a Failure, or None when it is not a failed request (re-raised as is).
Classifier = Callable[[Exception], "Failure | None"]
#: Builds the exception raised when the policy stops: (last failure, attempts made, reason).
GiveUp = Callable[[Failure, int, str], Exception]
#: Called after each failed attempt with the failure, the decision and the attempt number.
FailureHook = Callable[[Failure, Decision, int], None]


async def call_with_retries(op: Callable[[], Awaitable[T]], policy: RetryPolicy, classify: Classifier,
                            give_up: GiveUp, *, rng: random.Random | None = None,
                            on_attempt: Callable[[], None] | None = None, on_failure: FailureHook | None = None,
                            sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> T:
    """Run the request `op` until it succeeds or `policy` stops; each attempt is bounded by its timeout."""
    rng = rng or random.Random()
    attempt = 0
    while True:
        attempt += 1
        if on_attempt is not None:
            on_attempt()
        try:
            return await asyncio.wait_for(op(), policy.attempt_timeout_s)
        except Exception as exc:  # asyncio.CancelledError is a BaseException: it passes through
            failure = classify(exc)
            if failure is None:
                raise
            decision = policy.decide(attempt, failure, rng)
            if on_failure is not None:
                on_failure(failure, decision, attempt)
            if not decision.retry:
                raise give_up(failure, attempt, decision.reason) from exc
            await sleep(decision.wait_s)


def call_blocking_with_retries(call: Callable[[], T], policy: RetryPolicy, classify: Classifier, give_up: GiveUp,
                               **hooks: object) -> T:
    """`call_with_retries` for a blocking call: each attempt runs in a thread and the loop on fsspec's I/O
    event loop, so it works from any thread, one with a running event loop (a notebook) included."""
    return sync(get_loop(), call_with_retries, lambda: asyncio.to_thread(call), policy, classify, give_up, **hooks)
