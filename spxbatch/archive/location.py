"""Where the archive is: IRSA, a server laid out like IRSA, an S3 bucket, or a local mirror directory.

An `ArchiveLocation` says where to plan (a TAP URL, or a local directory to index) and how a TAP `uri`
('ibe/data/spherex/qr2/level2/...') becomes the fsspec URL of the file to read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spxbatch.level2.naming import IBE_ROOT, IRSA_BASE_URL

#: IRSA's TAP endpoint (planning for 'irsa' and, by default, for S3 mirrors).
IRSA_TAP_URL = f"{IRSA_BASE_URL}/TAP"


@dataclass(frozen=True)
class ArchiveLocation:
    """kind: 'irsa' | 'http' | 's3' | 'local'; `file_root` is the archive's equivalent of
    'https://irsa.ipac.caltech.edu/ibe/data/spherex/' (a URL or a directory, ending in '/')."""

    kind: str
    tap_url: str | None
    file_root: str
    #: fsspec storage options for `file_root` (anonymous access for S3).
    storage_options: dict[str, Any] = field(default_factory=dict)
    #: The spec it was resolved from, for messages and the run record.
    spec: str = ""

    def file_url(self, uri: str) -> str:
        """The fsspec URL of a TAP `uri` or IRSA relative path ('ibe/data/spherex/...'), or of a path
        already relative to the file root ('qr2/level2/...'); a leading '/' is ignored."""
        return self.file_root + relative_to_root(uri)


def relative_to_root(uri: str) -> str:
    """'qr2/level2/...' from 'ibe/data/spherex/qr2/level2/...', '/ibe/...', a full IRSA URL or itself."""
    uri = uri.strip()
    marker = IBE_ROOT + "/"
    cut = uri.find(marker)
    return uri[cut + len(marker):] if cut >= 0 else uri.lstrip("/")


#: URL schemes fsspec reads, by the protocol name ArchiveIO takes; anything else is a local path.
_SCHEMES = {"http://": "http", "https://": "https", "s3://": "s3", "file://": "file"}


def protocol_of(url: str) -> str:
    """'http', 'https', 's3' or 'file' (a path, or a file:// URL): the one place a URL's kind is decided."""
    return next((protocol for scheme, protocol in _SCHEMES.items() if url.startswith(scheme)), "file")


def fsspec_location(url: str) -> tuple[str, str]:
    """(protocol, path) for ArchiveIO: a remote URL unchanged, a file:// URL as a plain path."""
    protocol = protocol_of(url)
    return protocol, url.removeprefix("file://") if protocol == "file" else url


def is_remote(url: str) -> bool:
    """Whether the URL names a server or a bucket (http, https, s3) rather than a path on this machine."""
    return protocol_of(url) != "file"


def resolve_archive(spec: str, *, tap_url: str | None = None) -> ArchiveLocation:
    """An ArchiveLocation from 'irsa', 'http(s)://host[:port][/base]', 's3://bucket[/prefix]' or a directory.

    `tap_url` overrides where planning queries go (e.g. an S3 mirror planned by a private TAP service).
    S3 is read anonymously; an S3 store other than AWS (MinIO, Ceph, a site cache) is reached by setting the
    standard `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`) in the environment, which botocore honours.
    A local directory is a mirror of the file tree below 'ibe/data/spherex/' (or of a tree containing
    'ibe/data/spherex/'); it is planned from its own file headers with no server.
    """
    spec = spec.strip()
    if spec.lower() == "irsa":
        return ArchiveLocation("irsa", tap_url or IRSA_TAP_URL, f"{IRSA_BASE_URL}/{IBE_ROOT}/", spec=spec)
    protocol = protocol_of(spec)
    if protocol in ("http", "https"):
        base = spec.rstrip("/")
        return ArchiveLocation("http", tap_url or f"{base}/TAP", f"{base}/{IBE_ROOT}/", spec=spec)
    if protocol == "s3":
        root = spec.rstrip("/") + "/"
        return ArchiveLocation("s3", tap_url or IRSA_TAP_URL, root, {"anon": True}, spec=spec)
    path = Path(spec.removeprefix("file://")).expanduser()
    if not path.is_dir():
        raise ValueError(f"archive {spec!r} is not 'irsa', an http(s) URL, an s3:// URL or an existing "
                         "directory; give one of those.")
    path = path.resolve()
    if (path / IBE_ROOT).is_dir():
        path = path / IBE_ROOT
    return ArchiveLocation("local", tap_url, str(path) + "/", spec=spec)
