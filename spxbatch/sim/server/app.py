"""The aiohttp application of one archive: its routes behind the realism middleware."""

from __future__ import annotations

from aiohttp import web

from spxbatch.level2.naming import IBE_ROOT
from spxbatch.sim.server import tap_routes as tap
from spxbatch.sim.server.files import serve_file
from spxbatch.sim.server.listing import serve_listing
from spxbatch.sim.server.realism import realism
from spxbatch.sim.server.state import SERVER, ArchiveServer

#: Largest request body (TAP uploads).
CLIENT_MAX_SIZE = 256 * 1024**2


def make_app(srv: ArchiveServer) -> web.Application:
    """The aiohttp application for one archive."""
    app = web.Application(middlewares=[realism], client_max_size=CLIENT_MAX_SIZE)
    app[SERVER] = srv
    app.router.add_route("*", "/TAP/sync", tap.tap_sync)
    app.router.add_post("/TAP/async", tap.tap_async_create)
    app.router.add_get("/TAP/async", tap.tap_async_list)
    app.router.add_route("*", "/TAP/async/{job_id}", tap.tap_job)
    app.router.add_route("*", "/TAP/async/{job_id}/phase", tap.tap_job_phase)
    app.router.add_get("/TAP/async/{job_id}/results/result", tap.tap_job_result)
    app.router.add_get("/TAP/async/{job_id}/error", tap.tap_job_error)
    app.router.add_get(f"/{IBE_ROOT}/", _serve_root)
    app.router.add_get(f"/{IBE_ROOT}/{{tail:.+}}", serve_file)
    return app


async def _serve_root(request: web.Request) -> web.StreamResponse:
    """The archive root's listing (its release folders), as IBE serves `ibe/data/spherex/`."""
    return await serve_listing(request, request.app[SERVER].root)
