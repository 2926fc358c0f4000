"""Starting and stopping a simulated archive: in a background thread for tests and the demo, in the
foreground for `spxbatch sim serve`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterator

import pandas as pd
from aiohttp import web

from spxbatch.level2.naming import IBE_ROOT
from spxbatch.plan.index import index_directory
from spxbatch.sim.faults import FaultConfig
from spxbatch.sim.server.app import make_app
from spxbatch.sim.server.state import ArchiveServer


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
    with serve_app(make_app(srv), host, port) as url:
        srv.set_base_url(url)
        yield srv


@contextlib.contextmanager
def serve_app(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve an aiohttp `app` in a background thread; yields its base URL 'http://HOST:PORT' (`port=0`: a free
    one). The server stops and frees the port on exit."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict = {}

    async def start() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        state["url"] = f"http://{host}:{runner.addresses[0][1]}"
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

    thread = threading.Thread(target=main, name=f"spxbatch-sim-{id(app)}", daemon=True)
    thread.start()
    ready.wait()
    if "error" in state:
        thread.join()
        loop.close()
        raise state["error"]
    try:
        yield state["url"]
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
    index: pd.DataFrame | None = None,
) -> None:
    """Serve `root` in the foreground until interrupted (`spxbatch sim serve DIR`); `index` as in
    `serve_archive`."""
    with serve_archive(
        root,
        host=host,
        port=port,
        latency=latency,
        bandwidth=bandwidth,
        faults=faults,
        seed=seed,
        access_log=access_log,
        index=index,
    ) as srv:
        print(f"spxbatch simulated archive: {len(srv.index)} images from {srv.root}")
        print(f"  TAP:   {srv.tap_url}")
        print(f"  files: {srv.url}/{IBE_ROOT}/<relpath>")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
