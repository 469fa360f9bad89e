"""The common ground of the report's figures: page size, colours, PNG/SVG embedding."""

from __future__ import annotations

import base64
import contextlib
import gc
import io
import threading
from collections.abc import Hashable, Iterator
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from petbind.io.files import read_picture

#: Colours of kinetic models (stable across figures: a model keeps its colour).
MODEL_COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


#: Pixels per inch of embedded PNGs: readable on screen, small on disk.
DPI = 96

#: A PNG of at least this many pixels (a TAC or map grid part: about 2 M; a fit figure:
#: 0.25 M) has its renderer freed before it is quantised (:func:`figure_to_data_uri`).
COLLECT_PIXELS = 2**20

#: Figures kept for refilling per thread inside :func:`reusing` (one per layout): a
#: report's scans come subject by subject, each with its tracers' fit figures (one layout
#: a tracer), so up to four tracers refill without evicting each other.
REUSE_MAX = 4

_REUSE = threading.local()


@contextlib.contextmanager
def reusing() -> Iterator[None]:
    """Within this block (in this thread), drawn figures are refilled instead of rebuilt.

    A builder that can refill a figure of its own (:func:`petbind.report.figures.fit_figure`,
    one per scan) marks it with its layout (:func:`mark_reusable`);
    :func:`figure_to_data_uri` then keeps it after drawing it instead of releasing
    it, and the builder's next call with the same layout takes it back
    (:func:`take_reusable`) and only sets its data, limits and titles. Creating the
    axes and their ticks is about half of a small-multiples figure's cost
    (matplotlib makes every tick and label anew in a new figure); a refilled figure
    reuses them, and draws the same pixels as a new one (tested). A figure is taken
    by one builder call at a time, so two figures built before either is drawn are
    never the same object. On leaving the block the kept figures are released;
    outside it nothing is kept. Nested blocks share the outer one's figures.
    """
    outer = getattr(_REUSE, "pool", None)
    if outer is None:
        _REUSE.pool = {}
    try:
        yield
    finally:
        if outer is None:
            pool, _REUSE.pool = _REUSE.pool, None
            for fig in pool.values():
                _release(fig)


def mark_reusable(fig: Figure, layout: Hashable) -> Figure:
    """Mark ``fig`` as refillable by its builder for figures of ``layout``; return it."""
    fig._petbind_layout = layout  # type: ignore[attr-defined]
    return fig


def take_reusable(layout: Hashable) -> Figure | None:
    """A drawn figure of ``layout`` kept in this thread's :func:`reusing` block, or None
    (the caller owns it until it is drawn again)."""
    pool = getattr(_REUSE, "pool", None)
    return None if pool is None else pool.pop(layout, None)


def _keep(fig: Figure, pixels: int) -> bool:
    """Keep a drawn, refillable ``fig`` for its builder's next call (inside :func:`reusing`);
    False when it is to be released: outside the block, not refillable, or large (its
    renderer's pixels are freed at once, :data:`COLLECT_PIXELS`)."""
    pool = getattr(_REUSE, "pool", None)
    layout = getattr(fig, "_petbind_layout", None)
    if pool is None or layout is None or pixels >= COLLECT_PIXELS:
        return False
    stale = pool.pop(layout, None)
    if stale is not None and stale is not fig:
        _release(stale)
    pool[layout] = fig
    while len(pool) > REUSE_MAX:
        _release(pool.pop(next(iter(pool))))
    return True


def new_figure(width_in: float, height_in: float) -> Figure:
    """A figure on the Agg canvas, without pyplot (inches; :data:`DPI`)."""
    # Fixed margins instead of constrained layout: a report draws dozens of
    # figures and the layout solver would double their cost.
    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def fix_empty_axis_labels(fig: Figure) -> Figure:
    """Stop matplotlib placing the axis labels of ``fig`` that are empty.

    At every draw matplotlib measures each tick label of an axis to put the
    axis's label beside them, also when the label is empty (nothing is drawn).
    Small multiples label only their outer panels, so this was a sixth of a fit
    figure's drawing (issue 18). Call it once the labels are set; the pixels do
    not change (tests compare with matplotlib's own placement).
    """
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if not axis.get_label_text():
                axis.set_label_coords(0.5, 0.5)
    return fig


def grid_shape(n: int, max_cols: int) -> tuple[int, int]:
    """(rows, columns) of a grid of ``n`` panels at most ``max_cols`` wide."""
    cols = max(1, min(n, max_cols))
    rows = max(1, int(np.ceil(n / cols)))
    return rows, cols


