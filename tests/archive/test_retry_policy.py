"""The one retry policy and its loop, without a server: which failures are retried, how long each wait is
(backoff with jitter, Retry-After honoured and capped), how many attempts, and what the caller sees."""

from __future__ import annotations

import asyncio
import random
import threading

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from spxbatch.archive import io
from spxbatch.archive.retry import (
    Failure,
    RetryPolicy,
    call_blocking_with_retries,
    call_with_retries,
    retryable_status,
)

POLICY = RetryPolicy(max_attempts=5, backoff_s=0.5, max_backoff_s=4.0, max_retry_after_s=60.0)
TRANSIENT = Failure(True, "HTTP 503 Service Unavailable", 503)


def test_which_statuses_are_transient():
    assert all(retryable_status(s) for s in (500, 502, 503, 504, 599, 408, 425, 429))
    assert not any(retryable_status(s) for s in (400, 401, 403, 404, 410, 416))


def test_backoff_doubles_with_jitter_within_bounds():
    rng = random.Random(0)
    for attempt in range(1, 8):
        base = min(POLICY.max_backoff_s, POLICY.backoff_s * 2 ** (attempt - 1))
        waits = [POLICY.backoff(attempt, rng) for _ in range(200)]
        assert 0.5 * base <= min(waits) and max(waits) <= base  # jitter: x 0.5 to 1.0, never above the cap
        assert max(waits) - min(waits) > 0.3 * base  # and it does spread the retries out


def test_attempts_are_capped_and_final_failures_stop_at_once():
    rng = random.Random(1)
    assert all(POLICY.decide(n, TRANSIENT, rng).retry for n in range(1, 5))
    last = POLICY.decide(5, TRANSIENT, rng)
    assert not last.retry and last.reason == TRANSIENT.reason
    not_found = POLICY.decide(1, Failure(False, "FileNotFoundError", 404), rng)
    assert not not_found.retry and not_found.reason == "FileNotFoundError"
    assert not RetryPolicy(max_attempts=1).decide(1, TRANSIENT, rng).retry


def test_retry_after_is_honoured_and_capped():
    rng = random.Random(2)
    slow = Failure(True, "HTTP 429 Too Many Requests", 429, retry_after_s=7.0)
    assert POLICY.decide(1, slow, rng).wait_s == 7.0  # longer than the backoff: the server's wait wins
    short = Failure(True, "HTTP 503", 503, retry_after_s=0.01)
    assert POLICY.decide(3, short, rng).wait_s >= 0.5 * 2.0  # shorter: the backoff still applies
    beyond = POLICY.decide(1, Failure(True, "HTTP 503", 503, retry_after_s=120.0), rng)
    assert not beyond.retry and "Retry-After 120 s exceeds 60 s" in beyond.reason


class Flaky:
    """An async request failing with `errors` (one per attempt) before it succeeds."""

    def __init__(self, errors):
        self.errors, self.calls = list(errors), 0

    async def __call__(self):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "body"


def _run(op, policy=POLICY, **kw):
    waits, failures = [], []

    async def sleep(s):
        waits.append(s)

    def give_up(failure, attempts, reason):
        return io.ReadError("u", failure.status, attempts, reason)

    def failed(failure, decision, attempt):
        failures.append((attempt, failure.reason, decision.retry))

    result = asyncio.run(call_with_retries(op, policy, io._classify, give_up, rng=random.Random(3), sleep=sleep,
                                           on_failure=failed, **kw))
    return result, waits, failures


def _http_error(status: int, retry_after: str | None = None) -> aiohttp.ClientResponseError:
    headers = CIMultiDictProxy(CIMultiDict({"Retry-After": retry_after} if retry_after else {}))
    return aiohttp.ClientResponseError(None, (), status=status, message="boom", headers=headers)


def test_loop_retries_transient_errors_then_returns():
    op = Flaky([_http_error(503), ConnectionResetError("reset"), io.TruncatedBody("short"), TimeoutError()])
    result, waits, failures = _run(op)
    assert result == "body" and op.calls == 5
    assert [f[0] for f in failures] == [1, 2, 3, 4] and all(f[2] for f in failures)
    assert "HTTP 503" in failures[0][1] and "timeout" in failures[3][1]
    assert len(waits) == 4 and all(0 < w <= POLICY.max_backoff_s for w in waits)


def test_loop_gives_up_with_the_last_failure():
    op = Flaky([_http_error(500)] * 10)
    with pytest.raises(io.ReadError) as err:
        _run(op, RetryPolicy(max_attempts=3, backoff_s=0.01))
    assert op.calls == 3 and err.value.attempts == 3 and err.value.status == 500
    op = Flaky([_http_error(404)])
    with pytest.raises(io.ReadError) as err:
        _run(op)
    assert op.calls == 1 and err.value.status == 404  # a verdict, not a transient failure


def test_loop_waits_what_retry_after_says():
    _, waits, _ = _run(Flaky([_http_error(503, "2"), _http_error(429, "3")]))
    assert waits == [2.0, 3.0]


def test_loop_passes_through_what_is_not_a_failed_request():
    with pytest.raises(io.MultiRangeUnsupported):
        _run(Flaky([io.MultiRangeUnsupported("x")]))


def test_each_attempt_is_bounded_by_its_timeout():
    async def stall():
        await asyncio.sleep(10)

    policy = RetryPolicy(max_attempts=2, attempt_timeout_s=0.05, backoff_s=0.0)
    with pytest.raises(io.ReadError, match="timeout") as err:
        _run(stall, policy)
    assert err.value.attempts == 2


def test_blocking_calls_use_the_same_loop_even_under_a_running_event_loop():
    calls = []

    def flaky_blocking():
        calls.append(threading.current_thread().name)
        if len(calls) < 3:
            raise ConnectionError("refused")
        return 42

    async def inside_a_notebook():  # a running event loop in this thread, as in Jupyter
        return call_blocking_with_retries(flaky_blocking, RetryPolicy(backoff_s=0.0), io._classify,
                                          lambda f, n, r: RuntimeError(r))

    assert asyncio.run(inside_a_notebook()) == 42 and len(calls) == 3
    assert threading.current_thread().name not in calls  # the blocking call ran in a worker thread
