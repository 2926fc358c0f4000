"""Test helpers for whole runs: a reference run's cube, cube equality, killing a CLI as a crash would."""

from __future__ import annotations

import os
import signal
import subprocess

import numpy as np

#: Variables whose values legitimately differ between runs (the server's host:port is in the URL; when each
#: measurement was made).
_RUN_SPECIFIC = {"failure_url", "date_added"}


def http_reference_cube(archive, client, folder):
    """The cube of an undisturbed run of the simulated `archive` served over HTTP, measured on the Dask
    `client`, written below `folder`, loaded (what fault and staging tests compare their runs with)."""
    from spxbatch.cube.store import open_cube
    from spxbatch.pipeline.stages import run
    from spxbatch.sim.server import serve_archive

    out = folder / "cube.zarr"
    with serve_archive(archive.root) as srv:
        run(archive.catalog, out, archive=srv.url, progress=False, client=client)
    return open_cube(out).load()


def assert_cubes_equal(a, b) -> None:
    """Every variable of two cubes equal, value by value (NaN equal to NaN)."""
    assert set(a.variables) == set(b.variables)
    for name in a.variables:
        if name in _RUN_SPECIFIC:
            continue
        va, vb = a[name].values, b[name].values
        if va.dtype.kind == "f":
            np.testing.assert_array_equal(va, vb, err_msg=name)
        else:
            assert va.tolist() == vb.tolist(), name


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a still-running CLI and everything it started (its process group), as a crash would."""
    assert proc.poll() is None, proc.stdout.read()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