class _RGBSink(io.RawIOBase):
    """A file for ``savefig(format="rgba")`` that keeps the pixels as an RGB image.

    The Agg canvas writes its whole RGBA buffer in one ``write``; it is
    converted to RGB there, without a copy of the RGBA bytes in a ``BytesIO``.
    """

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size
        self._image: Any = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        from PIL import Image

        raw = memoryview(data)
        if self._image is not None or raw.nbytes != 4 * self.size[0] * self.size[1]:
            raise RuntimeError(f"the canvas gave {raw.nbytes} bytes for {self.size} pixels")
        self._image = Image.frombuffer("RGBA", self.size, raw, "raw", "RGBA", 0, 1).convert("RGB")
        return raw.nbytes

    def take(self) -> Any:
        """The RGB image (``PIL.Image.Image``); the sink lets go of it."""
        image, self._image = self._image, None
        if image is None:
            raise RuntimeError("the canvas wrote no pixels")
        return image


def _release(fig: Figure, collect: bool = False) -> None:
    """Let go of what a drawn figure holds: its axes and artists, and its renderer
    (a new, empty Agg canvas replaces the drawn one).

    The drawn text artists keep the renderer, and they are freed by the garbage
    collector (they refer to each other), not when the figure lets go of them:
    ``collect`` runs it, so that the renderer's pixels (5 bytes a pixel) are freed
    now (about 50 ms).
    """
    for ax in fig.axes:  # released without Axes.clear(), which rebuilds every tick
        fig.delaxes(ax)
    ax = None  # the loop's last axes: not kept alive through the collection
    fig.clear()
    FigureCanvasAgg(fig)
    if collect:
        gc.collect()


def figure_to_data_uri(fig: Figure, fmt: str = "png", dpi: int | None = None,
                       colors: int | None = 64) -> str:
    """Render ``fig`` into a base64 ``data:`` URI (PNG or SVG) and release it.

    Inside :func:`reusing`, a small PNG figure its builder marked refillable is kept
    for the builder's next call instead of being released.

    Parameters
    ----------
    fig : Figure
        A figure made by one of the builders here.
    fmt : {"png", "svg"}
        PNG for plots with many points or images, SVG for small line plots.
    dpi : int, optional
        Resolution of a PNG (default :data:`DPI`).
    colors : int or None
        Quantise a PNG to this many palette colours (about 4 times smaller for
        line plots, visually the same); None keeps full RGBA.

    Returns
    -------
    str
        ``data:image/png;base64,...`` or ``data:image/svg+xml;base64,...``.
    """
    from petbind.figtext import literal_text

    literal_text(fig)  # region names shown as written, never as mathtext
    d = dpi or DPI
    if fmt == "png" and colors:
        # the quantised PNG straight from the canvas's pixels: the same pixels as
        # writing a PNG and reading it back, without encoding and decoding it
        # (a figure of 128 panels is 30 MB of RGBA). The renderer's buffer goes
        # straight into an RGB image (no copy of the RGBA bytes), and a large
        # figure's renderer is freed before quantising, which takes 9 bytes a pixel
        # (issue 18: a part of the TAC grid, 2.1 M pixels, raised a worker's RSS by
        # 40 MiB, now 30; the page's bytes are the same)
        size = (int(fig.get_figwidth() * d), int(fig.get_figheight() * d))
        sink = _RGBSink(size)
        fig.savefig(sink, format="rgba", dpi=d)
        if not _keep(fig, size[0] * size[1]):
            _release(fig, collect=size[0] * size[1] >= COLLECT_PIXELS)
        from PIL import Image

        out = io.BytesIO()
        sink.take().quantize(colors=colors, method=Image.Quantize.FASTOCTREE).save(
            out, format="PNG", optimize=True)
        data = out.getvalue()
    else:
        buf = io.BytesIO()
        meta = {"Software": None} if fmt == "png" else {"Date": None}
        fig.savefig(buf, format=fmt, dpi=d, metadata=meta)
        _release(fig)
        data = buf.getvalue()
    mime = "image/svg+xml" if fmt == "svg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def png_file_to_data_uri(path: str | bytes | io.BufferedIOBase, max_width: int = 600,
                         colors: int | None = 64) -> str:
    """Embed a PNG file (e.g. a preprocessing QC figure) as a small ``data:`` URI.

    Parameters
    ----------
    path : path or file-like
        The PNG to embed.
    max_width : int
        Images wider than this many pixels are shrunk (Lanczos, aspect kept).
    colors : int or None
        Quantise to this many palette colours (see :func:`figure_to_data_uri`);
        None keeps full RGB.

    Returns
    -------
    str
        ``data:image/png;base64,...``.

    Raises
    ------
    OSError
        When the file cannot be read or is not an image (PIL's errors).
    """
    from PIL import Image

    img = read_picture(path)  # RGB
    if img.width > max_width:
        img = img.resize((max_width, max(1, round(img.height * max_width / img.width))),
                         Image.Resampling.LANCZOS)
    if colors:
        img = img.quantize(colors=colors, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return f"data:image/png;base64,{base64.b64encode(out.getvalue()).decode('ascii')}"
