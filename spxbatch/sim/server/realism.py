"""The middleware around every request: the access-log entry, latency, and fault injection (an error status
or a stall here; short bodies in `body.send`). The entry is recorded before the response leaves (here for
whole responses, in `body.send` for streamed ones), so a client that has its answer finds it in the log."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from spxbatch.level2.naming import IBE_ROOT
from spxbatch.sim.server.files import parse_ranges, resolve_path
from spxbatch.sim.server.state import FAULT, LOG, SERVER, ArchiveServer, record
from spxbatch.sim.tap.votable import VOTABLE_TYPE, error_votable

#: Faults answered with a status instead of the handler's response.
STATUS_FAULTS = ("http500", "http503", "http429")


@web.middleware
async def realism(request: web.Request, handler):
    """Access log, latency and fault injection around every request."""
    srv = request.app[SERVER]
    srv.received()
    entry = _new_entry(request)
    request[LOG] = entry
    try:
        if srv.latency:
            await asyncio.sleep(srv.latency)
        config = srv.faults.config
        is_file = request.path.startswith(f"/{IBE_ROOT}/")
        is_tap = request.path.startswith("/TAP")
        if ((is_file and _touches_hdu(srv, request)) or (config.include_tap and is_tap)) \
                and config.applies_to(request.path):
            identity = f"{request.method} {request.path_qs} {entry['range']}"
            request[FAULT] = entry["fault"] = srv.faults.draw(identity)
        fault = request.get(FAULT)
        if fault == "stall":
            await asyncio.sleep(config.stall_s)
        if fault in STATUS_FAULTS:
            code = int(fault[4:])
            headers = {} if code == 500 else {"Retry-After": str(config.retry_after)}
            if is_tap:  # a TAP service says what went wrong in an error document
                resp = web.Response(status=code, body=error_votable(f"simulated fault {code}"), headers=headers,
                                    content_type=VOTABLE_TYPE)
            else:
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
        record(request)


def _touches_hdu(srv: ArchiveServer, request: web.Request) -> bool:
    """The `extname` filter: whether the bytes a file request asks for touch an HDU it names (a listing, a
    cutout, a file that is no FITS or a request without Range: judged on the whole file)."""
    config = srv.faults.config
    if config.extname is None:
        return True
    try:
        path = resolve_path(srv.root, request.path[len(f"/{IBE_ROOT}/"):])
    except web.HTTPException:
        return False
    if not path.is_file():
        return False
    header = request.headers.get("Range")
    ranges = None if not header or request.query_string else parse_ranges(header, path.stat().st_size)
    return config.touches_hdu(srv.hdu_spans(path), ranges)


def _new_entry(request: web.Request) -> dict:
    """A request's access-log entry before it is answered."""
    return {
        "time": time.time(),
        "method": request.method,
        "path": request.path,
        "query": request.query_string,
        "range": request.headers.get("Range"),
        "status": None,
        "bytes": 0,
        "client_closed": False,
        "fault": None,
    }
