"""The simulated archive's HTTP server: IRSA's TAP (sync + UWS async), IBE file URLs with HTTP Range, and the
IBE cutout query string, over any directory of Level-2 files, with optional latency, bandwidth cap, faults.

Routes (base = `srv.url`):
- `POST|GET /TAP/sync`, `POST /TAP/async` (303 to the job), `GET|DELETE /TAP/async/{id}`,
  `GET|POST /TAP/async/{id}/phase`, `GET /TAP/async/{id}/results/result`, `GET /TAP/async/{id}/error`;
- `GET|HEAD /ibe/data/spherex/<relpath>`: the file, with single and multiple byte ranges;
- `GET /ibe/data/spherex/<relpath>?center=..&size=..[&gzip=false]`: a cutout (see `cutout.py`).
The tables are built from `spxbatch.archive.index.index_directory(root)`; `root` plays IRSA's
`ibe/data/spherex/` directory, so `artifact.uri` = 'ibe/data/spherex/' + relpath and the download URL is
`srv.url + '/' + uri`, exactly as `'https://irsa.ipac.caltech.edu/' || a.uri` at IRSA.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from aiohttp import web

from spxbatch.level2.naming import IBE_ROOT
from spxbatch.plan.index import index_directory
from spxbatch.sim import cutout, tap, uws
from spxbatch.sim.faults import Bandwidth, FaultConfig, FaultInjector

CHUNK = 256 * 1024
MAX_RANGES = 256
FITS_TYPE = "application/fits"
VOTABLE_TYPE = "application/x-votable+xml"


class ArchiveServer:
    """State of one running simulated archive; `url`, `access_log` and helpers are what tests use."""

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
        self._log_lock = threading.Lock()
        self.url = ""
        self.engine: tap.TapEngine | None = None
        self.jobs = uws.JobStore(self._run_job)

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
        with self._log_lock:
            entries = list(self.access_log)
        return [e for e in entries if e["path"] == path and (method is None or e["method"] == method)]

    def clear_log(self) -> None:
        with self._log_lock:
            self.access_log.clear()

    def set_base_url(self, url: str) -> None:
        """Fix the public URL (known once bound) and build the TAP tables, whose access_url uses it."""
        self.url = url.rstrip("/")
        self.engine = tap.TapEngine(tap.build_tables(self.index, base_url=self.url))

    # -- internals -----------------------------------------------------------------------------------------
    def log(self, entry: dict) -> None:
        with self._log_lock:
            self.access_log.append(entry)
            if self._log_path is not None:
                with self._log_path.open("a") as fh:
                    fh.write(json.dumps(entry) + "\n")

    def run_query(self, params: dict[str, str], uploads: dict[str, bytes]) -> tuple[bytes, str]:
        """Run one TAP request (blocking; called in an executor). TapError for anything the client got wrong."""
        if params.get("REQUEST", "doQuery").lower() != "doquery":
            raise tap.TapError(f"REQUEST={params['REQUEST']} is not supported (only doQuery)")
        if params.get("LANG", "ADQL").upper().split("-")[0] != "ADQL":
            raise tap.TapError(f"LANG={params['LANG']} is not supported (only ADQL)")
        query = params.get("QUERY", "").strip()
        if not query:
            raise tap.TapError("missing QUERY parameter")
        maxrec = None
        if params.get("MAXREC", "").strip():
            try:
                maxrec = int(params["MAXREC"])
            except ValueError:
                raise tap.TapError(f"MAXREC must be an integer, got {params['MAXREC']!r}") from None
            if maxrec < 0:
                raise tap.TapError("MAXREC must be >= 0")
        fmt = (params.get("RESPONSEFORMAT") or params.get("FORMAT") or "votable").lower()
        if fmt not in ("votable", "application/x-votable+xml", "text/xml", "csv", "text/csv"):
            raise tap.TapError(f"unsupported FORMAT {fmt!r} (votable or csv)")
        tables = {name: tap.read_upload(data) for name, data in _uploads(params, uploads).items()}
        result = self.engine.run(query, maxrec=maxrec, uploads=tables)
        if "csv" in fmt:
            return tap.csv_bytes(result), "text/csv"
        return tap.votable_bytes(result), VOTABLE_TYPE

    async def _run_job(self, params: dict[str, str], uploads: dict[str, bytes]) -> tuple[bytes, str]:
        return await asyncio.get_running_loop().run_in_executor(None, self.run_query, params, uploads)


SERVER = web.AppKey("server", ArchiveServer)
LOG = web.RequestKey("log", dict)
FAULT = web.RequestKey("fault", str)


def _uploads(params: dict[str, str], files: dict[str, bytes]) -> dict[str, bytes]:
    """UPLOAD=name,param:field[;name2,param:field2] -> {name: bytes of the posted part `field`}."""
    out = {}
    spec = params.get("UPLOAD", "").strip()
    for item in filter(None, (s.strip() for s in spec.split(";"))):
        name, _, ref = item.partition(",")
        if not ref.startswith("param:"):
            raise tap.TapError(f"only inline uploads (name,param:part) are supported, got {item!r}")
        part = ref[len("param:") :]
        if part not in files:
            raise tap.TapError(f"upload {name!r} refers to a missing part {part!r}")
        out[name.strip()] = files[part]
    return out


# ------------------------------------------------------------------------------------------------------------
# Body sending: bandwidth, drop/truncate faults, byte accounting


async def _send(request: web.Request, status: int, headers: dict, pieces: list, content_type: str):
    """Stream `pieces` (bytes, or (path, start, length) of a file) as the response body."""
    total = sum(len(p) if isinstance(p, bytes) else p[2] for p in pieces)
    srv: ArchiveServer = request.app[SERVER]
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_type = content_type
    resp.content_length = total
    await resp.prepare(request)
    entry = request[LOG]
    if request.method == "HEAD":
        await resp.write_eof()
        return resp
    fault = request.get(FAULT)
    limit = total // 2 if fault in ("drop", "truncate") else total
    sent = 0
    for chunk in _chunks(pieces):
        chunk = chunk[: limit - sent]
        if not chunk:
            break
        await srv.bandwidth.consume(len(chunk))
        try:
            await resp.write(chunk)
        except ConnectionError:  # the client went away: log what was sent, no traceback
            entry["client_closed"] = True
            return resp
        sent += len(chunk)
        entry["bytes"] = sent
    if sent < total:
        transport = request.transport
        if transport is not None:
            if fault == "drop":
                transport.abort()
            else:
                transport.close()
        return resp
    await resp.write_eof()
    return resp


def _chunks(pieces: list) -> Iterator[bytes]:
    for piece in pieces:
        if isinstance(piece, bytes):
            for i in range(0, len(piece), CHUNK):
                yield piece[i : i + CHUNK]
            continue
        path, start, length = piece
        with open(path, "rb") as fh:
            fh.seek(start)
            while length > 0:
                data = fh.read(min(CHUNK, length))
                if not data:
                    return
                length -= len(data)
                yield data


@web.middleware
async def _realism(request: web.Request, handler):
    """Access log, latency and fault injection around every request."""
    srv: ArchiveServer = request.app[SERVER]
    entry = {
        "time": time.time(),
        "method": request.method,
        "path": request.path,
        "query": request.query_string,
        "range": request.headers.get("Range"),
        "status": None,
        "bytes": 0,
        "client_closed": False,
    }
    request[LOG] = entry
    try:
        if srv.latency:
            await asyncio.sleep(srv.latency)
        is_file = request.path.startswith(f"/{IBE_ROOT}/")
        if is_file or (srv.faults.config.include_tap and request.path.startswith("/TAP")):
            identity = f"{request.method} {request.path_qs} {entry['range']}"
            request[FAULT] = srv.faults.draw(identity)
        fault = request.get(FAULT)
        if fault in ("http500", "http503", "http429"):
            code = int(fault[4:])
            headers = {} if code == 500 else {"Retry-After": str(srv.faults.config.retry_after)}
            resp = web.Response(status=code, text=f"simulated fault {code}\n", headers=headers)
        else:
            resp = await handler(request)
        entry["status"] = resp.status
        if isinstance(resp, web.Response) and resp.body is not None and request.method != "HEAD":
            entry["bytes"] = len(resp.body)
        return resp
    except web.HTTPException as exc:
        entry["status"] = exc.status
        raise
    finally:
        if entry["status"] is None:
            entry["status"] = 500
        srv.log(entry)


# ------------------------------------------------------------------------------------------------------------
# TAP


async def _params(request: web.Request) -> tuple[dict[str, str], dict[str, bytes]]:
    """TAP parameters (names upper-cased; query string and form merged) and uploaded parts by field name."""
    params = {k.upper(): v for k, v in request.query.items()}
    files: dict[str, bytes] = {}
    if request.method == "POST":
        form = await request.post()
        for key, value in form.items():
            if isinstance(value, web.FileField):
                files[key] = value.file.read()
            else:
                params[key.upper()] = str(value)
    return params, files


def _tap_error(message: str, status: int = 400) -> web.Response:
    return web.Response(status=status, body=tap.error_votable(message), content_type=VOTABLE_TYPE)


async def tap_sync(request: web.Request) -> web.StreamResponse:
    srv: ArchiveServer = request.app[SERVER]
    params, files = await _params(request)
    try:
        body, ctype = await asyncio.get_running_loop().run_in_executor(None, srv.run_query, params, files)
    except tap.TapError as exc:
        return _tap_error(str(exc))
    except Exception as exc:  # a bug here, not the client's fault: still a TAP error document
        return _tap_error(f"internal error: {type(exc).__name__}: {exc}", status=500)
    return await _send(request, 200, {}, [body], ctype)


def _job_url(request: web.Request, job_id: str) -> str:
    return f"{request.url.origin()}/TAP/async/{job_id}"


def _job(request: web.Request) -> uws.Job:
    job = request.app[SERVER].jobs.get(request.match_info["job_id"])
    if job is None:
        raise web.HTTPNotFound(text=f"no job {request.match_info['job_id']}\n")
    return job


async def tap_async_create(request: web.Request) -> web.Response:
    srv: ArchiveServer = request.app[SERVER]
    params, files = await _params(request)
    phase = params.pop("PHASE", "").upper()
    job = srv.jobs.create(params, files)
    if phase == "RUN":
        srv.jobs.start(job)
    raise web.HTTPSeeOther(_job_url(request, job.job_id))


async def tap_async_list(request: web.Request) -> web.Response:
    srv: ArchiveServer = request.app[SERVER]
    xml = uws.job_list_xml(srv.jobs.jobs(), f"{request.url.origin()}/TAP/async")
    return web.Response(text=xml, content_type="text/xml")


async def tap_job(request: web.Request) -> web.Response:
    srv: ArchiveServer = request.app[SERVER]
    job = _job(request)
    if request.method == "DELETE":
        srv.jobs.delete(job.job_id)
        raise web.HTTPSeeOther(f"{request.url.origin()}/TAP/async")
    if request.method == "POST":
        params, _ = await _params(request)
        if params.get("ACTION", "").upper() == "DELETE":
            srv.jobs.delete(job.job_id)
            raise web.HTTPSeeOther(f"{request.url.origin()}/TAP/async")
        raise web.HTTPBadRequest(text="only ACTION=DELETE may be posted to a job\n")
    wait = request.query.get("WAIT")
    if wait is not None:
        try:
            await srv.jobs.wait(job, float(wait))
        except ValueError:
            raise web.HTTPBadRequest(text=f"WAIT must be a number, got {wait!r}\n") from None
    return web.Response(text=uws.job_xml(job, _job_url(request, job.job_id)), content_type="text/xml")


async def tap_job_phase(request: web.Request) -> web.Response:
    srv: ArchiveServer = request.app[SERVER]
    job = _job(request)
    if request.method == "GET":
        return web.Response(text=job.phase)
    params, _ = await _params(request)
    phase = params.get("PHASE", "").upper()
    if phase == "RUN":
        srv.jobs.start(job)
    elif phase == "ABORT":
        srv.jobs.abort(job)
    else:
        raise web.HTTPBadRequest(text=f"PHASE must be RUN or ABORT, got {phase!r}\n")
    raise web.HTTPSeeOther(_job_url(request, job.job_id))


async def tap_job_result(request: web.Request) -> web.StreamResponse:
    job = _job(request)
    if job.phase != "COMPLETED" or job.result is None:
        raise web.HTTPNotFound(text=f"job {job.job_id} has no result (phase {job.phase})\n")
    return await _send(request, 200, {}, [job.result], job.result_type)


async def tap_job_error(request: web.Request) -> web.Response:
    job = _job(request)
    if job.phase != "ERROR":
        raise web.HTTPNotFound(text=f"job {job.job_id} has no error (phase {job.phase})\n")
    return _tap_error(job.error or "unknown error", status=200)


# ------------------------------------------------------------------------------------------------------------
# Files and cutouts


def resolve_path(root: Path, relpath: str) -> Path:
    """The file under `root` named by a URL path tail; 403 for anything that would leave the root."""
    if not relpath or "\x00" in relpath or "\\" in relpath or relpath.startswith("/"):
        raise web.HTTPForbidden(text="bad path\n")
    parts = relpath.split("/")
    if any(p in ("..", ".") for p in parts):
        raise web.HTTPForbidden(text="path leaves the archive\n")
    path = (root / relpath).resolve()
    if not path.is_relative_to(root):
        raise web.HTTPForbidden(text="path leaves the archive\n")
    if not path.is_file():
        raise web.HTTPNotFound(text="no such file\n")
    return path


_RANGE_RE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


def parse_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """RFC 9110 byte ranges -> [(start, end_inclusive)] clipped to the file; None if the header is malformed
    (then the whole file is sent); [] if no range is satisfiable (416)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip():
        return None
    out = []
    items = spec.split(",")
    if len(items) > MAX_RANGES:
        return None
    for item in items:
        m = _RANGE_RE.match(item)
        if not m or (not m[1] and not m[2]):
            return None
        if m[1]:
            start = int(m[1])
            end = int(m[2]) if m[2] else size - 1
            if m[2] and end < start:
                return None
            if start >= size:
                continue
            out.append((start, min(end, size - 1)))
        else:
            n = int(m[2])
            if n == 0:
                continue
            out.append((max(0, size - n), size - 1))
    return out


