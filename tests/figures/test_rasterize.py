"""The batch renderer's parts: PNG encoding, the bounded caches, text drawn from the cache against Agg."""

import numpy as np
import pytest
from image_compare import block_means
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from spxbatch.figures.rasterize import FrameWriter, LRUCache, PNGWriter, TextCachingCanvas, ink


def test_png_round_trips_through_pillow(tmp_path):
    rng = np.random.default_rng(5)
    writer = PNGWriter()
    for shape in ((37, 53, 4), (37, 53, 4), (8, 1, 4)):  # the row buffer is reused, then resized
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        writer.write(tmp_path / "x.png", image)
        decoded = Image.open(tmp_path / "x.png")
        assert decoded.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(decoded), image)


def test_lru_cache_forgets_the_least_recently_used():
    cache = LRUCache(size=2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # now b is the oldest
    cache.put("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3
    assert cache.get("b", "gone") == "gone"


def test_ink_crops_to_what_was_drawn():
    canvas = np.zeros((10, 20, 4), dtype=np.uint8)
    assert ink(canvas) is None
    canvas[2:4, 5:9] = 255
    image, left, bottom = ink(canvas)
    assert image.shape == (2, 4, 4) and left == 5 and bottom == 10 - 4


def _text_figure(canvas_class):
    fig = Figure(figsize=(4, 3), dpi=100)
    canvas = canvas_class(fig)
    fig.text(0.1, 0.8, "Flux density (µJy) 123.456", color="tab:red")
    fig.text(0.1, 0.6, "Flux density (µJy) 123.456", color="k")
    fig.text(0.2, 0.1, "rotated label", rotation=90)
    fig.text(0.6, 0.2, "tilted", rotation=30, fontsize=14)
    fig.text(0.5, 0.4, r"$10^{3}$ mathtext")
    ax = fig.add_axes((0.55, 0.55, 0.3, 0.3))
    ax.set_axis_off()
    ax.text(0.6, 0.5, "clipped by its axes", clip_on=True, alpha=0.6)
    return fig, canvas




def test_cached_text_looks_like_agg_text():
    """Each text drawn from its cached bitmap lands where Agg draws it (to the whole pixel), in its own
    colour and angle; drawing twice (from the cache) gives the same pixels."""
    _, agg = _text_figure(FigureCanvasAgg)
    _, cached = _text_figure(TextCachingCanvas)
    agg.draw()
    cached.draw()
    first = np.asarray(cached.buffer_rgba()).copy()
    assert len(cached.get_renderer()._texts) == 6  # one bitmap per distinct (text, colour, angle, size)
    cached.draw()
    np.testing.assert_array_equal(np.asarray(cached.buffer_rgba()), first)
    reference = np.asarray(agg.buffer_rgba())
    assert np.abs(block_means(first) - block_means(reference)).max() < 64
    red = (first[..., 0] > 150) & (first[..., 1] < 120)
    assert red[: first.shape[0] // 2].sum() > 50 and red[first.shape[0] // 2:].sum() == 0
    inked = first[..., :3].min(axis=-1) < 200
    assert inked[45:135, 342:].sum() == 0  # the clipped text stops at its axes' right edge (x = 0.85 * 400)


def _line_figure(visible: bool):
    fig = Figure(figsize=(4, 3), dpi=100)
    ax = fig.add_subplot()
    ax.set_title("static")
    (line,) = ax.plot([0, 1], [0, 1], color="k")
    line.set_visible(visible)
    return fig, ax, line


@pytest.mark.parametrize("visible", [True, False])
def test_frame_writer_redraws_only_what_changes(visible, tmp_path):
    fig, ax, line = _line_figure(visible)
    writer = FrameWriter(fig, [line, ax.yaxis], {ax.yaxis: lambda: ax.get_ylim()})
    frames = []
    for top in (1.0, 2.0, 1.0):
        ax.set_ylim(0, top)
        writer.save(tmp_path / "f.png")
        frames.append(np.asarray(Image.open(tmp_path / "f.png")).copy())
        ref_fig, ref_ax, _ = _line_figure(visible)
        ref_ax.set_ylim(0, top)
        reference = FigureCanvasAgg(ref_fig)
        reference.draw()
        assert np.abs(block_means(frames[-1]) - block_means(np.asarray(reference.buffer_rgba()))).max() < 64
    np.testing.assert_array_equal(frames[0], frames[2])  # the axis image comes back from the cache
    assert np.abs(block_means(frames[0]) - block_means(frames[1])).max() > 100
    assert line.get_visible() == visible  # hidden for the background only
