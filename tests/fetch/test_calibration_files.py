"""Calibration products found through the archive's folder listings: the newest delivery that holds the
detector (D3's redelivered ePSF), the same from a local mirror and over HTTP; absent products remembered,
a level-2-only mirror measured without them."""

from __future__ import annotations

import pandas as pd
import pytest
from fetch_checks import HALF, sources_on
from truth_match import truth_with_positions

from spxbatch.archive.location import relative_to_root
from spxbatch.fetch.cache import FetchCache
from spxbatch.fetch.calibration_files import calibration_file, tag_key
from spxbatch.fetch.execute import FetchContext
from spxbatch.fetch.fetch import fetch_image
from spxbatch.fetch.options import FetchOptions
from spxbatch.fetch.target import ImageTarget
from spxbatch.level2.naming import IBE_ROOT
from spxbatch.sim.server import serve_archive
from spxbatch.sim.variants import level2_only


def _target(root: str, relpath: str, protocol: str = "file") -> ImageTarget:
    row = {"url": f"{root}/{IBE_ROOT}/{relpath}" if protocol != "file" else "", "relpath": f"{IBE_ROOT}/{relpath}",
           "detector": int(relpath.split("/")[4])}
    options = FetchOptions(file_root=root) if protocol == "file" else FetchOptions()
    return ImageTarget.from_row(row, options)


def _current(info) -> dict[tuple[str, int, str], str]:
    cal = pd.read_csv(info.truth["calibration"])
    cal = cal[cal.current]
    return {(r.product, int(r.detector), relative_to_root(r.relpath).split("/")[0]): relative_to_root(r.relpath)
            for r in cal.itertuples()}


def test_tags_order_by_version_then_date():
    assert tag_key("cal-epsf-v2-2026-191") > tag_key("cal-epsf-v1-2026-200") > tag_key("cal-epsf-v1-2026-191")
    assert tag_key("README") < tag_key("cal-sapm-v1-2020-001")


@pytest.mark.parametrize("over", ["file", "http"])
def test_newest_delivery_per_detector(sim_archive_mixed, over):
    info = sim_archive_mixed
    current = _current(info)
    qr3 = next(f for f in info.files if f.startswith("qr3/") and f.split("/")[4] == "3")
    qr3_d1 = next(f for f in info.files if f.startswith("qr3/") and f.split("/")[4] != "3")
    qr2 = next(f for f in info.files if f.startswith("qr2/"))

    def check(root: str, protocol: str) -> None:
        ctx = FetchContext.open(protocol, FetchOptions(), FetchCache())
        for rel, product in ((qr3, "epsf"), (qr3_d1, "epsf"), (qr3, "solid_angle_pixel_map"),
                             (qr3, "spectral_wcs"), (qr2, "solid_angle_pixel_map"), (qr2, "average_psf")):
            target = _target(root, rel, protocol)
            want = current[(product, target.detector, rel.split("/")[0])]
            assert calibration_file(ctx, target, product).endswith("/" + want), (rel, product)
        assert "v2" in calibration_file(ctx, _target(root, qr3, protocol), "epsf")  # D3's redelivery
        with pytest.raises(LookupError, match="absent"):
            calibration_file(ctx, _target(root, qr3, protocol), "average_psf")  # QR3 dropped it
        asked = ctx.stats.requests
        with pytest.raises(LookupError, match="absent"):
            calibration_file(ctx, _target(root, qr3, protocol), "average_psf")
        assert ctx.stats.requests == asked  # remembered

    if over == "file":
        check(str(info.root), "file")
    else:
        with serve_archive(info.root) as srv:
            check(f"{srv.url}", "http")


def test_a_level2_only_mirror_measures_every_image_without_calibration(sim_archive_qr3, tmp_path):
    info = level2_only(sim_archive_qr3, tmp_path / "l2")
    truth = truth_with_positions(info)
    for rel in info.files[:3]:
        ra, dec = sources_on(truth, rel, 3)
        row = {"url": "", "relpath": f"{IBE_ROOT}/{rel}", "detector": int(rel.split("/")[4])}
        result = fetch_image(row, ra, dec, halfsize=HALF, cache=FetchCache(),
                             options=FetchOptions(file_root=str(info.root)))
        assert result.error is None and result.missing.size == 0
        assert all(r.solid_angle is None for r, _ in result.regions)
        assert any("absent" in n for n in result.notes)
