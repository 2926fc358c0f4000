"""The persistent product store: bytes by key, bounded (least recently used out), never an error; and how
`cache_dir` is resolved."""

from __future__ import annotations

import os
import time

from spxbatch.fetch.store import CACHE_ENV, NO_CACHE, ProductStore, open_store, resolve_store_dir


def test_put_then_get_returns_the_bytes_and_other_keys_miss(tmp_path):
    store = ProductStore(tmp_path / "s", max_bytes=10_000)
    store.put("a", b"x" * 100)
    assert store.get("a") == b"x" * 100
    assert store.get("b") is None
    assert ProductStore(tmp_path / "s", max_bytes=10_000).get("a") == b"x" * 100  # another process sees it


def test_the_least_recently_used_entries_go_first_when_the_bound_is_passed(tmp_path):
    store = ProductStore(tmp_path, max_bytes=3_500)
    for i, key in enumerate("abc"):
        store.put(key, bytes([i]) * 1000)
        path = store._path(key)
        os.utime(path, (time.time() - 100 + i, time.time() - 100 + i))  # a older than b older than c
    assert store.get("a") is not None  # 'a' used now: 'b' is the least recently used
    store.put("d", b"d" * 1000)
    assert store.get("b") is None and store.get("a") is not None and store.get("d") is not None
    assert store.size() <= 3_500


def test_an_entry_larger_than_the_bound_is_not_stored(tmp_path):
    store = ProductStore(tmp_path, max_bytes=10)
    store.put("a", b"x" * 11)
    assert store.get("a") is None and store.size() == 0


def test_an_unwritable_folder_is_skipped_not_an_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    store = ProductStore(tmp_path / "file", max_bytes=10_000)
    store.put("a", b"x")  # no exception: a cache that cannot be written costs a re-read, nothing else
    assert store.get("a") is None


def test_cache_dir_auto_follows_the_environment_and_none_turns_it_off(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert resolve_store_dir("auto") == str(tmp_path / "c")
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_store_dir("auto") == str(tmp_path / "xdg" / "spxbatch" / "products")
    monkeypatch.setenv(CACHE_ENV, NO_CACHE)
    assert resolve_store_dir("auto") == NO_CACHE and open_store("auto", 1.0) is None
    assert open_store("none", 1.0) is None and open_store("", 1.0) is None
    assert open_store(str(tmp_path / "x"), 0.5).max_bytes == 500_000_000


def test_trimming_never_removes_files_the_store_did_not_write(tmp_path):
    mine = tmp_path / "ab" / "notes.bin"
    mine.parent.mkdir()
    mine.write_bytes(b"x" * 5000)  # the user's own file in a folder given as cache_dir
    store = ProductStore(tmp_path, max_bytes=1_500)
    store.put("a", b"a" * 1000)
    store.put("b", b"b" * 1000)
    assert mine.read_bytes() == b"x" * 5000 and store.size() <= 1_500
