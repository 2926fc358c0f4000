"""Pixel sets around many sources (boxes, rings), chunking, and exact box sums, against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from spxbatch.photometry.gather import CHUNK_ELEMENTS, Boxes, chunks, chunks_of, exact_box_sums, ring_size


def test_box_pixels_and_edges():
    shape = (5, 7)
    image = np.arange(35.0).reshape(shape)
    b = Boxes.around(np.array([3, 0]), np.array([2, 4]), 1, shape)
    assert b.flat.shape == (2, 9)
    # an interior box: every pixel inside, values in row-major order of the offsets
    assert b.inside[0].all()
    np.testing.assert_array_equal(b.take(image)[0], image[1:4, 2:5].ravel())
    # a corner box: 4 of its 9 pixels are on the image; the flat indices stay valid (clipped)
    assert b.inside[1].sum() == 4
    assert b.flat.min() >= 0 and b.flat.max() < image.size
    np.testing.assert_array_equal(np.sort(b.take(image)[1][b.inside[1]]), [21.0, 22.0, 28.0, 29.0])


def test_ring_holds_every_pixel_an_annulus_can_reach():
    rng = np.random.default_rng(0)
    r_lo, r_hi = 2.3, 4.1
    b = Boxes.ring(np.array([10]), np.array([10]), r_lo, r_hi, (21, 21))
    offsets = set(zip(b.ox.tolist(), b.oy.tolist(), strict=True))
    for _ in range(200):
        px, py = rng.uniform(-0.5, 0.5, 2)  # the source anywhere in its nearest pixel
        oy, ox = np.mgrid[-6:7, -6:7]
        d = np.hypot(ox - px, oy - py)
        need = set(zip(ox[(d >= r_lo) & (d <= r_hi)].tolist(), oy[(d >= r_lo) & (d <= r_hi)].tolist(), strict=True))
        assert need <= offsets
    assert ring_size(r_hi) >= b.ox.size  # the chunking bound holds


def test_centre_distance_is_to_the_exact_position():
    b = Boxes.around(np.array([4]), np.array([6]), 1, (10, 10))
    d = b.centre_distance(np.array([4.25]), np.array([5.75]))
    oy, ox = np.mgrid[-1:2, -1:2]
    np.testing.assert_allclose(d[0], np.hypot(4 + ox.ravel() - 4.25, 6 + oy.ravel() - 5.75), rtol=1e-6)


def test_empty_pixel_set_has_nothing_inside():
    b = Boxes.from_offsets(np.array([1, 2]), np.array([1, 2]), np.array([], dtype=int), np.array([], dtype=int),
                           (4, 4))
    assert b.inside.shape == (2, 0) and b.take(np.zeros((4, 4))).shape == (2, 0)


def test_chunks_cover_the_range_once():
    assert [(s.start, s.stop) for s in chunks(7, 3)] == [(0, 3), (3, 6), (6, 7)]
    assert list(chunks(0, 3)) == []
    sizes = [s.stop - s.start for s in chunks_of(10, CHUNK_ELEMENTS // 4)]
    assert sizes == [4, 4, 2]
    assert [s.stop - s.start for s in chunks_of(3, 10 * CHUNK_ELEMENTS)] == [1, 1, 1]  # at least one a chunk


@pytest.mark.parametrize("half", [0, 2, 5])
def test_exact_box_sums_equal_brute_force_with_clipping(half):
    rng = np.random.default_rng(half)
    values = rng.integers(-2**40, 2**40, (23, 31))
    ix = np.concatenate([rng.integers(0, 31, 40), [0, 30]])
    iy = np.concatenate([rng.integers(0, 23, 40), [22, 0]])
    got = exact_box_sums(values, ix, iy, half)
    for i in range(ix.size):
        box = values[max(iy[i] - half, 0):iy[i] + half + 1, max(ix[i] - half, 0):ix[i] + half + 1]
        assert got[i] == box.sum()
