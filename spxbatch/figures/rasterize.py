"""PNG frames of one figure redrawn many times (batch plotting), at a fraction of a full draw's cost.

Three caches, each paid once per worker process: the parts of the figure that never change are rendered
once and restored; artists whose look is a function of a few values (an axis: its scale and limits) are
rasterised once per distinct value and composited; each distinct text is rasterised once. PNGs are
deflated by ISA-L, without a per-row filter search.

Why: a full matplotlib draw of the two-panel source figure costs ~100 ms here (3.11 rasterises text glyph
by glyph and lays out every tick label several times) and Pillow's PNG encoder ~30 ms more (zlib and its
adaptive filters), while batch plotting must keep up with the run that made the cube
(benchmarks/plot_speed.py).
"""

from __future__ import annotations

import math
import struct
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
from isal import isal_zlib
from matplotlib.artist import Artist
from matplotlib.backend_bases import GraphicsContextBase
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure

#: ISA-L deflate level of the PNGs (0-3): level 1 deflates a 1000x800 RGBA figure in ~1 ms, ten times
#: faster than zlib's fastest level, for ~5 % more bytes.
PNG_COMPRESSION = 1

#: Entries kept by each cache: texts and axis images repeat across sources, titles never do.
CACHE_ENTRIES = 2048

#: An RGBA bitmap with rows bottom first (as `draw_image` takes them) and the canvas position of its
#: bottom-left corner in pixels from the canvas's bottom-left; None for a drawing with no ink.
Bitmap = tuple[np.ndarray, int, int] | None


class LRUCache(OrderedDict):
    """A dict that forgets its least recently used entries beyond `size`."""

    def __init__(self, size: int = CACHE_ENTRIES):
        super().__init__()
        self.size = size

    def get(self, key, default=None):
        if key not in self:
            return default
        self.move_to_end(key)
        return self[key]

    def put(self, key, value) -> None:
        """Store `value`, dropping the oldest entry when full."""
        self[key] = value
        if len(self) > self.size:
            self.popitem(last=False)


