"""The one URL dispatch: which protocol a URL or archive spec names."""

import pytest

from spxbatch.archive.location import fsspec_location, is_remote, protocol_of, resolve_archive


@pytest.mark.parametrize(("url", "protocol", "path"), [
    ("http://127.0.0.1:8000/ibe/x.fits", "http", "http://127.0.0.1:8000/ibe/x.fits"),
    ("https://irsa.ipac.caltech.edu/ibe/x.fits", "https", "https://irsa.ipac.caltech.edu/ibe/x.fits"),
    ("s3://nasa-irsa-spherex/qr2/x.fits", "s3", "s3://nasa-irsa-spherex/qr2/x.fits"),
    ("file:///data/mirror/x.fits", "file", "/data/mirror/x.fits"),
    ("/data/mirror/x.fits", "file", "/data/mirror/x.fits"),
    ("relative/x.fits", "file", "relative/x.fits"),
])
def test_protocol_of_every_kind(url, protocol, path):
    assert protocol_of(url) == protocol
    assert fsspec_location(url) == (protocol, path)
    assert is_remote(url) == (protocol != "file")


def test_resolve_archive_uses_the_same_dispatch(tmp_path):
    assert resolve_archive("http://h:1").kind == resolve_archive("https://h").kind == "http"
    assert resolve_archive("s3://bucket/prefix").file_root == "s3://bucket/prefix/"
    assert resolve_archive("irsa").kind == "irsa"
    local = resolve_archive(f"file://{tmp_path}")
    assert local.kind == "local" and local.file_root == str(tmp_path.resolve()) + "/"
    with pytest.raises(ValueError, match="existing directory"):
        resolve_archive(str(tmp_path / "missing"))
