"""TAP over HTTP: /TAP/sync answers at once, /TAP/async holds UWS jobs (create, run, wait, abort, delete,
result, error), both through `ArchiveServer.run_query`; a failed query is a TAP error document."""

from __future__ import annotations

import asyncio

from aiohttp import web

from spxbatch.sim.server import uws
from spxbatch.sim.server.body import send
from spxbatch.sim.server.state import SERVER
from spxbatch.sim.tap.errors import TapError
from spxbatch.sim.tap.votable import VOTABLE_TYPE, error_votable


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
    return web.Response(status=status, body=error_votable(message), content_type=VOTABLE_TYPE)


async def tap_sync(request: web.Request) -> web.StreamResponse:
    """A synchronous query: the result, or an error document (400 for the client's fault, 500 for ours)."""
    srv = request.app[SERVER]
    params, files = await _params(request)
    try:
        body, ctype = await asyncio.get_running_loop().run_in_executor(None, srv.run_query, params, files)
    except TapError as exc:
        return _tap_error(str(exc))
    except Exception as exc:  # a bug here, not the client's fault: still a TAP error document
        return _tap_error(f"internal error: {type(exc).__name__}: {exc}", status=500)
    return await send(request, 200, {}, [body], ctype)


def _job_url(request: web.Request, job_id: str) -> str:
    return f"{request.url.origin()}/TAP/async/{job_id}"


def _job(request: web.Request) -> uws.Job:
    job = request.app[SERVER].jobs.get(request.match_info["job_id"])
    if job is None:
        raise web.HTTPNotFound(text=f"no job {request.match_info['job_id']}\n")
    return job


async def tap_async_create(request: web.Request) -> web.Response:
    """POST /TAP/async: a new PENDING job (run at once with PHASE=RUN); 303 to the job."""
    srv = request.app[SERVER]
    params, files = await _params(request)
    phase = params.pop("PHASE", "").upper()
    job = srv.jobs.create(params, files)
    if phase == "RUN":
        srv.jobs.start(job)
    raise web.HTTPSeeOther(_job_url(request, job.job_id))


async def tap_async_list(request: web.Request) -> web.Response:
    srv = request.app[SERVER]
    xml = uws.job_list_xml(srv.jobs.jobs(), f"{request.url.origin()}/TAP/async")
    return web.Response(text=xml, content_type="text/xml")


async def tap_job(request: web.Request) -> web.Response:
    """A job's document (blocking up to WAIT seconds while it runs), or its deletion (DELETE, ACTION=DELETE)."""
    srv = request.app[SERVER]
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
    """GET: the phase as text; POST PHASE=RUN or ABORT, then 303 to the job."""
    srv = request.app[SERVER]
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
    return await send(request, 200, {}, [job.result], job.result_type)


async def tap_job_error(request: web.Request) -> web.Response:
    job = _job(request)
    if job.phase != "ERROR":
        raise web.HTTPNotFound(text=f"job {job.job_id} has no error (phase {job.phase})\n")
    return _tap_error(job.error or "unknown error", status=200)
