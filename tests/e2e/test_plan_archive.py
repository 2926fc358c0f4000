"""The plan against the simulated archive: TAP (sync, async, faults) and local mirror, checked against truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spxbatch.archive.location import resolve_archive
from spxbatch.archive.retry import RetryPolicy
from spxbatch.errors import ConfigError
from spxbatch.level2.constants import BANDS
from spxbatch.plan.catalog import make_catalog, read_catalog
from spxbatch.plan.plan import Plan, dedupe, make_plan
from spxbatch.plan.tap import TapClient, TapOverflow, point_query
from spxbatch.sim import make_archive
from spxbatch.sim.server import serve_archive

SMALL = {"npix": 128, "seed": 7, "n_visits": 6}


@pytest.fixture(scope="module")
def wrap_archive(tmp_path_factory):
    """A field straddling RA = 0."""
    return make_archive(tmp_path_factory.mktemp("wrap"), ra=0.02, dec=-1.0, **SMALL)


@pytest.fixture(scope="module")
def polar_archive(tmp_path_factory):
    """A deep-survey field around the north celestial pole."""
    return make_archive(tmp_path_factory.mktemp("polar"), ra=10.0, dec=89.95, deep=True, **SMALL)


def triples(plan: Plan, names: np.ndarray) -> set[tuple[str, str, int]]:
    """(source name, obs_id, detector) of every planned pair."""
    img = plan.images.set_index("image_id").loc[plan.pairs["image_id"]]
    return set(zip(names[plan.pairs["source_index"]], img["obs_id"], img["detector"], strict=True))


def truth_triples(info) -> set[tuple[str, str, int]]:
    """(source, obs_id, detector) of every source centre on a current (not superseded) image."""
    t = pd.read_parquet(info.truth["measurements"])
    t = t[~t["superseded"]]
    return set(zip(t["name"], t["obs_id"], t["detector"], strict=True))


def tap_requests(srv) -> int:
    return sum(1 for e in srv.access_log if e["path"].startswith("/TAP"))


@pytest.mark.parametrize("which", ["sim_archive", "wrap_archive", "polar_archive"])
def test_tap_and_local_plans_equal_truth(which, request):
    info = request.getfixturevalue(which)
    cat = read_catalog(info.catalog)
    expected = truth_triples(info)
    local = make_plan(cat, str(info.root), margin_px=0)
    assert triples(local, cat.name) == expected
    with serve_archive(info.root) as srv:
        tap = make_plan(cat, srv.url, margin_px=0)
    assert triples(tap, cat.name) == expected
    # the same images in the same order, whichever way they were planned
    cols = ["image_id", "relpath", "obs_id", "detector", "band_name", "version", "collection", "mjd"]
    pd.testing.assert_frame_equal(tap.images[cols], local.images[cols])
    pd.testing.assert_frame_equal(tap.pairs, local.pairs)
    assert all(u == f"{srv.url}/{r}" for u, r in zip(tap.images["url"], tap.images["relpath"], strict=True))
    assert all(u == f"{info.root.resolve()}/{r.removeprefix('ibe/data/spherex/')}"
               for u, r in zip(local.images["url"], local.images["relpath"], strict=True))
    assert tap.meta["duplicates_dropped"] >= 1  # the simulator writes superseded versions
    assert (tap.images["size_bytes"] > 0).all()


def test_bulk_plan_equals_one_query_per_source(sim_archive):
    full = read_catalog(sim_archive.catalog)
    keep = np.arange(0, len(full), 3)  # every third source (each point query costs the server ~0.3 s)
    cat = make_catalog(full.ra[keep], full.dec[keep], name=full.name[keep])
    with serve_archive(sim_archive.root) as srv:
        bulk = make_plan(cat, srv.url, margin_px=0)
        n_bulk = tap_requests(srv)
        client = TapClient(srv.url + "/TAP")
        per_source = client.query_many([point_query(r, d) for r, d in zip(cat.ra, cat.dec, strict=True)])
    got = set()
    for name, rows in zip(cat.name, per_source, strict=True):
        rows = dedupe(rows)
        got |= set(zip([name] * len(rows), rows["obs_id"], rows["detector"], strict=True))
    assert triples(bulk, cat.name) == got and len(got) > 50
    assert n_bulk < len(cat) / 3  # a handful of tile queries, not one per source


def test_margin_adds_sources_just_outside(sim_archive):
    cat = read_catalog(sim_archive.catalog)
    plan0 = make_plan(cat, str(sim_archive.root), margin_px=0)
    img = plan0.images.iloc[0]
    # a source 3 px outside the first corner-to-corner edge of image 0, and one 3 px inside
    from spxbatch.sky import radec_of as xyz_to_radec
    from spxbatch.sky import unit_vectors as radec_to_xyz

    a, b = radec_to_xyz(img["poly_ra"][0], img["poly_dec"][0]), radec_to_xyz(img["poly_ra"][1], img["poly_dec"][1])
    c = radec_to_xyz(np.mean(img["poly_ra"]), np.mean(img["poly_dec"]))
    mid = (a + b) / np.linalg.norm(a + b)
    step = np.radians(3 * 6.15 / 3600)
    out_dir = (mid - c) / np.linalg.norm(mid - c)
    ra, dec = xyz_to_radec(np.array([mid + step * out_dir, mid - step * out_dir]))
    probe = make_catalog(ra, dec, name=["outside", "inside"])
    on_image = lambda p: {  # noqa: E731
        probe.name[s] for s in p.pairs["source_index"][p.pairs["image_id"].map(
            dict(zip(p.images["image_id"], p.images["relpath"], strict=True))) == img["relpath"]]}
    assert on_image(make_plan(probe, str(sim_archive.root), margin_px=0)) == {"inside"}
    assert on_image(make_plan(probe, str(sim_archive.root), margin_px=5)) == {"inside", "outside"}


def test_filters_over_tap_match_local(polar_archive):
    cat = read_catalog(polar_archive.catalog)
    local = make_plan(cat, str(polar_archive.root), margin_px=0)
    det = int(local.images["detector"].mode()[0])
    dets = {det, BANDS[det].partner}
    t0, t1 = np.quantile(local.images["mjd"][local.images["detector"].isin(dets)], [0.0, 0.6])
    with serve_archive(polar_archive.root) as srv:
        for kw in (dict(bands=[det, f"D{BANDS[det].partner}"], time_range=(t0, t1)),
                   dict(collections=["spherex_qr2_deep"], releases=["qr2"]), dict(releases=["qr3"])):
            tap = make_plan(cat, srv.url, margin_px=0, **kw)
            loc = make_plan(cat, str(polar_archive.root), margin_px=0, **kw)
            assert triples(tap, cat.name) == triples(loc, cat.name), kw
            if "bands" in kw:
                assert set(tap.images["detector"]) <= dets and len(tap.images)
                assert ((tap.images["mjd_end"] >= t0) & (tap.images["mjd_start"] <= t1)).all()
                assert len(tap.images) < len(local.images[local.images["detector"].isin(dets)])
            elif "collections" in kw:
                assert len(tap.images) == len(local.images)
            else:
                assert tap.images.empty and tap.pairs.empty
    # the deep field has nothing in the wide collection (client-side filter, no server needed): refused, naming
    # the collections there are, rather than an empty plan
    with pytest.raises(ConfigError, match=r"--collection spherex_qr2 matches none of the \d+ images .*"
                                          r"\(their collections: spherex_qr2_deep\)"):
        make_plan(cat, str(polar_archive.root), collections=["spherex_qr2"])


def test_rerun_reuses_plan_and_query_cache(sim_archive, tmp_path):
    cat = read_catalog(sim_archive.catalog)
    with serve_archive(sim_archive.root) as srv:
        first = make_plan(cat, srv.url, run_dir=tmp_path)
        n = tap_requests(srv)
        assert n >= 1 and (tmp_path / "plan" / "images.parquet").exists()
        again = make_plan(cat, srv.url, run_dir=tmp_path)
        assert tap_requests(srv) == n
        pd.testing.assert_frame_equal(again.images, first.images)
        pd.testing.assert_frame_equal(again.pairs, first.pairs)
        # other filters: a new plan, but it is built from the cached query results when they apply
        (tmp_path / "plan" / "plan.json").unlink()
        rebuilt = make_plan(cat, srv.url, run_dir=tmp_path)
        assert tap_requests(srv) == n
        pd.testing.assert_frame_equal(rebuilt.pairs, first.pairs)
        make_plan(cat, srv.url, run_dir=tmp_path, bands=[3])
        assert tap_requests(srv) > n


def test_async_mode_and_tap_faults_are_retried(sim_archive):
    cat = read_catalog(sim_archive.catalog)
    expected = truth_triples(sim_archive)
    with serve_archive(sim_archive.root) as srv:
        assert triples(make_plan(cat, srv.url, margin_px=0, tap_mode="async"), cat.name) == expected
    faults = {"http503": 0.5, "retry_after": 0, "include_tap": True}
    with serve_archive(sim_archive.root, faults=faults, seed=3) as srv:
        client = TapClient(srv.url + "/TAP", retry=RetryPolicy(backoff_s=0.01, max_attempts=10))
        results = client.query_many([point_query(r, d) for r, d in zip(cat.ra[:6], cat.dec[:6], strict=True)])
        assert all(isinstance(r, pd.DataFrame) for r in results) and client.failures
        assert any("503" in f for f in client.failures)


def test_row_limit_splits_in_time_or_says_what_to_do(sim_archive):
    cat = read_catalog(sim_archive.catalog)
    one = make_catalog(cat.ra[:1], cat.dec[:1], name=cat.name[:1])
    span = (60798.0, 60812.0)  # the survey of the test archive (11 rows at this position, 5 distinct times)
    with serve_archive(sim_archive.root) as srv:
        full = make_plan(one, srv.url, time_range=span)
        n = tap_requests(srv)
        split = make_plan(one, srv.url, time_range=span, maxrec=7)
        assert tap_requests(srv) - n > 3  # the window was halved until every query fitted
        pd.testing.assert_frame_equal(split.images.drop(columns="url"), full.images.drop(columns="url"))
        pd.testing.assert_frame_equal(split.pairs, full.pairs)
        # two images of one exposure pair share their times: a limit of 1 cannot be met
        with pytest.raises(TapOverflow, match="narrow the plan"):
            make_plan(one, srv.url, time_range=(60798.415, 60798.4151), maxrec=1)


def test_wide_catalog_is_several_concurrent_queries(sim_archive):
    cat = read_catalog(sim_archive.catalog)
    rng = np.random.default_rng(5)
    far_ra = (cat.ra.mean() + rng.uniform(-40, 40, 6)) % 360
    far_dec = np.clip(cat.dec.mean() + rng.uniform(-20, 20, 6), -89, 89)
    wide = make_catalog(np.r_[cat.ra, far_ra], np.r_[cat.dec, far_dec],
                        name=np.r_[cat.name, [f"far{i}" for i in range(6)]])
    local = make_plan(wide, str(sim_archive.root), margin_px=0)
    with serve_archive(sim_archive.root) as srv:
        tap = make_plan(wide, srv.url, margin_px=0, max_concurrency=4)
        assert tap.meta["queries"] == tap_requests(srv) > 3
    pd.testing.assert_frame_equal(tap.pairs, local.pairs)
    assert triples(tap, wide.name) == truth_triples(sim_archive)


def test_no_source_covered_gives_empty_plan(sim_archive):
    far = make_catalog([20.0], [-30.0], name=["far"])
    plan = make_plan(far, resolve_archive(str(sim_archive.root)))
    assert plan.images.empty and plan.pairs.empty and "url" in plan.images.columns


def test_service_without_the_size_column_is_asked_again(sim_archive, monkeypatch):
    from spxbatch.plan import tap

    cat = read_catalog(sim_archive.catalog)
    expected = make_plan(cat, str(sim_archive.root))
    monkeypatch.setattr(tap, "SELECT", tuple(c.replace("a.contentlength", "a.nosuchsize") for c in tap.SELECT))
    monkeypatch.setattr(tap, "OPTIONAL", ("a.nosuchsize",))
    with serve_archive(sim_archive.root) as srv:
        plan = make_plan(cat, srv.url)
        assert tap_requests(srv) == 2  # rejected once, then answered
    assert plan.images["size_bytes"].isna().all()
    pd.testing.assert_frame_equal(plan.pairs, expected.pairs)
