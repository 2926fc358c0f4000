"""The state of one running simulated archive: its files, index, TAP engine, async jobs, realism settings and
access log; `url`, `access_log` and the helpers below are what tests use."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path

import pandas as pd
from aiohttp import web

from spxbatch.level2.naming import IBE_ROOT
from spxbatch.sim.faults import Bandwidth, FaultConfig, FaultInjector, hdu_spans
from spxbatch.sim.server import uws
from spxbatch.sim.tap.engine import TapEngine
from spxbatch.sim.tap.request import answer
from spxbatch.sim.tap.schema import build_tables

#: Seconds `wait_for_log` waits by default.
LOG_WAIT_S = 10.0


class ArchiveServer:
    """One simulated archive: what is served, how (latency, bandwidth, faults), and what was asked."""

    def __init__(
        self,
        root: str | os.PathLike,
        index: pd.DataFrame,
        *,
        latency: float = 0.0,
        bandwidth: float | None = None,
        faults: FaultConfig | dict | None = None,
        seed: int = 0,
        access_log: str | os.PathLike | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.index = index
        self.latency = latency
        self.bandwidth = Bandwidth(bandwidth)
        self.faults = FaultInjector(FaultConfig.coerce(faults), seed)
        self.access_log: list[dict] = []
        self._log_path = Path(access_log) if access_log else None
        self._logged = threading.Condition()
        #: Requests received and requests logged since the start (`wait_idle`).
        self._received = self._recorded = 0
        self.url = ""
        self.engine: TapEngine | None = None
        self.jobs = uws.JobStore(self._run_job)
        self._hdu_spans: dict[Path, list[tuple[str, int, int]]] = {}

    # -- public helpers -------------------------------------------------------------------------------------
    @property
    def tap_url(self) -> str:
        """The TAP base URL for `pyvo.dal.TAPService`."""
        return f"{self.url}/TAP"

    def file_url(self, relpath: str) -> str:
        """URL of a file given its path relative to the root."""
        return f"{self.url}/{IBE_ROOT}/{relpath.lstrip('/')}"

    def requests_for(self, relpath: str, method: str | None = "GET") -> list[dict]:
        """Access-log entries of one file (cutouts included), optionally of one method."""
        path = f"/{IBE_ROOT}/{relpath.lstrip('/')}"
        with self._logged:
            entries = list(self.access_log)
        return [e for e in entries if e["path"] == path and (method is None or e["method"] == method)]

    def wait_for_log(self, count: int, timeout: float = LOG_WAIT_S) -> list[dict]:
        """The access log once it holds at least `count` entries (since the last `clear_log`).

        An answered request is logged before its last byte leaves; a request the client abandoned (closed
        early, timed out on a stall) is logged when the server notices, later: a test expecting those waits here.
        """
        with self._logged:
            if not self._logged.wait_for(lambda: len(self.access_log) >= count, timeout):
                raise TimeoutError(f"{len(self.access_log)} of {count} requests logged after {timeout} s")
            return list(self.access_log)

    def wait_idle(self, timeout: float = LOG_WAIT_S) -> list[dict]:
        """The access log once every request received so far is logged (answered, or noticed abandoned):
        after a stall the client gave up on, its entry lands when the server's hold ends; a test reading
        those entries waits here instead of sleeping."""
        with self._logged:
            if not self._logged.wait_for(lambda: self._recorded >= self._received, timeout):
                raise TimeoutError(f"{self._received - self._recorded} request(s) still unanswered after {timeout} s")
            return list(self.access_log)

    def received(self) -> None:
        """Count a request as it arrives (the realism middleware calls this first)."""
        with self._logged:
            self._received += 1

    def set_faults(self, faults: FaultConfig | dict | None) -> None:
        """Change the fault settings of the running server (an archive going down, then coming back)."""
        self.faults.config = FaultConfig.coerce(faults)

    def set_index(self, index: pd.DataFrame) -> None:
        """Change what TAP lists while the server runs (the archive growing, as IRSA ingests new exposures and
        reprocessings every week); files stay readable by path whether listed or not."""
        self.index = index
        self.engine = TapEngine(build_tables(index, base_url=self.url))

    def clear_log(self) -> None:
        with self._logged:
            self.access_log.clear()

    def set_base_url(self, url: str) -> None:
        """Fix the public URL (known once bound) and build the TAP tables, whose access_url uses it."""
        self.url = url.rstrip("/")
        self.engine = TapEngine(build_tables(self.index, base_url=self.url))

    # -- internals -----------------------------------------------------------------------------------------
    def log(self, entry: dict) -> None:
        """Record one finished request (and append it to the JSON-lines access log file, if any)."""
        with self._logged:
            self._recorded += 1
            self.access_log.append(entry)
            if self._log_path is not None:
                with self._log_path.open("a") as fh:
                    fh.write(json.dumps(entry) + "\n")
            self._logged.notify_all()

    def hdu_spans(self, path: Path) -> list[tuple[str, int, int]]:
        """`faults.hdu_spans` of a file below the root, cached per file (the `extname` fault filter)."""
        spans = self._hdu_spans.get(path)
        if spans is None:
            spans = self._hdu_spans[path] = hdu_spans(path)
        return spans

    def run_query(self, params: dict[str, str], uploads: dict[str, bytes]) -> tuple[bytes, str]:
        """Run one TAP request (blocking; called in an executor). TapError for anything the client got wrong."""
        return answer(self.engine, params, uploads)

    async def _run_job(self, params: dict[str, str], uploads: dict[str, bytes]) -> tuple[bytes, str]:
        """Run an asynchronous job's query; a `job_error` fault ends the job in ERROR instead."""
        if self.faults.job_fails(params.get("QUERY", "")):
            raise RuntimeError("simulated fault: the job failed while executing its query")
        return await asyncio.get_running_loop().run_in_executor(None, self.run_query, params, uploads)


#: The ArchiveServer of an aiohttp application.
SERVER = web.AppKey("server", ArchiveServer)
#: A request's access-log entry (filled in as the response goes out).
LOG = web.RequestKey("log", dict)
#: The fault drawn for a request, if any.
FAULT = web.RequestKey("fault", str)
#: Set once a request's access-log entry has been recorded.
RECORDED = web.RequestKey("recorded", bool)


def record(request: web.Request) -> None:
    """Record the request's access-log entry, once: called before the response's last byte is sent, so that a
    client holding the whole response always finds its request in the log (and again, harmlessly, at the end)."""
    if not request.get(RECORDED):
        request[RECORDED] = True
        request.app[SERVER].log(request[LOG])