async def serve_file(request: web.Request) -> web.StreamResponse:
    srv: ArchiveServer = request.app[SERVER]
    path = resolve_path(srv.root, request.match_info["tail"])
    if "center" in request.query or "size" in request.query:
        return await _serve_cutout(request, path)
    size = path.stat().st_size
    headers = {"Accept-Ranges": "bytes", "Last-Modified": _http_date(path.stat().st_mtime)}
    header = request.headers.get("Range")
    ranges = parse_ranges(header, size) if header else None
    if ranges is None:
        return await _send(request, 200, headers, [(path, 0, size)], FITS_TYPE)
    if not ranges:
        return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"}, text="range not satisfiable\n")
    if len(ranges) == 1:
        start, end = ranges[0]
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return await _send(request, 206, headers, [(path, start, end - start + 1)], FITS_TYPE)
    boundary = secrets.token_hex(12)
    pieces: list = []
    for start, end in ranges:
        pieces.append(
            (
                f"\r\n--{boundary}\r\nContent-Type: {FITS_TYPE}\r\nContent-Range: bytes {start}-{end}/{size}\r\n\r\n"
            ).encode()
        )
        pieces.append((path, start, end - start + 1))
    pieces.append(f"\r\n--{boundary}--\r\n".encode())
    return await _send(request, 206, headers, pieces, f"multipart/byteranges; boundary={boundary}")


