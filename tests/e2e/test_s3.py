"""The S3 path for real on loopback: the simulated archive in a moto S3 server laid out like AWS's mirror.

The bucket `nasa-irsa-spherex` holds the Level-2 files and calibration products under keys relative to the
archive root ('qr2/level2/...'), as on AWS. spxbatch reaches it the way a user of a non-AWS S3 would: the
standard `AWS_ENDPOINT_URL` (honoured by botocore, under s3fs), with anonymous (unsigned) requests.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from fetch_checks import HALF, check_same_as_local, plan_row, sources_on

from spxbatch.archive.location import IRSA_TAP_URL, resolve_archive
from spxbatch.fetch.cache import FetchCache
from spxbatch.fetch.fetch import FetchOptions, fetch_image
from spxbatch.level2.naming import IBE_ROOT, S3_BUCKET
from spxbatch.plan.catalog import read_catalog
from spxbatch.plan.index import index_directory
from spxbatch.plan.plan import make_plan
from spxbatch.sim.server import serve_archive

moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install 'moto[server]>=5')")
boto3 = pytest.importorskip("boto3", reason="boto3 (installed with moto) is missing")
s3fs = pytest.importorskip("s3fs", reason="s3fs is not installed")

BUCKET = S3_BUCKET
ARCHIVE = f"s3://{BUCKET}"
OPTS = FetchOptions(merge_gap_rows=2)


@pytest.fixture(scope="module")
def s3_rows(sim_archive):
    """plan_row's 'server': the archive index, with file URLs in the bucket (as the planner makes them)."""
    return SimpleNamespace(index=index_directory(sim_archive.root), file_url=resolve_archive(ARCHIVE).file_url)


def test_s3_location():
    loc = resolve_archive(ARCHIVE + "/")
    assert (loc.kind, loc.file_root, loc.storage_options) == ("s3", ARCHIVE + "/", {"anon": True})
    assert loc.tap_url == IRSA_TAP_URL  # S3 has no TAP: planning goes to IRSA unless told otherwise
    uri = f"{IBE_ROOT}/qr2/level2/2025W18_2B/v/3/f.fits"
    assert loc.file_url(uri) == f"{ARCHIVE}/qr2/level2/2025W18_2B/v/3/f.fits"


@pytest.mark.parametrize("strategy", ["range", "whole", "cutout"])
def test_s3_fetch_equals_local_read(s3_endpoint, s3_rows, sim_archive, truth, strategy):
    relpath = sim_archive.files[0]
    ra, dec = sources_on(truth, relpath, 4, spread=True)
    image = plan_row(s3_rows, relpath)
    assert image["url"] == f"{ARCHIVE}/{relpath}"
    result = fetch_image(image, ra, dec, strategy=strategy, halfsize=HALF, cache=FetchCache(), options=OPTS)
    check_same_as_local(result, sim_archive.root / relpath, ra.size, sim_archive.root, image["detector"])
    assert result.missing.size == 0 and result.requests > 0
    size = (sim_archive.root / relpath).stat().st_size
    if strategy == "whole":
        assert result.strategy == "whole" and result.bytes_read >= size
    else:  # no multi-range requests (nor cutouts) on S3: a few full-width strips, each range its own GET
        assert result.strategy == "range"
        assert len(result.regions) > 1 and all(r.x0 == 0 and r.shape[1] == 128 for r, _ in result.regions)
        assert sum(r.shape[0] for r, _ in result.regions) < 128
    if strategy == "cutout":
        assert "no cutout service on S3: range reads instead" in result.notes
    assert not any("absent" in n for n in result.notes)  # the calibration products came from the bucket


def test_s3_auto_and_size_from_head(s3_endpoint, s3_rows, sim_archive, truth):
    """A row without its size (HEAD on S3) and the cost model choosing, with no cutout estimate on S3."""
    relpath = sim_archive.files[1]
    ra, dec = sources_on(truth, relpath, 3)
    image = {**plan_row(s3_rows, relpath), "size_bytes": None}
    result = fetch_image(image, ra, dec, halfsize=HALF, cache=FetchCache(), options=OPTS)
    check_same_as_local(result, sim_archive.root / relpath, ra.size)
    assert result.strategy == "range" and "cutout" not in result.estimates


def test_s3_missing_object_is_recorded(s3_endpoint, s3_rows, sim_archive, truth):
    relpath = sim_archive.files[0]
    ra, dec = sources_on(truth, relpath, 2)
    image = {**plan_row(s3_rows, relpath), "url": f"{ARCHIVE}/qr2/level2/nowhere.fits", "size_bytes": None}
    t0 = time.monotonic()
    result = fetch_image(image, ra, dec, strategy="range", halfsize=HALF, cache=FetchCache(), options=OPTS)
    assert time.monotonic() - t0 < 10  # a 404 is not retried
    assert result.regions == [] and result.missing.tolist() == [0, 1]
    assert "nowhere.fits" in result.error and "404" in result.error and "1 attempt" in result.error


