"""The common ground of the report's figures: page size, colours, PNG/SVG embedding."""

from __future__ import annotations

import base64
import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from petbind.io.files import read_picture

#: Colours of kinetic models (stable across figures: a model keeps its colour).
MODEL_COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


#: Pixels per inch of embedded PNGs: readable on screen, small on disk.
DPI = 96


def new_figure(width_in: float, height_in: float) -> Figure:
    """A figure on the Agg canvas, without pyplot (inches; :data:`DPI`)."""
    # Fixed margins instead of constrained layout: a report draws dozens of
    # figures and the layout solver would double their cost.
    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def grid_shape(n: int, max_cols: int) -> tuple[int, int]:
    """(rows, columns) of a grid of ``n`` panels at most ``max_cols`` wide."""
    cols = max(1, min(n, max_cols))
    rows = max(1, int(np.ceil(n / cols)))
    return rows, cols


def figure_to_data_uri(fig: Figure, fmt: str = "png", dpi: int | None = None,
                       colors: int | None = 64) -> str:
    """Render ``fig`` into a base64 ``data:`` URI (PNG or SVG) and release it.

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
    buf = io.BytesIO()
    if fmt == "png" and colors:
        # the quantised PNG straight from the canvas's pixels: the same pixels as
        # writing a PNG and reading it back, without encoding and decoding it
        # (a figure of 128 panels is 30 MB of RGBA)
        fig.savefig(buf, format="rgba", dpi=d)
        size = (int(fig.get_figwidth() * d), int(fig.get_figheight() * d))
    else:
        meta = {"Software": None} if fmt == "png" else {"Date": None}
        fig.savefig(buf, format=fmt, dpi=d, metadata=meta)
    for ax in fig.axes:  # released without Axes.clear(), which rebuilds every tick
        fig.delaxes(ax)
    fig.clear()
    if fmt == "png" and colors:
        from PIL import Image

        raw = buf.getbuffer()  # no copy of the pixels
        if raw.nbytes != 4 * size[0] * size[1]:
            raise RuntimeError(f"the canvas gave {raw.nbytes} bytes for {size} pixels")
        img = Image.frombuffer("RGBA", size, raw, "raw", "RGBA", 0, 1).convert("RGB")
        del raw, buf
        out = io.BytesIO()
        img.quantize(colors=colors, method=Image.Quantize.FASTOCTREE).save(
            out, format="PNG", optimize=True)
        data = out.getvalue()
    else:
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
