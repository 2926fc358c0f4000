"""Atomic writes: the target is the old or the new content, never a mixture, and no temporary is left (a full
disk included, which is one WriteError)."""

from __future__ import annotations

import hashlib

import pytest

from spxbatch.errors import WriteError
from spxbatch.files import atomic_path, atomic_write_bytes, sha256_file


def test_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "a.json"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_directory_is_swapped_whole(tmp_path):
    target = tmp_path / "cube.zarr"
    target.mkdir()
    (target / "old-chunk").write_text("x")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new-chunk").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == ["new-chunk"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.zarr"]


def test_sha256_file_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 9000  # more than one 1 MiB block
    path = tmp_path / "f"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_a_full_disk_is_one_write_error_and_keeps_the_old_file(small_disk):
    """ENOSPC mid-write (a file, a directory tree): WriteError naming the target, the old content kept, no
    temporary left; once there is room the same write succeeds."""
    target = small_disk / "a.bin"
    target.write_bytes(b"old")
    big = b"x" * (5 * 1024**2)  # more than the 4 MiB disk holds
    with pytest.raises(WriteError, match=f"cannot write {target}: No space left on device"):
        atomic_write_bytes(target, big)
    with pytest.raises(WriteError, match="No space left"), atomic_path(small_disk / "tree") as tmp:
        tmp.mkdir()
        for i in range(5):
            (tmp / f"{i}.bin").write_bytes(big[: 1024**2])
    assert target.read_bytes() == b"old" and sorted(p.name for p in small_disk.iterdir()) == ["a.bin"]
    atomic_write_bytes(target, big[: 1024**2])
    assert target.stat().st_size == 1024**2
