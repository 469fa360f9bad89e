"""Curves and effects: TACs, fits, per-subject lines, forest plots, head motion."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from numpy.typing import ArrayLike, NDArray

from petbind.report.figures.base import (
    MODEL_COLOURS,
    fix_empty_axis_labels,
    grid_shape,
    mark_reusable,
    new_figure,
    take_reusable,
)


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
    rows, cols = grid_shape(len(panels), max_cols)
    width, height = 2.9 * cols + 1.6, 1.9 * rows + 0.5
    fig = new_figure(width, height)
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
    return fix_empty_axis_labels(fig)


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
    models = list(fitted)
    # what fixes the figure's artists: a kept figure of the same layout is refilled
    # (:func:`petbind.report.figures.base.reusing`; one fit figure per scan, all alike)
    layout = ("fit_figure", tuple(regions), tuple(models),
              tuple(tuple(fitted[m].get(r) is not None for r in regions) for m in models),
              t.shape, bool(title), max_cols)
    fig = take_reusable(layout)
    if fig is not None:
        return _refill_fit_figure(fig, t, measured, fitted, title)
    rows, cols = grid_shape(len(regions), max_cols)
    fig = new_figure(1.9 * cols + 0.4, 2.3 * rows + 0.3)
    outer = fig.add_gridspec(rows, cols, left=0.6 / (1.9 * cols + 0.4), right=0.98,
                             bottom=0.35 / (2.3 * rows + 0.3), top=1 - 0.45 / (2.3 * rows + 0.3),
                             wspace=0.35, hspace=0.35)
    panels = []
    for k, region in enumerate(regions):
        inner = outer[k // cols, k % cols].subgridspec(2, 1, height_ratios=[2.2, 1], hspace=0)
        ax = fig.add_subplot(inner[0])
        axr = fig.add_subplot(inner[1], sharex=ax)
        y = np.asarray(measured[region], dtype=float)
        (dots,) = ax.plot(t, y, "o", color="0.25", ms=2.5, label="data")
        axr.axhline(0.0, color="0.5", lw=0.7)
        lines = []
        for m, model in enumerate(models):
            f = fitted[model].get(region)
            if f is None:
                continue
            f = np.asarray(f, dtype=float)
            c = MODEL_COLOURS[m % len(MODEL_COLOURS)]
            (line,) = ax.plot(t, f, "-", color=c, lw=1.1, label=model)
            (resid,) = axr.plot(t, y - f, ".-", color=c, lw=0.6, ms=2)
            lines.append((model, line, resid))
        panels.append((region, ax, axr, dots, lines))
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
    fix_empty_axis_labels(fig)
    if title:
        fig.suptitle(title, fontsize=9)
    fig._petbind_panels = panels  # type: ignore[attr-defined]
    return mark_reusable(fig, layout)


def _refill_fit_figure(fig: Figure, t: NDArray[np.float64],
                       measured: Mapping[str, ArrayLike],
                       fitted: Mapping[str, Mapping[str, ArrayLike]], title: str) -> Figure:
    """A drawn :func:`fit_figure` of the same layout given another scan's curves: the
    lines' data, every axes' data limits and view, and the title; the pixels are those
    of a new figure (``relim`` + ``autoscale_view`` are what adding the lines does)."""
    panels = fig._petbind_panels  # type: ignore[attr-defined]
    for region, _, _, dots, lines in panels:
        y = np.asarray(measured[region], dtype=float)
        dots.set_data(t, y)
        for model, line, resid in lines:
            f = np.asarray(fitted[model][region], dtype=float)
            line.set_data(t, f)
            resid.set_data(t, y - f)
    for _, ax, axr, _, _ in panels:  # every data limit first: x is shared by each pair
        ax.relim()
        axr.relim()
    for _, ax, axr, _, _ in panels:
        ax.autoscale_view()
        axr.autoscale_view()
    if title:
        fig.suptitle(title, fontsize=9)
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
    rows, cols = grid_shape(len(regions), int(np.ceil(len(regions) / max(n_rows, 1))))
    fig = new_figure(1.75 * cols + 0.6, 1.9 * rows + 0.4)
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
    fig = new_figure(5.0, height)
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
    fig = new_figure(width, height)
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
