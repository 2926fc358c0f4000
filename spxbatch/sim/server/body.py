"""Response bodies streamed under the server's bandwidth cap, with the drop, truncate and stall_body faults,
counting the bytes sent into the request's access-log entry."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import BinaryIO

from aiohttp import web

from spxbatch.sim.server.state import FAULT, LOG, SERVER, record

CHUNK = 256 * 1024
#: The media type of Level-2 files and uncompressed cutouts.
FITS_TYPE = "application/fits"

#: A body piece: bytes, or (path, start, length) of a slice of a file.
Piece = bytes | tuple[str, int, int]


async def send(request: web.Request, status: int, headers: dict, pieces: list[Piece],
               content_type: str) -> web.StreamResponse:
    """Stream `pieces` as the response body (headers only for HEAD); the access-log entry is recorded just
    before the last byte goes out (the last chunk, or the headers when there is no body to send)."""
    total = sum(len(p) if isinstance(p, bytes) else p[2] for p in pieces)
    srv = request.app[SERVER]
    entry = request[LOG]
    entry["status"] = status
    fault = request.get(FAULT)
    limit = 0 if request.method == "HEAD" else total // 2 if fault in ("drop", "truncate") else total
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_type = content_type
    resp.content_length = total
    if limit == 0:
        record(request)
    try:
        await resp.prepare(request)
    except ConnectionError:  # gone before the headers (it timed out on a stall): logged, no traceback
        entry["client_closed"] = True
        return resp
    if request.method == "HEAD":
        await resp.write_eof()
        return resp
    sent = 0
    stall_at = total // 2 if fault == "stall_body" else -1  # headers and half the body out, then nothing
    for chunk in _chunks(pieces, limit, stall_at):
        if sent == stall_at:
            await asyncio.sleep(srv.faults.config.stall_s)
        await srv.bandwidth.consume(len(chunk))
        if sent + len(chunk) == limit:
            entry["bytes"] = limit
            record(request)
        try:
            await resp.write(chunk)
        except ConnectionError:  # the client went away: log what was sent, no traceback
            entry["client_closed"] = True
            entry["bytes"] = sent
            return resp
        sent += len(chunk)
        entry["bytes"] = sent
    if sent < total:
        _cut_short(request, fault)
        return resp
    await resp.write_eof()
    return resp


def _cut_short(request: web.Request, fault: str | None) -> None:
    """End a connection whose body was cut: reset for `drop`, a plain close for `truncate`."""
    transport = request.transport
    if transport is None:
        return
    if fault == "drop":
        transport.abort()
    else:
        transport.close()


def _chunks(pieces: list[Piece], limit: int, cut: int = -1) -> Iterator[bytes]:
    """The body's first `limit` bytes, in chunks of at most CHUNK, one of which ends at offset `cut` (if > 0)."""
    pos = 0
    for chunk in _pieces(pieces, limit):
        if pos < cut < pos + len(chunk):
            yield chunk[: cut - pos]
            chunk = chunk[cut - pos :]
            pos = cut
        pos += len(chunk)
        yield chunk


def _pieces(pieces: list[Piece], limit: int) -> Iterator[bytes]:
    """The body's first `limit` bytes, in chunks of at most CHUNK; small pieces (a multipart body's part
    headers and row segments of ~150 bytes) are gathered into one chunk, so that a 64-part response costs the
    server a few writes and waits for the bandwidth cap, not 128 of each."""
    buf = bytearray()
    for segment in _segments(pieces, limit):
        if buf and len(buf) + len(segment) > CHUNK:
            yield bytes(buf)
            buf.clear()
        buf += segment
    if buf:
        yield bytes(buf)


def _segments(pieces: list[Piece], limit: int) -> Iterator[bytes]:
    """The body's first `limit` bytes, piece by piece, each in segments of at most CHUNK (each file opened
    once per response)."""
    left = limit
    handles: dict[str, BinaryIO] = {}
    with contextlib.ExitStack() as opened:
        for piece in pieces:
            if left <= 0:
                return
            if isinstance(piece, bytes):
                piece = piece[:left]
                left -= len(piece)
                for i in range(0, len(piece), CHUNK):
                    yield piece[i : i + CHUNK]
                continue
            path, start, length = piece
            length = min(length, left)
            left -= length
            if path not in handles:
                handles[path] = opened.enter_context(open(path, "rb"))
            fh = handles[path]
            fh.seek(start)
            while length > 0:
                data = fh.read(min(CHUNK, length))
                if not data:
                    return
                length -= len(data)
                yield data
