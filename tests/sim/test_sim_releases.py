"""Releases: the mixed archive holds QR2 files, R7 reprocessings of some (some detectors only, a retry tag),
QR3 wide and deep; its truth says which file of each (exposure, detector) is the newest, consistently with
the files themselves; QR2-processed files carry the error QR3's l3_flux_corrections undo."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from spxbatch.sim import make_archive, psf, render, survey
from spxbatch.sim.instrument import Detector
from spxbatch.sim.releases import QR3_VERSIONS, REPROCESSED, RETRIED, Processing


@pytest.fixture(scope="module")
def files(sim_archive_mixed) -> pd.DataFrame:
    f = pd.read_csv(sim_archive_mixed.truth["files"])
    return f[f.present]


def _layout_from_hdus(path) -> str:
    with fits.open(path) as hdul:
        names = [h.name for h in hdul]
    return "R7" if "EPSF" in names and "PSF" not in names else "QR2" if "PSF" in names else "?"


def test_every_file_is_what_the_truth_says(sim_archive_mixed, files):
    info = sim_archive_mixed
    assert sorted(files.relpath) == sorted(info.files)
    for r in files.itertuples():
        path = info.root / r.relpath
        with fits.open(path) as hdul:
            prim = hdul[0].header
            assert prim["VERSION"] == r.pipeline_version and prim["PROCTAG"] == r.version
            assert prim["COLLECTN"] == r.collection and prim["OBSID"] == r.obs_id
            assert prim["DETECTOR"] == r.detector
        assert _layout_from_hdus(path) == r.layout
        assert r.relpath.startswith(f"{r.release}/level2/") and r.version in r.relpath


def test_newest_processing_wins(files):
    """Exactly one file per (exposure, detector) is not superseded: the one with the latest tag."""
    for (_, _), group in files.groupby(["obs_id", "detector"]):
        newest = group[~group.superseded]
        assert len(newest) == 1
        orders = {r.relpath: Processing(r.version, r.pipeline_version).order for r in group.itertuples()}
        assert newest.relpath.iloc[0] == max(orders, key=orders.get)


def test_the_mixed_archive_has_every_case(files):
    qr2 = files[files.release == "qr2"]
    reproc = qr2[qr2.layout == "R7"]
    assert set(reproc.version) == {REPROCESSED.tag, RETRIED.tag}
    # Some exposures are reprocessed for some detectors only.
    per_exp = qr2.groupby("obs_id").apply(lambda g: (g.layout == "R7").groupby(g.detector).any(), include_groups=False)
    partial = per_exp.groupby(level=0).agg(lambda s: 0 < s.sum() < len(s))
    assert partial.any()
    # A QR2 file whose only reprocessing carries the retry tag, and a reprocessing that was retried.
    chains = qr2.groupby(["obs_id", "detector"]).version.agg(tuple)
    assert any(c[-1] == RETRIED.tag and REPROCESSED.tag not in c for c in chains)
    assert any(c[-2:] == (REPROCESSED.tag, RETRIED.tag) for c in chains)
    # QR2 exposures that are not reprocessed at all.
    assert any(all(not v.startswith(("l2b-v26", "l2b_retry")) for v in c) for c in chains)
    # QR3: wide and deep, R7 files under qr3/ only.
    qr3 = files[files.release == "qr3"]
    assert set(qr3.collection) == {"spherex_qr3", "spherex_qr3_deep"}
    assert (qr3.layout == "R7").all() and set(qr3.version) <= {t for t, _ in QR3_VERSIONS}
    assert set(qr2.collection) == {"spherex_qr2"}


def test_measurement_truth_marks_the_newest_file(sim_archive_mixed, files):
    meas = pd.read_parquet(sim_archive_mixed.truth["measurements"])
    newest = set(files.loc[~files.superseded, "relpath"])
    assert set(meas.loc[~meas.superseded, "relpath"]) <= newest
    assert (meas.superseded == ~meas.relpath.isin(newest)).all()
    # Every (source, exposure, detector) has exactly one newest measurement.
    assert not meas[~meas.superseded].duplicated(["name", "obs_id", "detector"]).any()
    keys = meas[["name", "obs_id", "detector"]].drop_duplicates()
    assert len(keys) == (~meas.superseded).sum()
    # The same source on the QR2 file and on its reprocessing: same position, wavelength and flux.
    pair = meas[meas.duplicated(["name", "obs_id", "detector"], keep=False)].groupby(["name", "obs_id", "detector"])
    spread = pair[["x", "y", "wavelength_um", "flux_ujy"]].agg(np.ptp)
    assert len(spread) > 20 and (spread.to_numpy() == 0).all()


def _far_from_sources(info, rel: str) -> np.ndarray:
    """Pixels outside every source's rendering stamp (QR2: 15 x 15 px around it): no star light in either layout."""
    row = pd.read_csv(info.truth["files"]).set_index("relpath").loc[rel]
    det = Detector(int(row.detector), info.npix)
    sources = pd.read_csv(info.truth["sources"])
    where = render.place(det, (row.crval1, row.crval2), row.pa_deg, sources)
    yy, xx = np.mgrid[0 : info.npix, 0 : info.npix]
    far = np.ones((info.npix, info.npix), bool)
    for x, y in zip(where.x, where.y, strict=True):
        far &= np.maximum(np.abs(xx - x), np.abs(yy - y)) > psf.STAMP_HALF + 1
    return far


