"""Fixtures of the whole-run tests: a module's Dask cluster, and the simulated archive in a moto S3 server."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from clusters import local_cluster
from distributed import Client

from spxbatch.archive import io as http
from spxbatch.level2.naming import S3_BUCKET


@pytest.fixture(scope="module")
def client():
    """One LocalCluster of 2 workers, shared by the tests of a module (each module gets its own)."""
    with local_cluster() as cluster, Client(cluster) as c:
        c.wait_for_workers(2, timeout=60)
        yield c


@pytest.fixture(scope="module")
def s3_endpoint(sim_archive):
    """A moto S3 server on 127.0.0.1 holding the simulated archive; spxbatch pointed at it by AWS_ENDPOINT_URL.

    The objects are uploaded public-read: moto serves unsigned requests only for objects whose ACL allows
    them (AWS makes the real bucket public by a bucket policy, which moto does not apply to unsigned
    requests). The upload itself uses dummy credentials given to boto3 here, never through the environment.
    """
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install moto[server])")
    boto3 = pytest.importorskip("boto3", reason="boto3 (installed with moto) is missing")
    s3fs = pytest.importorskip("s3fs", reason="s3fs is not installed")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket=S3_BUCKET)
        for rel in [*sim_archive.files, *sim_archive.calibration_files]:  # 'qr2/...': the keys as on AWS
            client.upload_file(str(sim_archive.root / rel), S3_BUCKET, rel, ExtraArgs={"ACL": "public-read"})
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AWS_ENDPOINT_URL", endpoint)
            # filesystems made before (e.g. pointing at AWS) must not be reused; nor ours after the module
            mp.setattr(http, "_FILESYSTEMS", {})
            s3fs.S3FileSystem.clear_instance_cache()
            yield SimpleNamespace(url=endpoint, client=client)
            s3fs.S3FileSystem.clear_instance_cache()
    finally:
        server.stop()