def test_s3_reads_are_anonymous(s3_endpoint, s3_rows, sim_archive, truth):
    """A private object (no public-read ACL) is refused to spxbatch: its requests are unsigned, as on AWS."""
    relpath = sim_archive.files[0]
    key = "private/" + relpath
    s3_endpoint.client.upload_file(str(sim_archive.root / relpath), BUCKET, key)
    ra, dec = sources_on(truth, relpath, 2)
    image = {**plan_row(s3_rows, relpath), "url": f"{ARCHIVE}/{key}"}
    result = fetch_image(image, ra, dec, strategy="whole", halfsize=HALF, cache=FetchCache(), options=OPTS)
    assert result.regions == [] and "403" in result.error and "1 attempt" in result.error


def test_plan_by_private_tap_reads_s3(s3_endpoint, sim_archive):
    """The HPC form at library level: plan with a TAP service of one's own, read the files from S3."""
    cat = read_catalog(sim_archive.catalog)
    with serve_archive(sim_archive.root) as srv:
        plan = make_plan(cat, resolve_archive(ARCHIVE, tap_url=srv.tap_url), margin_px=0)
    images = plan.images.set_index("image_id")
    assert len(images) and all(u.startswith(f"{ARCHIVE}/qr2/level2/") for u in images["url"])
    assert plan.meta["kind"] == "s3" and plan.meta["tap_url"] == srv.tap_url
    cache = FetchCache()
    for image_id, sources in list(plan.sources_by_image().items())[:2]:
        row = images.loc[image_id].to_dict()
        result = fetch_image(row, cat.ra[sources], cat.dec[sources], strategy="range", halfsize=HALF,
                             cache=cache, options=OPTS)
        rel = row["url"].removeprefix(f"{ARCHIVE}/")
        check_same_as_local(result, sim_archive.root / rel, sources.size)


def test_pipeline_over_s3_equals_local_mirror(s3_endpoint, sim_archive, tmp_path):
    """A whole run reading from S3 (planned by a TAP service given with tap_url; Dask worker processes inherit
    AWS_ENDPOINT_URL) gives the same cube as measuring the same files from a local mirror."""
    from cubes import assert_cubes_equal

    from spxbatch.cube.store import open_cube
    from spxbatch.pipeline.config import ClusterConfig
    from spxbatch.pipeline.stages import run

    one = ClusterConfig(workers=1)
    with serve_archive(sim_archive.root) as srv:
        ds = run(sim_archive.catalog, tmp_path / "s3.zarr", archive=ARCHIVE, tap_url=srv.tap_url,
                 progress=False, cluster=one)
    assert ds.sizes["obs"] > 100
    assert all(str(u).startswith(ARCHIVE) for u in ds["failure_url"].values)
    run(sim_archive.catalog, tmp_path / "local.zarr", archive=str(sim_archive.root), progress=False, cluster=one)
    assert_cubes_equal(open_cube(tmp_path / "local.zarr").load(), open_cube(tmp_path / "s3.zarr").load())


@pytest.mark.slow
def test_update_over_s3_measures_only_the_new_exposures(s3_endpoint, sim_archive, tmp_path):
    """`spxbatch update` of a cube read from S3 (planned by a TAP service that lists more exposures later): only
    the new exposures' objects are read, and the cube equals a fresh run of the grown listing."""
    from cubes import assert_cubes_equal

    from spxbatch.cube.store import open_cube
    from spxbatch.pipeline.executor import SerialExecutor
    from spxbatch.pipeline.stages import run
    from spxbatch.pipeline.update import update_cube

    index = index_directory(sim_archive.root)
    late = index["obs_id"].str[:10] == index.loc[index["mjd_start"].idxmax(), "obs_id"][:10]
    with serve_archive(sim_archive.root, index=index[~late]) as srv:
        run(sim_archive.catalog, tmp_path / "c.zarr", archive=ARCHIVE, tap_url=srv.tap_url, progress=False,
            executor=SerialExecutor())
        srv.set_index(index)
        result = update_cube(tmp_path / "c.zarr", executor=SerialExecutor(), progress=False)
        run(sim_archive.catalog, tmp_path / "f.zarr", archive=ARCHIVE, tap_url=srv.tap_url, progress=False,
            executor=SerialExecutor())
    images_before = len(index[~late].drop_duplicates(["obs_id", "detector"]))  # one processing per image
    assert result.kinds["new"] == late.sum() and result.kinds["old"] == images_before
    assert result.measured["images"] == late.sum()
    assert_cubes_equal(open_cube(tmp_path / "f.zarr").load(), open_cube(tmp_path / "c.zarr").load())
