"""A fault-injecting HTTP proxy: the simulated archive's seeded faults in front of another server, such as a
moto S3 server holding the archive's objects, so the S3 path meets the same transient faults as IBE's URLs.

Each request is forwarded to the upstream server unless the fault drawn for it (`FaultInjector`, seeded, per
request identity: a retry draws again) answers instead: http500/http503/http429 an S3-style error document
(503 and 429 with Retry-After), drop and truncate the upstream's headers and half its body, then the connection
reset or closed. `only` spares the paths it does not match, as on the archive.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import aiohttp
from aiohttp import web

from spxbatch.sim.faults import FaultConfig, FaultInjector
from spxbatch.sim.server.lifecycle import serve_app

#: Request headers not forwarded (the proxy's own connection decides them).
_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "accept-encoding"}
#: What S3 names each error status in its error document.
_S3_CODES = {500: "InternalError", 503: "SlowDown", 429: "SlowDown"}


class FaultProxy:
    """The proxy's state: the upstream base URL, the fault injector and how many requests it forwarded."""

    def __init__(self, upstream: str, faults: FaultConfig | dict | None, seed: int) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults = FaultInjector(FaultConfig.coerce(faults), seed)
        self.requests = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one request: a fault, or the upstream's answer (cut short for drop and truncate)."""
        self.requests += 1
        config = self.faults.config
        fault = None
        if config.applies_to(request.path):
            fault = self.faults.draw(f"{request.method} {request.path_qs} {request.headers.get('Range')}")
        if fault in ("http500", "http503", "http429"):
            code = int(fault[4:])
            headers = {} if code == 500 else {"Retry-After": str(config.retry_after)}
            body = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{_S3_CODES[code]}</Code>"
                    f"<Message>simulated fault {code}</Message></Error>")
            return web.Response(status=code, text=body, headers=headers, content_type="application/xml")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with aiohttp.ClientSession(auto_decompress=False) as session, session.request(
                request.method, self.upstream + request.path_qs, headers=headers, data=await request.read(),
                allow_redirects=False) as up:
            body = await up.read()
            out_headers = {k: v for k, v in up.headers.items() if k.lower() not in _HOP_BY_HOP}
            status, length = up.status, up.headers.get("Content-Length")
        resp = web.StreamResponse(status=status, headers=out_headers)
        if request.method == "HEAD":  # the object's size, as the upstream said it (an S3 client needs it)
            if length is not None:
                resp.content_length = int(length)
            await resp.prepare(request)
            await resp.write_eof()
            return resp
        resp.content_length = len(body)
        await resp.prepare(request)
        if fault not in ("drop", "truncate") or len(body) < 2:
            await resp.write(body)
            await resp.write_eof()
            return resp
        await resp.write(body[: len(body) // 2])  # the whole body announced, half sent
        if request.transport is not None:
            if fault == "drop":
                request.transport.abort()
            else:
                request.transport.close()
        return resp


@contextlib.contextmanager
def serve_fault_proxy(upstream: str, faults: FaultConfig | dict | None = None, seed: int = 0,
                      host: str = "127.0.0.1") -> Iterator[FaultProxy]:
    """A FaultProxy in front of `upstream`, served in a background thread on a free port (`proxy.url`)."""
    proxy = FaultProxy(upstream, faults, seed)
    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    with serve_app(app, host) as url:
        proxy.url = url
        yield proxy