async def _serve_cutout(request: web.Request, path: Path) -> web.StreamResponse:
    try:
        spec = cutout.parse_cutout_query(request.query)
        body = await asyncio.get_running_loop().run_in_executor(None, cutout.make_cutout, path, spec)
    except cutout.CutoutError as exc:
        return web.Response(status=400, text=f"{exc}\n")
    name = path.name + (".gz" if spec.gzip else "")
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    return await _send(request, 200, headers, [body], "application/gzip" if spec.gzip else FITS_TYPE)


def _http_date(t: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(t))


# ------------------------------------------------------------------------------------------------------------
# App and lifecycle


def make_app(srv: ArchiveServer) -> web.Application:
    """The aiohttp application for one archive."""
    app = web.Application(middlewares=[_realism], client_max_size=256 * 1024**2)
    app[SERVER] = srv
    app.router.add_route("*", "/TAP/sync", tap_sync)
    app.router.add_post("/TAP/async", tap_async_create)
    app.router.add_get("/TAP/async", tap_async_list)
    app.router.add_route("*", "/TAP/async/{job_id}", tap_job)
    app.router.add_route("*", "/TAP/async/{job_id}/phase", tap_job_phase)
    app.router.add_get("/TAP/async/{job_id}/results/result", tap_job_result)
    app.router.add_get("/TAP/async/{job_id}/error", tap_job_error)
    app.router.add_get(f"/{IBE_ROOT}/{{tail:.+}}", serve_file)
    return app


