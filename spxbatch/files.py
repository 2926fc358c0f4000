"""Local files written so that a crash never leaves half of one: every write goes to a temporary name
beside its target and is renamed over it only once complete (a full disk included: the write fails as one
`WriteError`, its temporary removed); and the checksum staged files are verified by."""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from spxbatch.errors import WriteError

#: Errors that say the filesystem has no room or takes no writes, not that spxbatch did something wrong.
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` for the caller to write (a file or a directory); on success it replaces
    `path`, on any error it is removed and `path` is left as it was. A directory target is swapped by two
    renames, so readers see the old or the new one, never a mixture."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if tmp.is_dir() and path.is_dir():
            old = tmp.with_name(tmp.name + ".old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as exc:
        cause = no_room(exc)
        if cause is None:
            raise
        raise write_error(path, cause) from exc
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def no_room(exc: BaseException) -> OSError | None:
    """The OSError in `exc` or its causes that says the filesystem has no room or takes no writes, if any
    (libraries such as Zarr may wrap it)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in NO_ROOM:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def write_error(path: str | Path, cause: OSError) -> WriteError:
    """The one sentence for a write the filesystem refused (`no_room`): which file, why, what to do."""
    return WriteError(f"cannot write {path}: {cause.strerror}; nothing half-written was left (every file "
                      "spxbatch writes is whole or absent): make room there and rerun the same command, which "
                      "keeps what is finished")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temporary file, fsync, rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
