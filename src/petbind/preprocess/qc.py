"""Quality-control figures of preprocessing: motion traces and registration edge overlays.

Both are PNG files written atomically, small enough to embed in the report.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from petbind.io.atomic import atomic_path
from petbind.preprocess.motion import MotionResult
from petbind.timing import FrameTiming


def plot_motion(path: str | os.PathLike, motion: MotionResult, timing: FrameTiming,
                title: str = "") -> Path:
    """Translations, rotations and framewise displacement against frame mid-time.

    Flagged frames (FD above the threshold) are marked in red on the FD panel.
    """
    t = timing.mid
    fig = _figure((7, 6))
    axes = fig.subplots(3, 1, sharex=True)
    fig.subplots_adjust(left=0.11, right=0.98, top=0.93, bottom=0.09, hspace=0.12)
    for k, name in enumerate(("x", "y", "z")):
        axes[0].plot(t, motion.params[:, k], marker=".", label=name)
        axes[1].plot(t, motion.params[:, 3 + k], marker=".", label=name)
    axes[0].set_ylabel("translation (mm)")
    axes[1].set_ylabel("rotation (deg)")
    axes[0].legend(ncol=3, fontsize="small")
    axes[1].legend(ncol=3, fontsize="small")
    thr = motion.settings.get("fd_threshold_mm")
    axes[2].plot(t, motion.fd, marker=".", color="k")
    if thr is not None:
        axes[2].axhline(thr, color="r", lw=0.8, ls="--", label=f"threshold {thr:g} mm")
        axes[2].legend(fontsize="small")
    if motion.flagged.any():
        axes[2].plot(t[motion.flagged], motion.fd[motion.flagged], "o", color="r", mfc="none")
    axes[2].set_ylabel("FD (mm)")
    axes[2].set_xlabel("time after injection (min)")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title or "head motion", fontsize="medium")
    return _save(fig, path)


def _figure(size: tuple[float, float]) -> Any:
    """A matplotlib Figure on the Agg canvas, without pyplot (no global state, and
    importing pyplot cost about 2 s per process)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike) -> Path:
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    return target


#: Half-thickness (voxels) of the slab around each displayed slice in which edges are
#: computed: the smoothing (sigma 1) and Sobel kernels reach 4 voxels.
_SLAB = 5


def _edges(img: np.ndarray) -> np.ndarray:
    """Edge map: gradient magnitude above its 85th percentile inside the object."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(np.asarray(img, dtype=float), 1.0)
    mag = np.sqrt(sum(ndimage.sobel(smooth, axis=a) ** 2 for a in range(3)))
    inside = smooth > 0.1 * np.percentile(smooth, 99)
    if not inside.any():
        return np.zeros(img.shape, bool)
    return mag > np.percentile(mag[inside], 85)


def _slice_edges(img: np.ndarray, axis: int, index: int) -> np.ndarray:
    """:func:`_edges` of the slab around one slice, returned for that slice only."""
    lo = max(index - _SLAB, 0)
    hi = min(index + _SLAB + 1, img.shape[axis])
    slab = np.take(img, np.arange(lo, hi), axis=axis)
    return np.take(_edges(slab), index - lo, axis=axis)


def plot_edges(path: str | os.PathLike, background: ArrayLike, overlay: ArrayLike,
               title: str = "") -> Path:
    """Edges of ``overlay`` drawn on three orthogonal slices of ``background``.

    Both images must be on the same grid (resample first). A good
    registration puts the overlay's edges on the background's boundaries.
    """
    bg = np.asarray(background, dtype=float)
    ov = np.asarray(overlay, dtype=float)
    if bg.shape != ov.shape:
        raise ValueError(f"grids differ: {bg.shape} vs {ov.shape}")
    c = [s // 2 for s in bg.shape]
    # edges only in a slab around each shown slice (the 3-D edge map of a 1 mm
    # volume cost about a second per figure)
    slices = [(np.take(bg, c[a], axis=a), _slice_edges(ov, a, c[a])) for a in range(3)]
    fig = _figure((9, 3.4))
    axes = fig.subplots(1, 3)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.84, bottom=0.02, wspace=0.04)
    vmax = np.percentile(bg, 99.5) or 1.0
    for ax, (b, e), name in zip(axes, slices, ("sagittal", "coronal", "axial"), strict=True):
        ax.imshow(b.T, origin="lower", cmap="gray", vmin=0, vmax=vmax)
        ax.imshow(np.ma.masked_where(~e.T, e.T), origin="lower", cmap="autumn", alpha=0.9,
                  interpolation="nearest")
        ax.set_title(name, fontsize="small")
        ax.axis("off")
    fig.suptitle(title, fontsize="medium")
    return _save(fig, path)
