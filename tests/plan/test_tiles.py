"""Query tiles without a server: every source covered once, merging, and every ADQL form the plan sends."""

from __future__ import annotations

import numpy as np
import pytest

from spxbatch.plan.select import plan_filters
from spxbatch.plan.tap import check_adql, point_query
from spxbatch.plan.tiles import make_tiles, tile_query
from spxbatch.sky import unit_vectors


def _angle_deg(ra1, dec1, ra2, dec2):
    a, b = np.broadcast_arrays(unit_vectors(ra1, dec1), unit_vectors(ra2, dec2))
    return np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), np.sum(a * b, -1)))


def test_tiles_cover_every_source_once():
    rng = np.random.default_rng(1)
    # a dense field across RA=0, a polar cap, and sparse sources over the sky
    ra = np.concatenate([rng.uniform(-1, 1, 3000) % 360, rng.uniform(0, 360, 500), rng.uniform(0, 360, 200)])
    dec = np.concatenate([rng.uniform(-1, 1, 3000), rng.uniform(88.5, 90, 500), rng.uniform(-60, 60, 200)])
    tiles = make_tiles(ra, dec)
    assert sum(t.count for t in tiles) == len(ra)
    # every source lies inside at least one tile circle
    tra = np.array([t.ra for t in tiles])
    tdec = np.array([t.dec for t in tiles])
    trad = np.array([t.radius_deg for t in tiles])
    inside = _angle_deg(ra[:, None], dec[:, None], tra[None, :], tdec[None, :]) <= trad[None, :] + 1e-6
    assert inside.any(axis=1).all()
    assert max(trad) <= 6.0
    # the dense 2x2 deg field and the polar cap are a handful of queries, not thousands
    dense = [t for t in tiles if abs(t.dec) < 2 and (t.ra < 3 or t.ra > 357)]
    polar = [t for t in tiles if t.dec > 87]
    assert len(dense) <= 4 and len(polar) <= 4
    assert len(tiles) < 250


def test_far_apart_sources_are_not_merged_and_one_source_has_radius_zero():
    tiles = make_tiles(np.array([10.0, 100.0, 200.0]), np.array([0.0, 30.0, -45.0]))
    assert len(tiles) == 3 and all(t.radius_deg < 1e-9 and t.count == 1 for t in tiles)
    assert make_tiles(np.array([]), np.array([])) == []


def test_every_query_form_passes_the_adql_grammar():
    """Each form the plan sends (the ANTLR parser costs ~1 s per query, so one of each form)."""
    filters = plan_filters([1, "D3"], (60800.5, 60900.25), None, ["qr2", "qr3"])
    tile = make_tiles(np.array([359.9, 0.1]), np.array([-89.9, -89.8]))[0]
    check_adql(tile_query(tile, 1e-3, filters))  # every filter, RA wrap, south pole
    check_adql(tile_query(tile, 0.0, plan_filters(None, None, None, None)))  # no filter
    check_adql(point_query(0.0, 90.0, bands=[6], releases=["qr2"]))  # SPXQuery's per-source form
    with pytest.raises(ValueError, match="not valid ADQL"):
        check_adql("SELECT FROM WHERE")