def test_qr2_files_carry_the_l3_error_and_share_the_raw_data_with_their_reprocessing(sim_archive_mixed):
    """Away from stars and R7-only artifacts, QR2 IMAGE x l3 factor = the R7 reprocessing's IMAGE (the same
    raw data: the same noise draws), VARIANCE x factor^2 likewise, ZODI identical; the truth's file gain is
    1 / factor at each source of the QR2 file and 1 on R7 files."""
    info = sim_archive_mixed
    meas = pd.read_parquet(info.truth["measurements"])
    defects = pd.read_parquet(info.truth["defects"])
    checked = 0
    for (_, det), group in meas.groupby(["obs_id", "detector"]):
        rels = dict(zip(group.layout, group.relpath, strict=False))
        if {"QR2", "R7"} - set(rels) or group[group.layout == "QR2"].version.nunique() > 1:
            continue
        l3 = fits.getdata(info.root / "qr3/l3_flux_corrections/cal-flxc-v1-2026-191" / str(det)
                          / f"l3_flux_corrections_D{det}_spx_cal-flxc-v1-2026-191.fits").astype(float)
        with fits.open(info.root / rels["QR2"]) as a, fits.open(info.root / rels["R7"]) as b:
            n = a["IMAGE"].data.shape[0]
            ok = _far_from_sources(info, rels["QR2"]) & np.isfinite(a["IMAGE"].data)
            mine = defects[defects.relpath == rels["R7"]]
            ok[mine.y, mine.x] = False
            assert ok.sum() > 0.2 * n * n
            qr2_corrected = a["IMAGE"].data.astype(float) * l3
            assert np.allclose(qr2_corrected[ok], b["IMAGE"].data[ok], rtol=1e-6)
            assert not np.allclose(a["IMAGE"].data[ok], b["IMAGE"].data[ok], rtol=1e-3)  # uncorrected: off
            var = a["VARIANCE"].data.astype(float) * l3**2
            assert np.allclose(var[ok], b["VARIANCE"].data[ok], rtol=1e-6)
            assert np.array_equal(a["ZODI"].data, b["ZODI"].data)
        rows = group[group.relpath == rels["QR2"]]
        ix, iy = np.rint(rows.x).astype(int), np.rint(rows.y).astype(int)
        assert np.allclose(rows.l3_flux_factor, l3[np.clip(iy, 0, n - 1), np.clip(ix, 0, n - 1)])
        assert np.allclose(rows.file_gain * rows.l3_flux_factor, 1.0)
        checked += 1
    assert checked >= 3
    r7 = meas[meas.layout == "R7"]
    assert (r7.file_gain == 1).all() and (r7.l3_flux_factor == 1).all()


def test_release_qr2_is_the_default_and_unknown_releases_are_refused(tmp_path):
    with pytest.raises(ValueError, match="release must be one of"):
        make_archive(tmp_path / "x", npix=32, n_visits=2, release="qr9")
    assert not (tmp_path / "x" / "qr2").exists()


def test_fields_with_their_own_slew_offsets_share_no_file(tmp_path):
    """Fields written into one archive (as a many-field benchmark sky is) keep their files apart by their
    slew offset; without it, two seeds of one release can draw the same observation IDs."""
    kwargs = {"npix": 64, "n_visits": 4, "noise": False, "calibration": False}
    ids = {offset: [e.obs_id for i in range(32) for e in survey.plan(4, 64, 1000 + i, f"f{i}", large_offset=offset * i)]
           for offset in (0, 200)}
    assert len(set(ids[0])) < len(ids[0])  # 32 seeds alone draw the same observation IDs
    assert len(set(ids[200])) == len(ids[200])
    a = make_archive(tmp_path, seed=1000, field="f0", ra=150, dec=2, **kwargs)
    b = make_archive(tmp_path, seed=1001, field="f1", ra=154, dec=2, slew_offset=200, **kwargs)
    assert a.files and b.files and not set(a.files) & set(b.files)
    with fits.open(tmp_path / b.files[0]) as hdul:
        assert int(hdul[0].header["OBSID"].split("_")[2]) >= 200
