"""The TAP client's requests go through the one retry policy: transient service errors are retried (waits
from the policy, Retry-After honoured), a refused query is not, and the end is ArchiveUnreachable. A stand-in
for pyvo's service object, so no server is needed."""

from __future__ import annotations

import pytest
from astropy.table import Table
from pyvo.dal.exceptions import DALQueryError, DALServiceError

from spxbatch.archive.errors import ArchiveUnreachable
from spxbatch.archive.retry import RetryPolicy
from spxbatch.plan.tap import TapClient, TapOverflow

FAST = RetryPolicy(max_attempts=4, backoff_s=0.0)


class Response:
    def __init__(self, headers):
        self.headers = headers


class Cause:
    def __init__(self, headers):
        self.response = Response(headers)


class Result:
    def __init__(self, table: Table, status: str = "OK"):
        self.table, self.status = table, [status]

    def __len__(self):
        return len(self.table)

    def to_table(self) -> Table:
        return self.table


class Service:
    """Answers each run_sync/run_async call with the next item of `answers` (raised when an exception)."""

    def __init__(self, answers):
        self.answers, self.queries = list(answers), []

    def run_sync(self, query, maxrec=None):
        self.queries.append(query)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    run_async = run_sync


def _client(answers, mode="sync", retry=FAST) -> tuple[TapClient, Service]:
    client = TapClient("http://tap.invalid/TAP", mode=mode, retry=retry)
    client.service = Service(answers)
    return client, client.service


TABLE = Table({"a": [1, 2]})


def test_transient_service_errors_are_retried():
    client, service = _client([DALServiceError("busy", 503), DALServiceError("no route", None),
                               DALServiceError("busy", 429), Result(TABLE)])
    assert list(client._run("SELECT 1")["a"]) == [1, 2]
    assert client.sent == 4 and len(service.queries) == 4
    assert len(client.failures) == 3 and "HTTP 503" in client.failures[0]


def test_retry_after_of_the_service_is_what_the_policy_waits(monkeypatch):
    waits = []
    real = RetryPolicy.decide

    def spy(self, attempt, failure, rng):
        decision = real(self, attempt, failure, rng)
        waits.append(decision.wait_s)
        return decision

    monkeypatch.setattr(RetryPolicy, "decide", spy)
    error = DALServiceError("slow down", 503, cause=Cause({"Retry-After": "0.2"}))
    client, _ = _client([error, Result(TABLE)])
    client._run("SELECT 1")
    assert waits == [0.2]


def test_a_refused_query_is_final_in_sync_mode_and_retried_in_async():
    client, service = _client([DALQueryError("syntax error"), Result(TABLE)])
    with pytest.raises(ArchiveUnreachable, match=r"after 1 attempt.*syntax error"):
        client._run("SELECT 1")
    assert len(service.queries) == 1
    client, service = _client([DALQueryError("job error"), Result(TABLE)], mode="async")
    assert len(client._run("SELECT 1")) == 2 and len(service.queries) == 2


def test_attempts_are_bounded_and_the_end_is_archive_unreachable():
    client, service = _client([DALServiceError("down", 500)] * 10, retry=RetryPolicy(max_attempts=3, backoff_s=0))
    with pytest.raises(ArchiveUnreachable, match="failed after 3 attempt"):
        client._run("SELECT 1")
    assert len(service.queries) == 3 and len(client.failures) == 3
    client, service = _client([DALServiceError("forbidden", 403)])
    with pytest.raises(ArchiveUnreachable, match="after 1 attempt"):
        client._run("SELECT 1")


def test_row_limit_is_not_a_failure_to_retry():
    client, service = _client([Result(TABLE, status="OVERFLOW")])
    with pytest.raises(TapOverflow):
        client._run("SELECT 1")
    assert len(service.queries) == 1 and not client.failures


def test_a_rejected_optional_column_stays_dropped_across_retries():
    query = "SELECT a.uri, a.contentlength, p.poly FROM t"
    client, service = _client([DALQueryError("unknown column contentlength"), DALServiceError("busy", 503),
                               Result(TABLE)])
    client._run(query)
    assert service.queries[0] == query
    assert service.queries[1] == service.queries[2] == "SELECT a.uri, p.poly FROM t"