def ink(rgba: np.ndarray) -> Bitmap:
    """The part of a transparent (height, width, 4) canvas that was drawn on, as a `Bitmap`."""
    drawn = rgba[..., 3] > 0
    rows, cols = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
    if rows.size == 0:
        return None
    crop = rgba[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return np.ascontiguousarray(crop[::-1]), int(cols[0]), rgba.shape[0] - 1 - int(rows[-1])


def composite(renderer: RendererAgg, bitmap: Bitmap, dx: int = 0, dy: int = 0,
              clip_like: GraphicsContextBase | None = None) -> None:
    """Blend a `Bitmap` over the renderer's canvas, shifted by (dx, dy) pixels (y up), clipped as the
    graphics context `clip_like` is, if given (its alpha is already in the bitmap)."""
    if bitmap is not None:
        image, left, bottom = bitmap
        gc = renderer.new_gc()
        if clip_like is not None:
            gc.copy_properties(clip_like)
            gc.set_alpha(None)
        renderer.draw_image(gc, left + dx, bottom + dy, image)
        gc.restore()


class TextCachingRenderer(RendererAgg):
    """An Agg renderer that rasterises each distinct (text, font, angle, colour) once, then composites the
    cached bitmap. Text lands on the nearest whole pixel (at most half a pixel from where Agg puts it)."""

    def __init__(self, width: int, height: int, dpi: float):
        super().__init__(width, height, dpi)
        self._texts = LRUCache()

    def draw_text(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):
        features = getattr(mtext, "get_fontfeatures", lambda: None)()
        language = getattr(mtext, "get_language", lambda: None)()
        key = (s, prop, angle, ismath, gc.get_rgb(), gc.get_alpha(), gc.get_antialiased(),
               None if features is None else tuple(features), language)
        if key not in self._texts:
            self._texts.put((s, prop.copy(), *key[2:]), self._rasterise(gc, s, prop, angle, ismath, mtext))
        # Agg's text y runs down from the top of the canvas; a Bitmap's runs up from the bottom
        composite(self, self._texts.get(key), round(x), self.height - round(y), clip_like=gc)

    def _rasterise(self, gc, s, prop, angle, ismath, mtext) -> Bitmap:
        """The text drawn by Agg on a transparent scratch canvas around its anchor, as a Bitmap placed
        relative to the anchor."""
        if mtext is not None:  # its extent was just laid out, and matplotlib keeps the metrics
            box = mtext.get_window_extent(self)
            width, height = box.width, box.height
        else:
            w, h, _ = self.get_text_width_height_descent(s, prop, ismath)
            cos, sin = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
            width, height = w * cos + h * sin, w * sin + h * cos
        # the rotated text box fits in every direction from the anchor (Agg's anchor is a corner of the box)
        half_w, half_h = math.ceil(width) + 4, math.ceil(height) + 4
        scratch = RendererAgg(2 * half_w, 2 * half_h, self.dpi)
        unclipped = scratch.new_gc()  # the clip region is the main canvas's: it applies when compositing
        unclipped.copy_properties(gc)
        unclipped.set_clip_rectangle(None)
        unclipped.set_clip_path(None)
        RendererAgg.draw_text(scratch, unclipped, half_w, half_h, s, prop, angle, ismath, mtext)
        unclipped.restore()
        bitmap = ink(np.asarray(scratch.buffer_rgba()))
        return None if bitmap is None else (bitmap[0], bitmap[1] - half_w, bitmap[2] - half_h)


class TextCachingCanvas(FigureCanvasAgg):
    """An Agg canvas drawing with a `TextCachingRenderer` (kept while the figure's size and dpi stay)."""

    def get_renderer(self) -> TextCachingRenderer:
        key = (*self.get_width_height(physical=True), self.figure.dpi)
        if self._lastKey != key:
            self.renderer = TextCachingRenderer(key[0], key[1], key[2])
            self._lastKey = key
        return self.renderer


class FrameWriter:
    """Writes PNG frames of `figure`, where only the `dynamic` artists change between frames.

    The rest is rendered once (on the first frame) and restored for every later one; the dynamic artists
    are drawn over it in the order given, which must be their drawing order (background first). Nothing
    static may overlap a dynamic artist. An artist in `keys` must look the same, relative to its axes,
    whenever its key function returns the same value (an axis: its scale and view limits): it is
    rasterised once per value, and artists of same-sized axes returning the same value share the image."""

    def __init__(self, figure: Figure, dynamic: Sequence[Artist],
                 keys: Mapping[Artist, Callable[[], Hashable]] | None = None):
        self.figure = figure
        self.canvas = TextCachingCanvas(figure)
        self.dynamic = list(dynamic)
        self.keys = dict(keys or {})
        self._images = LRUCache()
        self._png = PNGWriter()
        self._background = None

    def _render_background(self) -> None:
        shown = [a.get_visible() for a in self.dynamic]
        for artist in self.dynamic:
            artist.set_visible(False)
        self.canvas.draw()
        self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        for artist, visible in zip(self.dynamic, shown, strict=True):
            artist.set_visible(visible)

    @staticmethod
    def _frame_of(artist: Artist) -> tuple[int, int, int, int]:
        """Pixel origin and size of the axes an artist belongs to (the figure for others)."""
        box = artist.axes.bbox if artist.axes is not None else artist.figure.bbox
        return round(box.x0), round(box.y0), round(box.width), round(box.height)

    def _keyed_images(self, renderer: RendererAgg) -> dict[Artist, tuple[Bitmap, int, int]]:
        """The bitmap of each keyed artist in its current state with its axes origin, rasterising those not
        seen yet alone on a cleared canvas (before the background is restored for the frame)."""
        out = {}
        for artist, key_of in self.keys.items():
            x0, y0, width, height = self._frame_of(artist)
            key = (key_of(), artist.get_visible(), width, height)
            if key not in self._images:
                renderer.clear()
                artist.draw(renderer)
                bitmap = ink(np.asarray(self.canvas.buffer_rgba()))
                self._images.put(key, None if bitmap is None else (bitmap[0], bitmap[1] - x0, bitmap[2] - y0))
            out[artist] = (self._images.get(key), x0, y0)
        return out

    def frame(self) -> np.ndarray:
        """The figure as it is now: an (height, width, 4) RGBA uint8 view of the canvas, valid until the
        next frame."""
        if self._background is None:
            self._render_background()
        renderer = self.canvas.get_renderer()
        images = self._keyed_images(renderer)
        self.canvas.restore_region(self._background)
        for artist in self.dynamic:
            if artist in images:
                composite(renderer, *images[artist])
            else:
                artist.draw(renderer)
        return np.asarray(self.canvas.buffer_rgba())

    def save(self, path: str | Path) -> None:
        """Write the current frame as a PNG."""
        self._png.write(path, self.frame())


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC of type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", isal_zlib.crc32(kind + data))


class PNGWriter:
    """Writes (height, width, 4) uint8 images as 8-bit RGBA PNGs: every row unfiltered (filter type 0),
    deflated by ISA-L at `PNG_COMPRESSION`. Keeps its row buffer between images: a fresh 3 MB buffer
    costs more in page faults than deflating it."""

    def __init__(self):
        self._rows = np.empty((0, 0), dtype=np.uint8)

    def write(self, path: str | Path, rgba: np.ndarray) -> None:
        """Write `rgba` to `path`."""
        height, width, _ = rgba.shape
        if self._rows.shape != (height, 1 + 4 * width):
            self._rows = np.zeros((height, 1 + 4 * width), dtype=np.uint8)  # column 0: filter type 0
        self._rows[:, 1:] = rgba.reshape(height, 4 * width)
        header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA, deflate, no interlace
        data = isal_zlib.compress(memoryview(self._rows), PNG_COMPRESSION)
        with open(path, "wb") as fh:
            fh.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))
