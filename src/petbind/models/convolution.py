"""Exact frame-averaged convolution of a piecewise-linear curve with exponentials.

The continuous form petbind gives to an input curve (reference-region TAC or
plasma input) is **piecewise linear** through its knots. For the SRTM family
the knots are ``(0, 0)`` at injection and ``(mid_i, mean_i)`` at every frame
mid-point, held constant after the last mid-point; for plasma input they are
the (fine-grid or sampled) blood points.

For ``y(t) = (C * exp(-theta t))(t) = int_0^t C(s) exp(-theta (t - s)) ds``
with ``C`` linear on each segment ``[t_j, t_j + h]`` (values ``c_j``,
``c_{j+1}``), the exact update is::

    y(t_j + h) = exp(-theta h) y(t_j) + c_{j+1} A(h) - m_j B(h)
    A(h) = (1 - exp(-theta h)) / theta
    B(h) = (1 - exp(-theta h) (1 + theta h)) / theta^2,   m_j = (c_{j+1} - c_j) / h

and because ``y' = C - theta y`` the frame integral is exact too::

    int_a^b y dt = (int_a^b C dt - (y(b) - y(a))) / theta

so the model prediction is the true average over each frame, not a mid-point
sample. Rates below :data:`MIN_RATE` (1/min) are evaluated at ``MIN_RATE``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.errors import ModelError
from petbind.timing import FrameTiming

#: Smallest rate (1/min) used in the exponential convolution (half-life of 1.3 years).
MIN_RATE = 1e-6


@dataclass(frozen=True)
class PiecewiseLinear:
    """A curve (or a batch of curves) linear between knots.

    Attributes
    ----------
    t : ndarray, shape (K,)
        Knot times in minutes, increasing, ``t[0] == 0`` in normal use.
    y : ndarray, shape (..., K)
        Values at the knots (kBq/mL for activity curves). Held constant after
        the last knot.
    """

    t: NDArray[np.float64]
    y: NDArray[np.float64]

    def __post_init__(self) -> None:
        t = np.asarray(self.t, dtype=float)
        y = np.asarray(self.y, dtype=float)
        if t.ndim != 1 or y.shape[-1] != t.size:
            raise ModelError(f"knot times {t.shape} and values {y.shape} do not match",
                             field="t", fix="give one value per knot on the last axis")
        if np.any(np.diff(t) <= 0):
            raise ModelError("knot times must increase strictly", field="t",
                             fix="sort the samples and drop duplicates")
        object.__setattr__(self, "t", t)
        object.__setattr__(self, "y", y)

    @classmethod
    def from_frames(cls, timing: FrameTiming, frame_means: ArrayLike) -> PiecewiseLinear:
        """Knots at ``(0, 0)`` and ``(mid_i, mean_i)``: the SRTM-family input form."""
        v = np.asarray(frame_means, dtype=float)
        mid = timing.mid
        if mid[0] <= 0:
            raise ModelError("first frame mid-point must be after injection",
                             field="FrameTimesStart", fix="check frame timing")
        t = np.concatenate([[0.0], mid])
        y = np.concatenate([np.zeros(v.shape[:-1] + (1,)), v], axis=-1)
        return cls(t, y)

    def _with_points(self, pts: NDArray) -> tuple[NDArray, NDArray, NDArray]:
        """Knots merged with extra time points; returns (t, y, index of pts in t)."""
        t_end = max(self.t[-1], float(np.max(pts)))
        tt = np.union1d(self.t, pts)
        if tt[-1] < t_end:
            tt = np.append(tt, t_end)
        yy = self.interp(tt)
        return tt, yy, np.searchsorted(tt, pts)

    def interp(self, t: ArrayLike) -> NDArray:
        """Values at times ``t`` (minutes); constant after the last knot, 0 before 0."""
        t = np.asarray(t, dtype=float)
        j = np.clip(np.searchsorted(self.t, t, side="right") - 1, 0, self.t.size - 1)
        jn = np.minimum(j + 1, self.t.size - 1)
        dt = self.t[jn] - self.t[j]
        w = np.where(dt > 0, (t - self.t[j]) / np.where(dt > 0, dt, 1.0), 0.0)
        w = np.clip(w, 0.0, 1.0)
        out = self.y[..., j] * (1 - w) + self.y[..., jn] * w
        return np.where(t < self.t[0], 0.0, out)

    def integral(self, t: ArrayLike) -> NDArray:
        """Cumulative integral ``int_0^t C(s) ds`` at times ``t`` (kBq/mL * min)."""
        pts = np.atleast_1d(np.asarray(t, dtype=float))
        tt, yy, idx = self._with_points(pts)
        seg = 0.5 * (yy[..., 1:] + yy[..., :-1]) * np.diff(tt)
        cum = np.concatenate([np.zeros(yy.shape[:-1] + (1,)), np.cumsum(seg, axis=-1)], axis=-1)
        return cum[..., idx]

    def frame_means(self, timing: FrameTiming) -> NDArray:
        """Exact frame means of the piecewise-linear curve."""
        n = timing.n_frames
        v = self.integral(np.concatenate([timing.start, timing.end]))
        return (v[..., n:] - v[..., :n]) / timing.duration

    def frame_integral_ends(self, timing: FrameTiming) -> NDArray:
        """``int_0^{end_i} C`` at every frame end (for graphical methods)."""
        return self.integral(timing.end)

    def exp_conv_frame_means(self, rates: ArrayLike, timing: FrameTiming) -> NDArray:
        """Frame means of ``C * exp(-rate t)`` for many rates at once.

        Parameters
        ----------
        rates : array_like, any shape S
            Exponential rates in 1/min (e.g. SRTM ``theta3 = k2 / (1 + BP_ND)``).
            Must broadcast against the batch shape of ``y`` (leading axes).
        timing : FrameTiming
            Frames to average over.

        Returns
        -------
        ndarray, shape broadcast(S, y.shape[:-1]) + (n_frames,)
            Exact frame averages of the convolution (kBq/mL).
        """
        theta = np.maximum(np.asarray(rates, dtype=float), MIN_RATE)
        n = timing.n_frames
        edges = np.concatenate([timing.start, timing.end])
        tt, yy, idx = self._with_points(edges)
        h = np.diff(tt)
        shape = np.broadcast_shapes(theta.shape, yy.shape[:-1])
        th = np.broadcast_to(theta, shape)
        need = np.zeros(tt.size, dtype=bool)
        need[idx] = True
        y_at = np.empty(shape + (n * 2,))
        cur = np.zeros(shape)
        slots: dict[int, list[int]] = {}
        for i, k in enumerate(idx):
            slots.setdefault(int(k), []).append(i)
        for j in range(tt.size):
            if j > 0:
                hj = h[j - 1]
                x = th * hj
                e = np.exp(-x)
                a = -np.expm1(-x) / th
                # B = (1 - e (1 + x)) / theta^2, series for small x to avoid cancellation
                small = x < 1e-4
                b = np.where(small, hj * hj * (0.5 - x / 3.0 + x * x / 8.0),
                             (-np.expm1(-x) - x * e) / np.where(small, 1.0, th * th))
                c1 = yy[..., j]
                m = (yy[..., j] - yy[..., j - 1]) / hj
                cur = e * cur + c1 * a - m * b
            if need[j]:
                for i in slots[j]:
                    y_at[..., i] = cur
        ci = self.integral(edges)
        ci = np.broadcast_to(ci, shape + (2 * n,))
        frame_int_c = ci[..., n:] - ci[..., :n]
        dy = y_at[..., n:] - y_at[..., :n]
        return (frame_int_c - dy) / th[..., None] / timing.duration