@contextlib.contextmanager
def serve_archive(
    root: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    latency: float = 0.0,
    bandwidth: float | None = None,
    faults: FaultConfig | dict | None = None,
    seed: int = 0,
    access_log: str | os.PathLike | None = None,
    index: pd.DataFrame | None = None,
) -> Iterator[ArchiveServer]:
    """Serve `root` (IRSA's ibe/data/spherex directory) in a background thread; yields the ArchiveServer.

    `port=0` picks a free port; `srv.url` is 'http://HOST:PORT'. `index` defaults to
    `index_directory(root)` (cached in the directory). The server stops and frees the port on exit.
    """
    srv = ArchiveServer(
        root,
        index_directory(root) if index is None else index,
        latency=latency,
        bandwidth=bandwidth,
        faults=faults,
        seed=seed,
        access_log=access_log,
    )
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict = {}

    async def start() -> None:
        runner = web.AppRunner(make_app(srv), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        srv.set_base_url(f"http://{host}:{bound}")
        state["runner"] = runner

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as exc:
            state["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=main, name=f"spxbatch-sim-{id(srv)}", daemon=True)
    thread.start()
    ready.wait()
    if "error" in state:
        thread.join()
        loop.close()
        raise state["error"]
    try:
        yield srv
    finally:
        asyncio.run_coroutine_threadsafe(state["runner"].cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


def run_server(
    root: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    latency: float = 0.0,
    bandwidth: float | None = None,
    faults: FaultConfig | dict | None = None,
    seed: int = 0,
    access_log: str | os.PathLike | None = None,
) -> None:
    """Serve `root` in the foreground until interrupted (`spxbatch sim serve DIR`)."""
    with serve_archive(
        root,
        host=host,
        port=port,
        latency=latency,
        bandwidth=bandwidth,
        faults=faults,
        seed=seed,
        access_log=access_log,
    ) as srv:
        print(f"spxbatch simulated archive: {len(srv.index)} images from {srv.root}")
        print(f"  TAP:   {srv.tap_url}")
        print(f"  files: {srv.url}/{IBE_ROOT}/<relpath>")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
