"""The truth tables agree with the images, and the archive has the survey's quirks."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from test_sim_psf import _isolated, _source_only, cube_pixel_fractions

from spxbatch.level2.constants import FLAG_BITS, MJY_PER_SR_TO_UJY_PER_ARCSEC2
from spxbatch.level2.naming import obs_id_parts
from spxbatch.sim import field_sources, flux_ujy, make_archive


def test_aperture_sums_recover_truth(sim_archive_noiseless):
    """Sum of a 2-px-radius aperture on the noiseless, sky-free image = truth flux x the cube's fraction."""
    info = sim_archive_noiseless
    iso = _isolated(info)
    ratios = []
    for rel, rows in iso.groupby("relpath"):
        src_img, cube, omega = _source_only(info, rel)
        for _, r in rows.iterrows():
            ix, iy = round(r.x), round(r.y)
            ys, xs = np.mgrid[iy - 5 : iy + 6, ix - 5 : ix + 6]
            inside = np.hypot(xs - r.x, ys - r.y) <= 2.0
            ap = (src_img[ys, xs] * MJY_PER_SR_TO_UJY_PER_ARCSEC2 * omega[ys, xs])[inside].sum()
            frac = cube_pixel_fractions(cube[r.psf_zone - 1], r.x, r.y, xs, ys)[inside].sum()
            assert 0.5 < frac < 0.98
            ratios.append(ap / (frac * r.flux_ujy))
    assert len(ratios) > 20
    assert np.allclose(ratios, 1.0, atol=5e-4)


def test_truth_flux_is_the_spectrum(sim_archive):
    meas = pd.read_parquet(sim_archive.truth["measurements"])
    src = pd.read_csv(sim_archive.truth["sources"]).set_index("name")
    rows = src.loc[meas.name].reset_index()
    assert np.allclose(flux_ujy(rows, meas.wavelength_um.to_numpy(), meas.mjd.to_numpy()), meas.flux_ujy)
    # A flux range from near the noise floor to saturating stars; variable sources and lines exist.
    assert meas.flux_ujy.min() < 150 and meas.flux_ujy.max() > 5e5
    assert (src.var_amp > 0).any() and src.line1_um.notna().any()


def test_measurements_per_band(sim_archive):
    meas = pd.read_parquet(sim_archive.truth["measurements"])
    meas = meas[~meas.superseded]
    per = meas.groupby(["name", "detector"]).size().unstack(fill_value=0)
    assert set(per.columns) == {1, 2, 3, 4, 5, 6}
    # Most sources are seen more than once per band, at different wavelengths.
    assert (per >= 2).mean().mean() > 0.5
    spread = meas.groupby(["name", "detector"]).wavelength_um.agg(np.ptp)
    assert (spread > 0.005).mean() > 0.5
    # The two catalog sources far off the field have no coverage.
    cat = pd.read_csv(sim_archive.catalog)
    assert len(set(cat.name) - set(meas.name)) >= 2


def test_pairs_share_obs_id_time_and_sky(sim_archive):
    files = pd.read_csv(sim_archive.truth["files"])
    files = files[files.present]
    meas = pd.read_parquet(sim_archive.truth["measurements"])
    for obs_id, g in files.groupby("obs_id"):
        obs_id_parts(obs_id)
        for d in g.detector:
            partner = d + 3 if d <= 3 else d - 3
            if partner in set(g.detector):
                a = g[g.detector == d].iloc[0]
                b = g[g.detector == partner].iloc[0]
                assert (a.mjd_beg, a.crval1, a.crval2) == (b.mjd_beg, b.crval1, b.crval2)
                na = set(meas[(meas.obs_id == obs_id) & (meas.detector == d)].name)
                nb = set(meas[(meas.obs_id == obs_id) & (meas.detector == partner)].name)
                assert len(na ^ nb) <= 0.1 * len(na | nb)


def test_superseded_version_and_missing_bands(sim_archive):
    files = pd.read_csv(sim_archive.truth["files"], keep_default_na=False)
    assert (~files.present).sum() >= 1
    present = files[files.present]
    dup = present.groupby(["obs_id", "detector"]).version.nunique()
    twice = dup[dup == 2].index
    assert len(twice) == 1
    obs_id, det = twice[0]
    versions = present[(present.obs_id == obs_id) & (present.detector == det)]
    assert set(versions.version) == {"l2b-v20-2025-253", "l2b-v21-2025-354"}
    old = versions[versions.superseded].relpath.iloc[0]
    new = versions[~versions.superseded].relpath.iloc[0]
    with fits.open(sim_archive.root / old) as a, fits.open(sim_archive.root / new) as b:
        assert a[0].header["VERSION"] == "6.5.4+psffix1" and b[0].header["VERSION"] == "6.5.6"
        # The superseded version carries a 1% calibration error that the later one fixed.
        img_a, img_b = a["IMAGE"].data.astype(float), b["IMAGE"].data.astype(float)
        ok = np.isfinite(img_b) & (img_b != 0)
        assert np.median(img_a[ok] / img_b[ok]) == pytest.approx(1.01, abs=1e-5)
        assert np.array_equal(a["FLAGS"].data, b["FLAGS"].data)
    # An exposure where one detector of the pair exists and the other is missing.
    missing = files[~files.present]
    assert any(((present.obs_id == m.obs_id) & (present.detector != m.detector)).any() for m in missing.itertuples())


