"""A local mirror's layout and manifest: round trip, what counts as intact, where cutouts go, which cutouts a
mirror holds for which image."""

from __future__ import annotations

import hashlib
import json

from spxbatch.archive.mirror import (
    MANIFEST_NAME,
    cutout_relpath,
    is_intact,
    read_manifest,
    staged_cutouts,
    write_manifest,
)


def test_manifest_round_trip_and_empty(tmp_path):
    assert read_manifest(tmp_path) == {"format": 1, "files": {}, "plans": {}}
    manifest = {"format": 1, "files": {"qr2/a.fits": {"kind": "image", "size": 3}}, "plans": {"f": {"images": 1}}}
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest
    assert json.loads((tmp_path / MANIFEST_NAME).read_text()) == manifest
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_NAME]  # no temporary file left behind


def test_is_intact(tmp_path):
    data = b"0123456789"
    (tmp_path / "qr2").mkdir()
    (tmp_path / "qr2/a.fits").write_bytes(data)
    good = {"kind": "image", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert is_intact(tmp_path, "qr2/a.fits", good)
    assert not is_intact(tmp_path, "qr2/a.fits", {**good, "size": 9})
    assert not is_intact(tmp_path, "qr2/a.fits", {**good, "sha256": "0" * 64})
    assert not is_intact(tmp_path, "qr2/b.fits", good) and not is_intact(tmp_path, "qr2/a.fits", None)
    assert is_intact(tmp_path, "qr2/none.fits", {"kind": "none", "reason": "no overlap"})  # needs no file


def test_cutout_places_and_staged_cutouts():
    image = "ibe/data/spherex/qr2/level2/P/V/3/level2_x_spx_V.fits"
    assert cutout_relpath(image, 7) == "qr2/level2/P/V/3/level2_x_spx_V_cut007.fits"
    manifest = {"files": {
        cutout_relpath(image, 1): {"kind": "cutout", "parent": image[17:], "parent_shape": [128, 96]},
        cutout_relpath(image, 0): {"kind": "cutout", "parent": image[17:], "parent_shape": [128, 96]},
        "qr2/level2/P/V/3/other.fits": {"kind": "image"},
        "qr2/level2/P/V/3/gone.fits": {"kind": "none"},
    }}
    assert staged_cutouts(manifest) == {image[17:]: {
        "cutouts": [f"ibe/data/spherex/{cutout_relpath(image, k)}" for k in (0, 1)], "ny": 128, "nx": 96}}
