"""Brain maps: orthogonal slices over an underlay, and small multiples of maps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike, NDArray

from petbind.report.figures.base import new_figure


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
    fig = new_figure(7.2, 2.4)
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


#: A value's histogram bin in :class:`MapGridScale`: the top 20 bits of its order key
#: (sign, exponent and 8 mantissa bits of the float64: bins about 0.4 % wide).
_BIN_SHIFT = 44
_N_BINS = 1 << (64 - _BIN_SHIFT)


def _order_bins(values: NDArray) -> NDArray:
    """Histogram bins of float64 ``values`` in value order (finite values, no -0.0)."""
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)
    negative = (bits >> np.uint64(63)).astype(bool)
    keys = np.where(negative, ~bits, bits | np.uint64(1 << 63))
    return (keys >> np.uint64(_BIN_SHIFT)).astype(np.intp)


def _percentile_linear(a: float, b: float, virtual: float, previous: float) -> float:
    """numpy's linear interpolation between the order statistics ``a`` <= ``b``.

    The same operations as ``np.percentile(..., method="linear")``
    (``numpy.lib._function_base_impl._lerp``), so the result is bit-identical
    to ``np.percentile`` of the whole sample (``tests/report/test_figures.py``).
    """
    a64, b64 = np.float64(a), np.float64(b)
    gamma = np.float64(virtual) - np.float64(previous)
    diff = b64 - a64
    return float(b64 - diff * (1 - gamma) if gamma >= 0.5 else a64 + diff * gamma)


class MapGridScale:
    """The map grid's common slices and colour range, from one map at a time.

    :func:`map_grid_figure` used to stack every scan's whole map as float64
    (128 scans of a 2 mm human grid: 660 MB, 2 GB at its peak). Here the maps
    are seen twice, one at a time: :meth:`add` (first pass) keeps the union of
    their non-zero voxels (where the slices cut) and a histogram of their
    values; :meth:`tile` (second pass) returns a map's slices at that cut and
    its values in the histogram bins that hold the wanted percentile, so
    :meth:`vmax` is the 98th percentile of all maps' finite non-zero values,
    exactly ``np.percentile`` of the stacked values (bit for bit).
    """

    def __init__(self, q: float = 98.0) -> None:
        self.q = q
        self.shape: tuple[int, ...] | None = None
        self.support: NDArray | None = None
        self.counts = np.zeros(_N_BINS, dtype=np.int64)
        self._cut: tuple[int, int, int] | None = None
        self._wanted: list[int] | None = None

    def add(self, volume: ArrayLike) -> None:
        """First pass: one map (X, Y, Z) of the grid (all maps on one grid)."""
        vol = np.asarray(volume)
        finite = np.isfinite(vol) & (vol != 0)
        if self.support is None:
            self.shape, self.support = vol.shape, finite.copy()
        else:
            self.support |= finite
        self.counts += np.bincount(_order_bins(vol[finite]), minlength=_N_BINS)

    @property
    def cut(self) -> tuple[int, int, int]:
        """Voxel indices of the slices: the centre of the maps' non-zero voxels."""
        if self._cut is None:
            assert self.support is not None, "add() the maps first"
            self._cut = _slice_index(self.support, self.support if self.support.any()
                                     else None)
        return self._cut

    def _ranks(self) -> tuple[int, int, float, float]:
        """The two order statistics np.percentile interpolates between (ranks, index, floor)."""
        n = int(self.counts.sum())
        virtual = (n - 1) * np.true_divide(self.q, 100)
        previous = np.floor(virtual)
        lo, hi = int(previous), int(previous) + 1
        if virtual >= n - 1:  # as numpy: the largest value
            lo = hi = n - 1
            previous = np.float64(-1)
        return lo, hi, float(virtual), float(previous)

    def _bins(self) -> list[int]:
        """The histogram bins of the two order statistics (after the first pass)."""
        if self._wanted is None:
            cum = np.cumsum(self.counts)
            lo, hi, _, _ = self._ranks()
            self._wanted = sorted({int(np.searchsorted(cum, r, side="right"))
                                   for r in (lo, hi)}) if cum[-1] else []
        return self._wanted

    def tile(self, volume: ArrayLike) -> tuple[NDArray, NDArray]:
        """Second pass: a map's slices at :attr:`cut` (in the map's own type: a
        float32 map's slices are half the data of a task) and its values the
        percentile may need (pass them all to :meth:`vmax`)."""
        vol = np.asarray(volume)
        vals = vol[np.isfinite(vol) & (vol != 0)].astype(np.float64)
        wanted = np.isin(_order_bins(vals), self._bins())
        return _montage(vol, self.cut), vals[wanted]

    def vmax(self, selected: Sequence[NDArray]) -> float | None:
        """The percentile of every map's values; None without any value."""
        n = int(self.counts.sum())
        if n == 0:
            return None
        lo, hi, virtual, previous = self._ranks()
        cum = np.cumsum(self.counts)
        pool = np.concatenate([np.asarray(s, dtype=np.float64) for s in selected])
        pool_bins = _order_bins(pool)
        stats = []
        for r in (lo, hi):
            b = int(np.searchsorted(cum, r, side="right"))
            below = int(cum[b] - self.counts[b])
            stats.append(float(np.sort(pool[pool_bins == b])[r - below]))
        return _percentile_linear(stats[0], stats[1], virtual, previous)


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
        The same figure as :func:`map_tiles_figure` of :class:`MapGridScale`'s
        tiles (what the report draws, one map in memory at a time).
    """
    scale = MapGridScale()
    for v in maps.values():
        scale.add(v)
    tiles, selected = {}, []
    for key, v in maps.items():
        tiles[key], values = scale.tile(v)
        selected.append(values)
    if vmax is None:
        vmax = scale.vmax(selected)
    return map_tiles_figure(tiles, row_labels, col_labels, cut=scale.cut, vmin=vmin,
                            vmax=vmax, cmap=cmap, label=label, title=title)


def map_tiles_figure(
    tiles: Mapping[tuple[str, str], ArrayLike],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    cut: Sequence[int],
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "viridis",
    label: str = "",
    title: str = "",
) -> Figure:
    """:func:`map_grid_figure` from each map's slices (:meth:`MapGridScale.tile`).

    Parameters
    ----------
    tiles : mapping (row label, column label) -> array (H, W)
        Each map's sagittal, coronal and axial slices side by side (NaN padding).
    row_labels, col_labels : sequence of str
        Row and column order.
    cut : sequence of 3 int
        The slices' voxel indices (named in the title).
    vmin, vmax : float, optional
        Common colour range; default 0 and 1.
    cmap, label, title : str
        As in :func:`map_grid_figure`.

    Returns
    -------
    Figure
        The grid: small arguments (a few slices per scan), so a task on a
        worker can draw it.
    """
    if vmin is None:
        vmin = 0.0
    if vmax is None:
        vmax = 1.0
    if not vmax > vmin:
        vmax = vmin + 1.0
    rows, cols = len(row_labels), len(col_labels)
    sample = np.asarray(next(iter(tiles.values())))
    aspect = sample.shape[0] / sample.shape[1]
    cell_w = 3.2
    width, height = cell_w * cols + 1.5, cell_w * aspect * rows * 1.15 + 0.5
    fig = new_figure(width, height)
    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw={
        "left": 0.5 / width, "right": 1 - 1.0 / width, "bottom": 0.1 / height,
        "top": 1 - 0.45 / height, "wspace": 0.04, "hspace": 0.15})
    image = None
    for r, row in enumerate(row_labels):
        for c, col in enumerate(col_labels):
            ax = axes[r, c]
            ax.set_axis_off()
            tile = tiles.get((row, col))
            if tile is None:
                continue
            shown = np.asarray(tile, dtype=np.float64)
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
