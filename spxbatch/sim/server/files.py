"""IBE file URLs: the file below the root, whole, one byte range, or several (multipart/byteranges); HEAD;
416 when no range is satisfiable; a folder's listing; nothing outside the root is ever served."""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

from aiohttp import web

from spxbatch.sim.server.body import FITS_TYPE, Piece, send
from spxbatch.sim.server.cutouts import serve_cutout
from spxbatch.sim.server.listing import serve_listing
from spxbatch.sim.server.state import SERVER

#: More ranges than this in one header: the header is ignored and the whole file sent.
MAX_RANGES = 256
_RANGE_RE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


def resolve_path(root: Path, relpath: str) -> Path:
    """The file or folder under `root` named by a URL path tail; 403 for anything that would leave the root."""
    if not relpath or "\x00" in relpath or "\\" in relpath or relpath.startswith("/"):
        raise web.HTTPForbidden(text="bad path\n")
    parts = relpath.split("/")
    if any(p in ("..", ".") for p in parts):
        raise web.HTTPForbidden(text="path leaves the archive\n")
    path = (root / relpath).resolve()
    if not path.is_relative_to(root):
        raise web.HTTPForbidden(text="path leaves the archive\n")
    if not (path.is_file() or path.is_dir()):
        raise web.HTTPNotFound(text="no such file\n")
    return path


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
    """GET/HEAD of a file: a cutout when the query asks for one, else the file or the ranges asked for; GET/HEAD
    of a folder: its listing."""
    srv = request.app[SERVER]
    path = resolve_path(srv.root, request.match_info["tail"])
    if path.is_dir():
        return await serve_listing(request, path)
    if "center" in request.query or "size" in request.query:
        return await serve_cutout(request, path)
    size = path.stat().st_size
    headers = {"Accept-Ranges": "bytes", "Last-Modified": _http_date(path.stat().st_mtime)}
    header = request.headers.get("Range")
    ranges = parse_ranges(header, size) if header else None
    if ranges is None:
        return await send(request, 200, headers, [(path, 0, size)], FITS_TYPE)
    if not ranges:
        return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"}, text="range not satisfiable\n")
    if len(ranges) == 1:
        start, end = ranges[0]
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return await send(request, 206, headers, [(path, start, end - start + 1)], FITS_TYPE)
    boundary = secrets.token_hex(12)
    return await send(request, 206, headers, multipart_pieces(path, ranges, size, boundary),
                      f"multipart/byteranges; boundary={boundary}")


def multipart_pieces(path: Path, ranges: list[tuple[int, int]], size: int, boundary: str) -> list[Piece]:
    """The body of a multipart/byteranges response: each range after its part headers, then the close."""
    pieces: list[Piece] = []
    for start, end in ranges:
        pieces.append(
            (
                f"\r\n--{boundary}\r\nContent-Type: {FITS_TYPE}\r\nContent-Range: bytes {start}-{end}/{size}\r\n\r\n"
            ).encode()
        )
        pieces.append((path, start, end - start + 1))
    pieces.append(f"\r\n--{boundary}--\r\n".encode())
    return pieces


def _http_date(t: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(t))
