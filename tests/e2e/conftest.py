"""Fixtures of the whole-run tests."""

from __future__ import annotations

import pytest
from clusters import local_cluster
from distributed import Client


@pytest.fixture(scope="module")
def client():
    """One LocalCluster of 2 workers, shared by the tests of a module (each module gets its own)."""
    with local_cluster() as cluster, Client(cluster) as c:
        c.wait_for_workers(2, timeout=60)
        yield c
