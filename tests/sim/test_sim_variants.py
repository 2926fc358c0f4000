"""Archive variants: a level-2-only mirror, damaged files named by the truth and still listed by TAP, files
with unexpected header cards whose data are untouched."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import pyvo
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from spxbatch.files import sha256_file
from spxbatch.level2.naming import IBE_ROOT
from spxbatch.plan.index import index_directory
from spxbatch.sim import make_archive, variants
from spxbatch.sim.server import serve_archive


@pytest.fixture(scope="module")
def altered(tmp_path_factory):
    """A small mixed archive, its pixel data before any change, then damaged and given extra cards."""
    info = make_archive(tmp_path_factory.mktemp("variants"), npix=48, seed=4, n_visits=4, release="mixed")
    before = {}
    for rel in info.files:
        with fits.open(info.root / rel) as hdul:
            before[rel] = {h.name: np.array(h.data) for h in hdul if h.data is not None}
    damaged = variants.damage(info)
    extra = variants.extra_cards(info)
    return info, before, damaged, extra


def _open_problem(path) -> str | None:
    """Why astropy cannot give this file's seven Level-2 HDUs of one layout (None: it can)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyUserWarning)
            with fits.open(path) as hdul:
                names = [h.name for h in hdul]
                for h in hdul:
                    h.data  # noqa: B018 (read every data unit)
                version = int(str(hdul[0].header.get("VERSION", "0")).split(".")[0])
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    if "VARIANCE" not in names:
        return "missing extension"
    if (version >= 7) != ("EPSF" in names and "PSF" not in names):
        return "layout contradicts VERSION"
    return None


def test_level2_only_mirror(sim_archive_qr3, tmp_path):
    mirror = variants.level2_only(sim_archive_qr3, tmp_path / "mirror")
    fits_files = sorted(p.relative_to(mirror.root).as_posix() for p in mirror.root.rglob("*.fits"))
    assert fits_files == sorted(sim_archive_qr3.files) and mirror.calibration_files == []
    assert not (mirror.root / "qr3" / "epsf").exists()
    rel = sim_archive_qr3.files[0]
    assert sha256_file(mirror.root / rel) == sha256_file(sim_archive_qr3.root / rel)
    assert mirror.truth["measurements"].is_file() and mirror.catalog.parent == mirror.root / "truth"


def test_each_damage_kind_names_one_image_that_cannot_be_read(altered):
    info, _, damaged, _ = altered
    assert list(damaged.kind) == list(variants.DAMAGE_KINDS)
    assert damaged.relpath.is_unique and (pd.read_csv(info.truth["damaged"]).relpath == damaged.relpath).all()
    files = pd.read_csv(info.truth["files"]).set_index("relpath")
    for r in damaged.itertuples():
        assert not files.loc[r.relpath, "superseded"]  # the image a correct tool would measure
        assert (files.loc[r.relpath, "obs_id"], files.loc[r.relpath, "detector"]) == (r.obs_id, r.detector)
        assert _open_problem(info.root / r.relpath) is not None, r.kind
    sizes = damaged.set_index("kind").size_bytes
    assert sizes["empty"] == 0 and sizes["truncated"] > 0
    meas = pd.read_parquet(info.truth["measurements"])
    assert meas.relpath.isin(damaged.relpath).sum() > 0  # sources whose images are damaged are in the truth
    intact = [rel for rel in info.files if rel not in set(damaged.relpath)]
    assert all(_open_problem(info.root / rel) is None for rel in intact)


@pytest.mark.filterwarnings("ignore:File may have been truncated")
def test_damaged_files_stay_listed_by_tap_with_the_served_index(altered):
    info, _, damaged, _ = altered
    assert len(index_directory(info.root, use_cache=False).attrs["failed"]) == 2  # garbage and empty
    served = pd.read_parquet(info.truth["served_index"])
    with serve_archive(info.root, index=served) as srv:
        uris = pyvo.dal.TAPService(srv.tap_url).search("SELECT a.uri FROM spherex.artifact AS a").to_table()
    listed = {u[len(IBE_ROOT) + 1 :] for u in uris["uri"]}
    assert listed == set(info.files) and set(damaged.relpath) <= listed


def test_extra_cards_leave_the_data_alone(altered):
    info, before, damaged, extra = altered
    assert len(extra) == 3 and not set(extra) & set(damaged.relpath)
    assert (pd.read_csv(info.truth["extra_cards"]).relpath == extra).all()
    for rel in extra:
        with fits.open(info.root / rel) as hdul:
            for hdu in hdul:
                assert hdu.header["XTRAKEY"] == "surprise" and hdu.header["SIM UNEXPECTED KEYWORD"] == 42
                assert hdu.header["XTRALONG"] == ("a long string value " * 8).rstrip()  # over CONTINUE cards
                if hdu.data is not None:
                    data = np.asarray(hdu.data)
                    assert np.array_equal(data, before[rel][hdu.name], equal_nan=data.dtype.kind == "f")
            assert type(hdul["FLAGS"]).__name__ == ("CompImageHDU" if "EPSF" in hdul else "ImageHDU")
        with warnings.catch_warnings():
            warnings.simplefilter("error", AstropyUserWarning)  # a stale CHECKSUM or DATASUM warns
            with fits.open(info.root / rel, checksum=True) as hdul:
                assert all(h.header["CHECKSUM"] for h in hdul[1:])
        assert _open_problem(info.root / rel) is None
