"""Can the workers reach the archive? One tiny task on one worker, before any measuring is submitted.

Compute nodes of HPC clusters often have no route to the internet, while the login node that planned the
run does: without this check every image would fail after its retries. Any HTTP answer (even an error
status) proves the server is reachable; only a connection failure or timeout counts as unreachable.
"""

from __future__ import annotations

import asyncio
import os
import socket

import aiohttp
from distributed import Client

from spxbatch.archive.errors import ArchiveUnreachable
from spxbatch.archive.location import fsspec_location, is_remote, resolve_archive
from spxbatch.pipeline.executor import Executor, as_executor

#: Seconds the worker waits for the archive to answer (connect + first byte).
PROBE_TIMEOUT_S = 20.0

_MIRROR_HINT = ("Compute nodes often have no internet access: stage the images on a shared filesystem "
                "with `spxbatch stage` on a machine that can reach the archive, then run with "
                "--archive MIRROR_DIR (the local-mirror mode).")


def probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """On the calling machine: None when `url` (http(s), s3 or a local path) can be reached, else why not."""
    protocol, path = fsspec_location(url)
    if protocol in ("http", "https"):
        return _probe_http(url, timeout)
    if protocol == "s3":
        return _probe_s3(url)
    return None if os.path.exists(path) else f"{path} does not exist on this machine"


def _probe_http(url: str, timeout: float) -> str | None:
    """A HEAD request (aiohttp directly: fsspec reports a refused connection as a missing file)."""
    async def head() -> None:
        timeouts = aiohttp.ClientTimeout(total=timeout)
        async with aiohttp.ClientSession(timeout=timeouts) as session, session.head(url, allow_redirects=True):
            pass  # any status: the server answered

    try:
        asyncio.run(head())
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None


def _probe_s3(url: str) -> str | None:
    import fsspec

    fs = fsspec.filesystem("s3", anon=True, skip_instance_cache=True,
                           config_kwargs={"connect_timeout": 10, "retries": {"max_attempts": 2}})
    try:
        fs.info(url)
    except (FileNotFoundError, PermissionError):
        return None
    except Exception as exc:  # botocore's connection errors have no common base with OSError
        return f"{type(exc).__name__}: {exc}"
    return None


def _probe_task(url: str, timeout: float) -> tuple[str, str | None]:
    """The task: (this worker's host name, the probe's result)."""
    return socket.gethostname(), probe(url, timeout)


def check_archive_reachable(executor: Executor | Client, archive_spec: str, probe_url: str | None = None, *,
                            timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise ArchiveUnreachable unless one of the executor's workers (or a Dask client's) can reach the archive.

    `probe_url`: what to try (e.g. the first image the run will read); default the archive's file root.
    The task waits for a worker to exist (batch jobs may sit in the queue first); the request itself is
    bounded by `timeout`.
    """
    url = probe_url or resolve_archive(archive_spec).file_root
    host, problem = as_executor(executor).call(_probe_task, url, timeout)
    if problem is None:
        return
    if is_remote(url):
        raise ArchiveUnreachable(f"the workers cannot reach the archive {archive_spec!r}: worker on {host} "
                                 f"could not open {url} ({problem}). {_MIRROR_HINT}")
    raise ArchiveUnreachable(f"the workers cannot see the local mirror {archive_spec!r}: on {host}, "
                             f"{problem}; put the mirror on a filesystem the compute nodes share.")
