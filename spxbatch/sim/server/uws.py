"""UWS 1.1 asynchronous jobs for the simulated TAP service, in the shape pyvo's AsyncTAPJob drives them.

A job is created PENDING; PHASE=RUN moves it to QUEUED and starts it at once (it never reports PENDING
after RUN). The query runs off the event loop in an executor; `GET {job}?WAIT=n` blocks until the phase
leaves QUEUED/EXECUTING or n seconds pass (-1: up to `MAX_WAIT_S`).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from xml.sax.saxutils import escape, quoteattr

#: Longest a blocking GET may wait (s).
MAX_WAIT_S = 60.0
#: How long a job is kept (reported as its destruction time).
JOB_LIFETIME = timedelta(days=1)

ACTIVE_PHASES = ("QUEUED", "EXECUTING")

#: Runs a job: (parameters, uploads) -> (body, content type); raises to put the job in ERROR.
Runner = Callable[[dict[str, str], dict[str, bytes]], Awaitable[tuple[bytes, str]]]


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Job:
    """One asynchronous query."""

    job_id: str
    parameters: dict[str, str]
    uploads: dict[str, bytes]
    phase: str = "PENDING"
    created: datetime = field(default_factory=_now)
    started: datetime | None = None
    ended: datetime | None = None
    result: bytes | None = None
    result_type: str = "application/x-votable+xml"
    error: str | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None


class JobStore:
    """The jobs of one service; all methods run on the server's event loop."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self._jobs: dict[str, Job] = {}
        self._counter = itertools.count(1)

    def create(self, parameters: dict[str, str], uploads: dict[str, bytes]) -> Job:
        job_id = f"{next(self._counter):05d}{secrets.token_hex(4)}"
        job = Job(job_id, parameters, uploads)
        self._jobs[job_id] = job
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        return list(self._jobs.values())

    def start(self, job: Job) -> None:
        """PHASE=RUN: a PENDING job is queued and started; other phases are left alone (UWS says so)."""
        if job.phase != "PENDING":
            return
        self._set_phase(job, "QUEUED")
        job.task = asyncio.get_running_loop().create_task(self._execute(job))

    def abort(self, job: Job) -> None:
        if job.phase in ("PENDING", *ACTIVE_PHASES):
            if job.task is not None:
                job.task.cancel()
            job.ended = _now()
            self._set_phase(job, "ABORTED")

    def delete(self, job_id: str) -> bool:
        job = self._jobs.pop(job_id, None)
        if job is None:
            return False
        if job.task is not None:
            job.task.cancel()
        return True

    async def wait(self, job: Job, seconds: float) -> None:
        """Block while the job is active, at most `seconds` (negative: MAX_WAIT_S)."""
        limit = MAX_WAIT_S if seconds < 0 else min(seconds, MAX_WAIT_S)
        phase = job.phase
        if phase not in ACTIVE_PHASES:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while job.phase == phase and loop.time() < deadline:
            job.changed.clear()
            try:
                await asyncio.wait_for(job.changed.wait(), deadline - loop.time())
            except TimeoutError:
                return

    def _set_phase(self, job: Job, phase: str) -> None:
        job.phase = phase
        job.changed.set()

    async def _execute(self, job: Job) -> None:
        job.started = _now()
        self._set_phase(job, "EXECUTING")
        try:
            job.result, job.result_type = await self._runner(job.parameters, job.uploads)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            job.error = str(exc) or type(exc).__name__
            job.ended = _now()
            self._set_phase(job, "ERROR")
            return
        job.ended = _now()
        self._set_phase(job, "COMPLETED")


def job_xml(job: Job, job_url: str) -> str:
    """The UWS 1.1 job document; the result href is absolute."""

    def el(name: str, value: str | None) -> str:
        if value is None:
            return f'  <uws:{name} xsi:nil="true"/>\n'
        return f"  <uws:{name}>{escape(value)}</uws:{name}>\n"

    duration = 0
    if job.started is not None and job.ended is not None:
        duration = max(0, round((job.ended - job.started).total_seconds()))
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        '<uws:job xmlns:uws="http://www.ivoa.net/xml/UWS/v1.0" xmlns:xlink="http://www.w3.org/1999/xlink" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" version="1.1">\n',
        el("jobId", job.job_id),
        el("runId", None),
        el("ownerId", None),
        el("phase", job.phase),
        el("quote", None),
        el("creationTime", _iso(job.created)),
        el("startTime", _iso(job.started)),
        el("endTime", _iso(job.ended)),
        el("executionDuration", str(duration)),
        el("destruction", _iso(job.created + JOB_LIFETIME)),
        "  <uws:parameters>\n",
        *(
            f"    <uws:parameter id={quoteattr(k.lower())}>{escape(v)}</uws:parameter>\n"
            for k, v in job.parameters.items()
        ),
        "  </uws:parameters>\n",
        "  <uws:results>\n",
    ]
    if job.phase == "COMPLETED":
        href = quoteattr(f"{job_url}/results/result")
        parts.append(f'    <uws:result id="result" xlink:type="simple" xlink:href={href}/>\n')
    parts.append("  </uws:results>\n")
    if job.phase == "ERROR":
        parts.append(
            '  <uws:errorSummary type="fatal" hasDetail="true">\n'
            f"    <uws:message>{escape(job.error or 'unknown error')}</uws:message>\n"
            "  </uws:errorSummary>\n"
        )
    parts.append("</uws:job>\n")
    return "".join(parts)


def job_list_xml(jobs: list[Job], base_url: str) -> str:
    """The UWS job list (short descriptions)."""
    items = "".join(
        f"  <uws:jobref id={quoteattr(j.job_id)} xlink:href={quoteattr(f'{base_url}/{j.job_id}')}>"
        f"<uws:phase>{j.phase}</uws:phase></uws:jobref>\n"
        for j in jobs
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<uws:jobs xmlns:uws="http://www.ivoa.net/xml/UWS/v1.0" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'version="1.1">\n{items}</uws:jobs>\n'
    )