def test_flags_match_planted_defects(sim_archive):
    """Every planted defect carries its bit, and every set bit other than the physical ones is planted."""
    defects = pd.read_parquet(sim_archive.truth["defects"])
    physical = sum(1 << FLAG_BITS[n] for n in ("SOURCE", "NONLINEAR", "OVERFLOW", "SUR_ERROR", "DICHROIC"))
    kinds_seen = set()
    for rel in sim_archive.files:
        d = defects[defects.relpath == rel]
        with fits.open(sim_archive.root / rel) as hdul:
            flags = hdul["FLAGS"].data.astype(np.int64)
            var = hdul["VARIANCE"].data
            img = hdul["IMAGE"].data
        expected = np.zeros_like(flags)
        for r in d.itertuples():
            if r.kind != "UNFLAGGED_COLD":
                expected[r.y, r.x] |= 1 << FLAG_BITS[r.kind]
                assert flags[r.y, r.x] & (1 << FLAG_BITS[r.kind])
            else:
                assert flags[r.y, r.x] & ~(1 << FLAG_BITS["SOURCE"]) == 0
            assert bool(np.isnan(var[r.y, r.x])) == r.nan_variance
            kinds_seen.add(r.kind)
        assert np.array_equal(flags & ~physical, expected & ~physical)
        hot = d[(d.kind == "HOT")]
        lone = hot[[(flags[r.y, r.x] & ~(1 << FLAG_BITS["SOURCE"])) == 1 << FLAG_BITS["HOT"] for r in hot.itertuples()]]
        assert len(lone) > 0
        assert np.all(img[lone.y, lone.x] > np.nanmedian(img) + 1.0)
    assert {"HOT", "COLD", "NONFUNC", "TRANSIENT", "PERSIST", "UNFLAGGED_COLD", "PHANTOM", "MISSING_DATA"} <= kinds_seen
    meas = pd.read_parquet(sim_archive.truth["measurements"])
    assert meas.bad_pixel_near.any() and meas.unflagged_defect_near.any() and not meas.bad_pixel_near.all()


def test_dichroic_corners_in_bands_3_and_4(sim_archive):
    bit = 1 << FLAG_BITS["DICHROIC"]
    for rel in sim_archive.files:
        with fits.open(sim_archive.root / rel) as hdul:
            d = hdul["IMAGE"].header["DETECTOR"]
            flagged = (hdul["FLAGS"].data & bit) != 0
        assert flagged.any() == (d in (3, 4))


def test_noiseless_archive_has_no_artifacts(sim_archive_noiseless):
    physical = sum(1 << FLAG_BITS[n] for n in ("SOURCE", "NONLINEAR", "OVERFLOW", "SUR_ERROR"))
    for rel in sim_archive_noiseless.files[:4]:
        with fits.open(sim_archive_noiseless.root / rel) as hdul:
            assert not np.any(hdul["FLAGS"].data & ~physical)
            assert np.all(np.isfinite(hdul["VARIANCE"].data))


def test_same_seed_same_bytes(tmp_path):
    kw = {"npix": 64, "seed": 11, "n_visits": 3, "n_sources": 30}
    a = make_archive(tmp_path / "a", **kw)
    b = make_archive(tmp_path / "b", **kw)
    c = make_archive(tmp_path / "c", **{**kw, "seed": 12}, calibration=False)
    rels = [str(p.relative_to(a.root)) for p in Path(a.root).rglob("*") if p.is_file()]
    assert len(rels) > 10 and a.files == b.files
    _, mismatch, errors = filecmp.cmpfiles(a.root, b.root, rels, shallow=False)
    assert not mismatch and not errors
    assert not filecmp.cmp(
        a.root / "truth" / "measurements.parquet", c.root / "truth" / "measurements.parquet", shallow=False
    )


def test_deep_field(tmp_path):
    info = make_archive(tmp_path, npix=64, seed=2, deep=True, n_visits=8, n_sources=30, calibration=False)
    files = pd.read_csv(info.truth["files"])
    assert (files.collection == "spherex_qr2_deep").all()
    with fits.open(info.root / info.files[0]) as hdul:
        assert hdul[0].header["COLLECTN"] == "spherex_qr2_deep"
    t = np.sort(files.mjd_beg.unique())
    assert np.median(np.diff(t)) < 0.1  # revisits within an orbit or a small slew


def test_demo_catalog_matches_generator(tmp_path, sim_archive):
    """catalogs/demo.csv is the catalog of the default demo archive; truth/catalog.csv is the injected sky."""
    shipped = pd.read_csv(Path(__file__).parents[2] / "catalogs" / "demo.csv")
    field_sources()[["name", "ra", "dec"]].to_csv(tmp_path / "demo.csv", index=False)
    pd.testing.assert_frame_equal(shipped, pd.read_csv(tmp_path / "demo.csv"))
    assert list(pd.read_csv(sim_archive.catalog).name) == list(pd.read_csv(sim_archive.truth["sources"]).name)
