"""Shared pytest fixtures: small seeded simulated archives (session-scoped, built once per test run), and a small
filesystem that fills up, and the recorder of the reliability matrices."""

from __future__ import annotations

import os
import subprocess

import pytest

from spxbatch.fetch.store import CACHE_ENV, NO_CACHE
from spxbatch.sim import ArchiveInfo, make_archive

#: The small test archive: 128 px images, 8 exposures (15 files, ~80 MB, ~3 s).
SIM_TEST_CONFIG = {"npix": 128, "seed": 7, "n_visits": 8}


@pytest.fixture(scope="session", autouse=True)
def _no_shared_product_cache():
    """Runs made by session and module fixtures use no persistent product cache, so that no test's PSF and
    calibration bytes make another test's runs warm (each test gets its own cache, below)."""
    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = NO_CACHE
    yield
    if before is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = before


@pytest.fixture(autouse=True)
def product_cache_dir(tmp_path, monkeypatch):
    """The default persistent product cache (`fetch.store`) of this test's runs: fresh, in its tmp_path."""
    path = tmp_path / "product-cache"
    monkeypatch.setenv(CACHE_ENV, str(path))
    return path


@pytest.fixture(scope="session")
def sim_archive(tmp_path_factory) -> ArchiveInfo:
    """A small noisy simulated archive (with artifacts and flags) and its truth."""
    return make_archive(tmp_path_factory.mktemp("sim_archive"), **SIM_TEST_CONFIG)


@pytest.fixture(scope="session")
def sim_archive_noiseless(tmp_path_factory) -> ArchiveInfo:
    """The same sky and survey as `sim_archive`, rendered without noise or pixel artifacts."""
    return make_archive(tmp_path_factory.mktemp("sim_archive_noiseless"), noise=False, **SIM_TEST_CONFIG)


@pytest.fixture(scope="session")
def sim_archive_qr3(tmp_path_factory) -> ArchiveInfo:
    """The test archive's sky and field as QR3 exposures: R7 files only (~60 MB, ~5 s)."""
    return make_archive(tmp_path_factory.mktemp("sim_archive_qr3"), release="qr3", **SIM_TEST_CONFIG)


@pytest.fixture(scope="session")
def sim_archive_qr3_noiseless(tmp_path_factory) -> ArchiveInfo:
    """`sim_archive_qr3` without noise or pixel artifacts (R7 stars are flux x ePSF at pixel centres)."""
    return make_archive(tmp_path_factory.mktemp("sim_archive_qr3_noiseless"), release="qr3", noise=False,
                        **SIM_TEST_CONFIG)


@pytest.fixture(scope="session")
def sim_archive_mixed(tmp_path_factory) -> ArchiveInfo:
    """A mixed archive: the test archive's QR2 files, R7 reprocessings of some, QR3 wide and deep (~160 MB)."""
    return make_archive(tmp_path_factory.mktemp("sim_archive_mixed"), release="mixed", **SIM_TEST_CONFIG)


@pytest.fixture(scope="session")
def sim_run(sim_archive, tmp_path_factory):
    """A whole run on `sim_archive`, read as a local mirror in this process (serial executor): the cube's path."""
    from spxbatch.pipeline.executor import SerialExecutor
    from spxbatch.pipeline.stages import run

    out = tmp_path_factory.mktemp("sim_run") / "cube.zarr"
    run(sim_archive.catalog, out, archive=str(sim_archive.root), progress=False, executor=SerialExecutor())
    return out


@pytest.fixture(scope="session")
def truth(sim_archive):
    """The truth of `sim_archive`'s measurements, with each source's catalog position."""
    from truth_match import truth_with_positions

    return truth_with_positions(sim_archive)


@pytest.fixture(scope="session")
def truth_qr3(sim_archive_qr3):
    """The truth of `sim_archive_qr3`'s measurements, with each source's catalog position."""
    from truth_match import truth_with_positions

    return truth_with_positions(sim_archive_qr3)


@pytest.fixture
def reliability(request):
    """Records the case's row for docs/reliability.md (`reliability_record`; a no-op unless asked for)."""
    from reliability_record import Recorder

    return Recorder(request.node.name, request.node.module.__name__)


@pytest.fixture
def small_disk(tmp_path, request):
    """A 4 MiB tmpfs mounted for the test, or of the size an indirect parametrization gives (e.g. "128m"; root
    only; skipped where mounting is not permitted)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    size = getattr(request, "param", "4m")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)
