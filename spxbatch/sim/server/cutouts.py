"""IBE cutout requests (`?center=..&size=..[&gzip=false]`): made off the event loop by
`spxbatch.sim.cutout`; a bad or non-overlapping request is a 400."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from spxbatch.sim import cutout
from spxbatch.sim.server.body import FITS_TYPE, send


async def serve_cutout(request: web.Request, path: Path) -> web.StreamResponse:
    """The cutout of `path` the query asks for, as an attachment (gzip unless gzip=false)."""
    try:
        spec = cutout.parse_cutout_query(request.query)
        body = await asyncio.get_running_loop().run_in_executor(None, cutout.make_cutout, path, spec)
    except cutout.CutoutError as exc:
        return web.Response(status=400, text=f"{exc}\n")
    name = path.name + (".gz" if spec.gzip else "")
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    return await send(request, 200, headers, [body], "application/gzip" if spec.gzip else FITS_TYPE)
