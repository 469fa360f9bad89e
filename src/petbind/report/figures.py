"""Figure builders of the report: plain arrays in, matplotlib figures out.

Every builder takes numbers (times in **minutes**, activity in kBq/mL, BP_ND
dimensionless, % change in percent) and returns a
:class:`matplotlib.figure.Figure` made without pyplot (no global state, the
Agg canvas), so builders are safe to call from any thread and leak nothing.
:func:`figure_to_data_uri` turns a figure into an embeddable ``data:`` URI
and closes it.

Figures are small multiples sized for a page column; colour maps are
perceptually uniform (viridis / inferno for maps, a diverging map centred on
zero for t statistics).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from numpy.typing import ArrayLike, NDArray

from petbind.io.files import read_picture

#: Colours of kinetic models (stable across figures: a model keeps its colour).
MODEL_COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
#: Pixels per inch of embedded PNGs: readable on screen, small on disk.
DPI = 96


def _figure(width_in: float, height_in: float) -> Figure:
    # Fixed margins instead of constrained layout: a report draws dozens of
    # figures and the layout solver would double their cost.
    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _grid(n: int, max_cols: int) -> tuple[int, int]:
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
    buf = io.BytesIO()
    meta = {"Software": None} if fmt == "png" else {"Date": None}
    fig.savefig(buf, format=fmt, dpi=dpi or DPI, metadata=meta)
    fig.clear()
    data = buf.getvalue()
    if fmt == "png" and colors:
        from PIL import Image

        img = Image.open(io.BytesIO(data)).convert("RGB")
        out = io.BytesIO()
        img.quantize(colors=colors, method=Image.Quantize.FASTOCTREE).save(
            out, format="PNG", optimize=True)
        data = out.getvalue()
    mime = "image/svg+xml" if fmt == "svg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def tac_grid_figure(
    panels: Sequence[tuple[str, ArrayLike, ArrayLike]],
    regions: Sequence[str],
    *,
    reference: str | None = None,
    max_cols: int = 3,
) -> Figure:
    """Region time-activity curves of many scans, one panel per scan (small multiples).

    Parameters
    ----------
    panels : sequence of (title, t_mid_min, values)
        Per scan: its label, frame mid-times after injection (min, shape
        ``(n_frames,)``) and region activity (kBq/mL, decay-corrected, shape
        ``(n_regions, n_frames)`` in the order of ``regions``).
    regions : sequence of str
        Region names; a region keeps its colour in every panel.
    reference : str, optional
        The reference region, drawn black and thick.
    max_cols : int
        Panels per row (e.g. one per condition).

    Returns
    -------
    Figure
        Panels sharing the time axis, one legend for all.
    """
    rows, cols = _grid(len(panels), max_cols)
    width, height = 2.9 * cols + 1.6, 1.9 * rows + 0.5
    fig = _figure(width, height)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, gridspec_kw={
        "left": 0.55 / width, "right": 1 - 1.55 / width, "bottom": 0.45 / height,
        "top": 1 - 0.25 / height, "wspace": 0.22, "hspace": 0.32}).ravel()
    cmap = matplotlib.colormaps["tab10" if len(regions) <= 10 else "tab20"]
    handles: list = []
    for ax, (title, t, values) in zip(axes, panels, strict=False):
        y = np.atleast_2d(np.asarray(values, dtype=float))
        tt = np.asarray(t, dtype=float)
        handles = []
        for i, name in enumerate(regions):
            ref = name == reference
            (line,) = ax.plot(tt, y[i], color="black" if ref else cmap(i % cmap.N),
                              lw=1.8 if ref else 0.9, label=f"{name} (ref)" if ref else name)
            handles.append(line)
        ax.set_title(title, fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    for ax in axes[::cols]:
        ax.set_ylabel("kBq/mL", fontsize=7)
    for ax in axes[(rows - 1) * cols:]:
        ax.set_xlabel("min after injection", fontsize=7)
    fig.legend(handles, [h.get_label() for h in handles], fontsize=6, loc="upper right",
               frameon=False)
    return fig


def fit_figure(
    t_mid_min: ArrayLike,
    measured: Mapping[str, ArrayLike],
    fitted: Mapping[str, Mapping[str, ArrayLike]],
    *,
    title: str = "",
    max_cols: int = 6,
) -> Figure:
    """Measured curve, fitted curves and residuals per region (small multiples).

    Parameters
    ----------
    t_mid_min : array_like, shape (n_frames,)
        Frame mid-times after injection (min).
    measured : mapping region -> array (n_frames,)
        Measured region activity (kBq/mL).
    fitted : mapping model -> (mapping region -> array (n_frames,))
        Model predictions (frame averages, kBq/mL); NaN where a model does not
        use a frame.
    title : str
        Figure title (the scan).
    max_cols : int
        Regions per row.

    Returns
    -------
    Figure
        For each region a curve panel (dots: data; lines: models) above a
        residual panel (data - fit, kBq/mL) with a zero line.
    """
    t = np.asarray(t_mid_min, dtype=float)
    regions = list(measured)
    rows, cols = _grid(len(regions), max_cols)
    fig = _figure(1.9 * cols + 0.4, 2.3 * rows + 0.3)
    outer = fig.add_gridspec(rows, cols, left=0.6 / (1.9 * cols + 0.4), right=0.98,
                             bottom=0.35 / (2.3 * rows + 0.3), top=1 - 0.45 / (2.3 * rows + 0.3),
                             wspace=0.35, hspace=0.35)
    models = list(fitted)
    for k, region in enumerate(regions):
        inner = outer[k // cols, k % cols].subgridspec(2, 1, height_ratios=[2.2, 1], hspace=0)
        ax = fig.add_subplot(inner[0])
        axr = fig.add_subplot(inner[1], sharex=ax)
        y = np.asarray(measured[region], dtype=float)
        ax.plot(t, y, "o", color="0.25", ms=2.5, label="data")
        axr.axhline(0.0, color="0.5", lw=0.7)
        for m, model in enumerate(models):
            f = fitted[model].get(region)
            if f is None:
                continue
            f = np.asarray(f, dtype=float)
            c = MODEL_COLOURS[m % len(MODEL_COLOURS)]
            ax.plot(t, f, "-", color=c, lw=1.1, label=model)
            axr.plot(t, y - f, ".-", color=c, lw=0.6, ms=2)
        ax.set_title(region, fontsize=8, pad=2)
        # few ticks: tick labels are most of the drawing cost of small multiples
        ax.yaxis.set_major_locator(MaxNLocator(3))
        axr.yaxis.set_major_locator(MaxNLocator(2, symmetric=True))
        axr.xaxis.set_major_locator(MaxNLocator(3))
        ax.tick_params(labelsize=6, labelbottom=False, length=2, pad=1)
        axr.tick_params(labelsize=6, length=2, pad=1)
        if k % cols == 0:
            ax.set_ylabel("kBq/mL", fontsize=7)
            axr.set_ylabel("resid.", fontsize=7)
        if k // cols == rows - 1:
            axr.set_xlabel("min", fontsize=7)
        if k == 0:
            ax.legend(fontsize=6, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def _slice_index(volume: NDArray, mask: NDArray | None) -> tuple[int, int, int]:
    """Slices through the centre of mass of the mask (or of finite non-zero voxels)."""
    support = mask if mask is not None else (np.isfinite(volume) & (volume != 0))
    if not support.any():
        return tuple(s // 2 for s in volume.shape[:3])  # type: ignore[return-value]
    idx = np.argwhere(support)
    centre = np.round(idx.mean(axis=0)).astype(int)
    return int(centre[0]), int(centre[1]), int(centre[2])


def ortho_slices(
    volume: ArrayLike,
    *,
    zooms: Sequence[float] = (1.0, 1.0, 1.0),
    underlay: ArrayLike | None = None,
    cut: Sequence[int] | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "viridis",
    threshold: float | None = None,
    symmetric: bool = False,
    label: str = "",
    title: str = "",
) -> Figure:
    """Sagittal, coronal and axial slices of a 3-D map with a colour bar.

    Parameters
    ----------
    volume : array_like, shape (X, Y, Z)
        The map (e.g. BP_ND, a t statistic), voxel axes in RAS-like order.
    zooms : sequence of float
        Voxel sizes (mm) for the aspect ratio of each view.
    underlay : array_like, shape (X, Y, Z), optional
        Anatomy drawn in grey beneath the map.
    cut : sequence of 3 int, optional
        Voxel indices of the three slices; default the centre of the map's
        non-zero voxels.
    vmin, vmax : float, optional
        Colour range; default the 2nd-98th percentiles of the non-zero voxels
        (``symmetric``: +-98th percentile of the absolute value).
    cmap : str
        Matplotlib colour map.
    threshold : float, optional
        Voxels with ``|value| < threshold`` are transparent (shows the underlay).
    symmetric : bool
        Centre the colour range on zero (for t maps and % change).
    label : str
        Colour-bar label, with the unit.
    title : str
        Figure title.

    Returns
    -------
    Figure
        Three panels and a colour bar; the colour bar's range is the one used.
    """
    vol = np.asarray(volume, dtype=float)
    under = None if underlay is None else np.asarray(underlay, dtype=float)
    finite = np.isfinite(vol) & (vol != 0)
    i, j, k = cut if cut is not None else _slice_index(vol, finite if finite.any() else None)
    vals = vol[finite]
    if symmetric:
        top = float(np.percentile(np.abs(vals), 98)) if vals.size else 1.0
        vmin, vmax = (-top if vmin is None else vmin), (top if vmax is None else vmax)
    else:
        if vmin is None:
            vmin = float(np.percentile(vals, 2)) if vals.size else 0.0
        if vmax is None:
            vmax = float(np.percentile(vals, 98)) if vals.size else 1.0
    if not vmax > vmin:
        vmax = vmin + 1.0
    under_range = (0.0, 1.0)
    if under is not None and np.isfinite(under).any():
        under_range = (float(np.nanmin(under)), float(np.nanmax(under)) or 1.0)
    zx, zy, zz = (float(z) for z in zooms[:3])
    views = [
        (vol[i, :, :], None if under is None else under[i, :, :], zz / zy, f"x = {i}"),
        (vol[:, j, :], None if under is None else under[:, j, :], zz / zx, f"y = {j}"),
        (vol[:, :, k], None if under is None else under[:, :, k], zy / zx, f"z = {k}"),
    ]
    fig = _figure(7.2, 2.4)
    axes = fig.subplots(1, 3, gridspec_kw={"left": 0.01, "right": 0.86, "bottom": 0.02,
                                           "top": 0.84, "wspace": 0.04})
    image = None
    for ax, (sl, ul, aspect, name) in zip(axes, views, strict=True):
        show = np.array(sl, dtype=float)
        hidden = ~np.isfinite(show) | (show == 0)
        if threshold is not None:
            hidden |= np.abs(np.nan_to_num(show)) < threshold
        if ul is not None:
            ax.imshow(ul.T, origin="lower", cmap="gray", aspect=aspect, interpolation="nearest",
                      vmin=under_range[0], vmax=under_range[1])
        image = ax.imshow(np.ma.masked_array(show, hidden).T, origin="lower", cmap=cmap,
                          vmin=vmin, vmax=vmax, aspect=aspect, interpolation="nearest")
        ax.set_title(name, fontsize=7)
        ax.set_axis_off()
    bar = fig.colorbar(image, cax=fig.add_axes((0.88, 0.1, 0.02, 0.7)))
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def _montage(volume: NDArray, cut: Sequence[int]) -> NDArray:
    """Sagittal, coronal and axial slices side by side in one 2-D array (NaN padding).

    Slices are shown with the superior / anterior direction up, as in
    :func:`ortho_slices`; voxels are drawn square.
    """
    i, j, k = cut
    views = [volume[i, :, :].T, volume[:, j, :].T, volume[:, :, k].T]
    height = max(v.shape[0] for v in views)
    padded = [np.pad(v, ((0, height - v.shape[0]), (0, 1)), constant_values=np.nan)
              for v in views]
    return np.hstack(padded)[:, :-1]


def map_grid_figure(
    maps: Mapping[tuple[str, str], ArrayLike],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "viridis",
    label: str = "",
    title: str = "",
) -> Figure:
    """Parametric maps of many scans as orthogonal slices, one cell per scan, one colour bar.

    Parameters
    ----------
    maps : mapping (row label, column label) -> array (X, Y, Z)
        The maps (e.g. BP_ND of subject x condition), all on one grid.
    row_labels, col_labels : sequence of str
        Row (e.g. subjects) and column (e.g. conditions) order.
    vmin, vmax : float, optional
        Common colour range; default 0 and the 98th percentile of all maps.
    cmap, label, title : str
        Colour map, colour-bar label (with the unit) and figure title, as in
        :func:`ortho_slices`.

    Returns
    -------
    Figure
        Each cell shows the sagittal, coronal and axial slices through the
        centre of the maps' non-zero voxels, side by side (square voxels).
    """
    arrays = {key: np.asarray(v, dtype=float) for key, v in maps.items()}
    stack = np.stack(list(arrays.values()))
    support = np.any(np.isfinite(stack) & (stack != 0), axis=0)
    cut = _slice_index(stack[0], support if support.any() else None)
    vals = stack[np.isfinite(stack) & (stack != 0)]
    if vmin is None:
        vmin = 0.0
    if vmax is None:
        vmax = float(np.percentile(vals, 98)) if vals.size else 1.0
    if not vmax > vmin:
        vmax = vmin + 1.0
    rows, cols = len(row_labels), len(col_labels)
    sample = _montage(stack[0], cut)
    aspect = sample.shape[0] / sample.shape[1]
    cell_w = 3.2
    width, height = cell_w * cols + 1.5, cell_w * aspect * rows * 1.15 + 0.5
    fig = _figure(width, height)
    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw={
        "left": 0.5 / width, "right": 1 - 1.0 / width, "bottom": 0.1 / height,
        "top": 1 - 0.45 / height, "wspace": 0.04, "hspace": 0.15})
    image = None
    for r, row in enumerate(row_labels):
        for c, col in enumerate(col_labels):
            ax = axes[r, c]
            ax.set_axis_off()
            vol = arrays.get((row, col))
            if vol is None:
                continue
            shown = _montage(vol, cut)
            image = ax.imshow(np.ma.masked_invalid(np.where(shown == 0, np.nan, shown)),
                              origin="lower", cmap=cmap, vmin=vmin, vmax=vmax,
                              interpolation="nearest")
            ax.set_facecolor("black")
            if r == 0:
                ax.set_title(col, fontsize=8)
            if c == 0:
                ax.text(-0.03, 0.5, row, transform=ax.transAxes, rotation=90, fontsize=8,
                        ha="right", va="center")
    if image is not None:
        bar = fig.colorbar(image, cax=fig.add_axes((1 - 0.85 / width, 0.15, 0.12 / width, 0.7)))
        bar.set_label(label, fontsize=8)
        bar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(f"{title}  (slices x = {cut[0]}, y = {cut[1]}, z = {cut[2]})", fontsize=9)
    return fig


def paired_lines_figure(
    values: Mapping[str, Mapping[str, Mapping[str, float]]],
    conditions: Sequence[str],
    *,
    truth: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
    ylabel: str = "BP_ND",
    title: str = "",
    max_cols: int = 6,
) -> Figure:
    """Each subject's value across conditions as connected points, one panel per region.

    Parameters
    ----------
    values : mapping region -> subject -> condition -> value
        Estimates (e.g. BP_ND); missing conditions are gaps.
    conditions : sequence of str
        Conditions in x-axis order (baseline first).
    truth : same shape as ``values``, optional
        Simulated truth, drawn as dashed grey lines beside the estimates.
    ylabel : str
        Y-axis label with the unit.
    title : str
        Figure title (the tracer).
    max_cols : int
        Regions per row.

    Returns
    -------
    Figure
        Small multiples; subjects keep one colour across panels.
    """
    regions = list(values)
    subjects = sorted({s for r in regions for s in values[r]})
    colours = matplotlib.colormaps["tab10"]
    n_rows = int(np.ceil(len(regions) / max_cols))
    rows, cols = _grid(len(regions), int(np.ceil(len(regions) / max(n_rows, 1))))
    fig = _figure(1.75 * cols + 0.6, 1.9 * rows + 0.4)
    width, height = 1.75 * cols + 0.6, 1.9 * rows + 0.4
    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw={
        "left": 0.45 / width, "right": 1 - 0.75 / width, "bottom": 0.55 / height,
        "top": 1 - 0.4 / height, "wspace": 0.3, "hspace": 0.75}).ravel()
    x = np.arange(len(conditions))
    for ax, region in zip(axes, regions, strict=False):
        for n, subj in enumerate(subjects):
            c = colours(n % 10)
            if truth is not None and subj in truth.get(region, {}):
                tv = [truth[region][subj].get(cond, np.nan) for cond in conditions]
                ax.plot(x, tv, "--", color=c, lw=0.8, alpha=0.6)
            row = values[region].get(subj, {})
            y = [row.get(cond, np.nan) for cond in conditions]
            ax.plot(x, y, "o-", color=c, lw=1.2, ms=3.5, label=subj)
        ax.set_title(region, fontsize=8)
        ax.set_xticks(x, list(conditions), fontsize=6, rotation=30)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    for ax in axes[len(regions):]:
        ax.set_axis_off()
    axes[0].set_ylabel(ylabel, fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    if truth is not None:
        handles.append(Line2D([], [], ls="--", color="0.4", lw=0.8))
        labels.append("truth")
    fig.legend(handles, labels, fontsize=6, loc="upper right", frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def forest_figure(
    labels: Sequence[str],
    estimate: ArrayLike,
    ci_low: ArrayLike,
    ci_high: ArrayLike,
    *,
    truth: ArrayLike | None = None,
    truth_image: ArrayLike | None = None,
    xlabel: str = "% change in BP_ND",
    title: str = "",
) -> Figure:
    """Estimates with confidence intervals, one row per label, and a zero line.

    Parameters
    ----------
    labels : sequence of str
        Row labels (region, or region and contrast).
    estimate, ci_low, ci_high : array_like, shape (n,)
        Point estimates and 95 % CI limits (percent).
    truth : array_like, shape (n,), optional
        Simulated truth, drawn as open diamonds.
    truth_image : array_like, shape (n,), optional
        Image truth (the truth after the scanner's blur, see
        ``docs/outputs.md``), drawn as open squares.
    xlabel : str
        Axis label with unit.
    title : str
        Axis title.

    Returns
    -------
    Figure
        Horizontal error bars, first label on top.
    """
    est = np.asarray(estimate, dtype=float)
    lo = np.asarray(ci_low, dtype=float)
    hi = np.asarray(ci_high, dtype=float)
    n = len(labels)
    y = np.arange(n)[::-1]
    height = 0.22 * n + 1.2
    fig = _figure(5.0, height)
    fig.subplots_adjust(left=0.3, right=0.97, bottom=0.75 / height, top=1 - 0.45 / height)
    ax = fig.add_subplot()
    ax.axvline(0.0, color="0.5", lw=0.8)
    ax.errorbar(est, y, xerr=[est - lo, hi - est], fmt="o", color="#1f77b4", ms=4,
                capsize=2, lw=1.0, label="estimate, 95 % CI")
    if truth is not None:
        ax.plot(np.asarray(truth, dtype=float), y, "D", mfc="none", color="#d62728", ms=5,
                label="truth")
    if truth_image is not None:
        ax.plot(np.asarray(truth_image, dtype=float), y, "s", mfc="none", color="#8a4b00",
                ms=5, label="image truth")
    ax.set_yticks(y, list(labels), fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_title(title, fontsize=7, loc="left")
    ax.grid(axis="x", alpha=0.3)
    fig.legend(fontsize=6, loc="lower right", frameon=False, ncols=2,
               bbox_to_anchor=(0.99, 0.0))
    return fig


def motion_overview_figure(
    traces: Sequence[tuple[str, ArrayLike, ArrayLike]],
    *,
    threshold: float | None = None,
    title: str = "",
) -> Figure:
    """Framewise displacement of many scans: FD over time and the largest FD per scan.

    Parameters
    ----------
    traces : sequence of (label, t_mid_min, fd_mm)
        Per scan: its label, frame mid-times after injection (min) and the
        framewise displacement of each frame (mm; Power et al. 2012, the
        first frame 0 by definition).
    threshold : float, optional
        The flagging threshold (mm), drawn as a dashed red line in both
        panels; scans with a frame above it are drawn in colour (and named in
        the legend), the others thin and grey.
    title : str
        Figure title.

    Returns
    -------
    Figure
        Left: FD against time, one line per scan. Right: each scan's maximum
        FD (first scan on top), red where above the threshold.

    References
    ----------
    Power JD, Barnes KA, Snyder AZ, Schlaggar BL, Petersen SE. Spurious but
    systematic correlations in functional connectivity MRI networks arise from
    subject motion. NeuroImage 2012;59:2142-2154.
    """
    n = len(traces)
    height = max(2.6, 0.16 * n + 1.0)
    width = 10.0
    fig = _figure(width, height)
    left, right = fig.subplots(1, 2, gridspec_kw={
        "width_ratios": [1.6, 1.0], "left": 0.6 / width, "right": 1 - 0.15 / width,
        "bottom": 0.5 / height, "top": 1 - 0.35 / height, "wspace": 0.55})
    colours = matplotlib.colormaps["tab10"]
    peaks = np.full(n, np.nan)
    n_over = 0
    # more scans above threshold than a legend can name: thin red lines and the
    # median over scans per frame (when the scans share frames) instead of a legend
    crowded = threshold is not None and sum(
        bool(np.nanmax(np.asarray(fd, dtype=float), initial=0.0) > threshold)
        for _, _, fd in traces) > 10
    for i, (label, t, fd) in enumerate(traces):
        tt = np.asarray(t, dtype=float)
        ff = np.asarray(fd, dtype=float)
        if ff.size and np.isfinite(ff).any():
            peaks[i] = np.nanmax(ff)
        over = threshold is not None and bool(np.nanmax(ff, initial=0.0) > threshold)
        if over and crowded:
            left.plot(tt, ff, "-", lw=0.6, color="#d62728", alpha=0.35)
        elif over:
            left.plot(tt, ff, "o-", ms=2.5, lw=1.0, color=colours(n_over % 10), label=label)
            n_over += 1
        else:
            left.plot(tt, ff, "-", lw=0.6, color="0.6")
    times = [np.asarray(t, dtype=float) for _, t, _ in traces]
    if crowded and all(t.shape == times[0].shape and np.allclose(t, times[0]) for t in times):
        med = np.nanmedian(np.stack([np.asarray(fd, dtype=float) for _, _, fd in traces]), 0)
        left.plot(times[0], med, "o-", ms=2.5, lw=1.6, color="k",
                  label=f"median of {n} scans")
        n_over = 1
    if threshold is not None:
        for ax in (left, right):
            (ax.axhline if ax is left else ax.axvline)(threshold, color="#d62728", lw=0.8,
                                                       ls="--")
    left.set_xlabel("min after injection", fontsize=8)
    left.set_ylabel("framewise displacement (mm)", fontsize=8)
    left.tick_params(labelsize=7)
    left.grid(alpha=0.3)
    if n_over:
        left.legend(fontsize=6, frameon=False, loc="upper right",
                    title=None if crowded else "above threshold", title_fontsize=6)
    y = np.arange(n)[::-1]
    bad = np.isfinite(peaks) & (peaks > threshold) if threshold is not None else \
        np.zeros(n, dtype=bool)
    right.barh(y, np.nan_to_num(peaks), height=0.7,
               color=np.where(bad, "#d62728", "#1f77b4"))
    right.set_yticks(y, [label for label, _, _ in traces], fontsize=6)
    right.set_xlabel("largest FD of the scan (mm)", fontsize=8)
    right.tick_params(axis="x", labelsize=7)
    right.set_ylim(-0.6, n - 0.4)
    right.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


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
