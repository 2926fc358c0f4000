"""Directory listings, as IRSA's IBE serves them: a plain HTML index of one folder (sub-folders with a
trailing slash, then files), so that clients find version tags, e.g. of the calibration products under
`qr3/epsf/`, through the archive's own listing. Hidden entries (the index cache) are not listed."""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from spxbatch.sim.server.body import send

HTML_TYPE = "text/html"


def listing_html(folder: Path, url_path: str) -> str:
    """The index page of `folder`, served at `url_path`; links are relative to the folder."""
    entries = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: (p.is_file(), p.name))
    rows = []
    for p in entries:
        name = p.name + ("/" if p.is_dir() else "")
        size = "-" if p.is_dir() else str(p.stat().st_size)
        rows.append(f'<tr><td><a href="{quote(name)}">{html.escape(name)}</a></td><td align="right">{size}</td></tr>')
    title = html.escape(f"Index of {url_path.rstrip('/')}/")
    return (
        f"<!DOCTYPE html>\n<html>\n<head><title>{title}</title></head>\n<body>\n<h1>{title}</h1>\n"
        '<table>\n<tr><th>Name</th><th>Size</th></tr>\n<tr><td><a href="../">Parent Directory</a></td><td></td></tr>\n'
        + "\n".join(rows)
        + "\n</table>\n</body>\n</html>\n"
    )


async def serve_listing(request: web.Request, folder: Path) -> web.StreamResponse:
    """GET/HEAD of a folder: its index page."""
    body = listing_html(folder, request.path).encode()
    return await send(request, 200, {}, [body], HTML_TYPE)
