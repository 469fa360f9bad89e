"""Exact frame-averaged convolution of a piecewise-linear curve with exponentials.

The continuous form petbind gives to an input curve (reference-region TAC or
plasma input) is **piecewise linear** through its knots. For frame data
(reference-tissue models) it is the mean-preserving form of
:meth:`PiecewiseLinear.mean_preserving`: ``(0, 0)`` at injection and knots at
every frame's start, mid-point and end, whose average over each frame equals
the measured frame mean; for plasma input the knots are the (fine-grid or
sampled) blood points. :class:`ExpConvTable` tabulates the convolution over
the rate for fast non-linear fits, and :func:`running_integral_frame_means`
gives the frame means of the running integral for the linearised methods.

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
from petbind.timing import TIME_TOL_MIN, FrameTiming

#: Smallest rate (1/min) used in the exponential convolution (half-life of 1.3 years).
MIN_RATE = 1e-6
#: Bank rows x knots above which :class:`ExpConvPlan` reads the bank knot by knot
#: rather than copying every row's curve once per call (measured crossover).
_GATHER_ONCE = 200_000
#: Interior knots bridging a gap between frames (cubic through neighbouring mid-points).
_GAP_KNOTS = 8


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

    def _with_points(self, pts: NDArray) -> tuple[NDArray, NDArray, NDArray]:
        """Knots merged with extra time points; returns (t, y, index of pts in t).

        Points within 1e-9 min of a knot are taken as that knot (no sliver
        segments from rounding).
        """
        j = np.clip(np.searchsorted(self.t, pts), 1, self.t.size - 1) if self.t.size > 1 \
            else np.zeros(pts.shape, dtype=int)
        for k in (j - 1, j):
            close = np.abs(self.t[k] - pts) <= 1e-9
            pts = np.where(close, self.t[k], pts)
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

    @classmethod
    def mean_preserving(cls, timing: FrameTiming, frame_means: ArrayLike) -> PiecewiseLinear:
        """The continuous form of frame data that keeps every frame mean exactly.

        Knots are ``(0, 0)`` (injection), every frame start, mid-point and end.
        Edge values come from the straight line through neighbouring
        ``(mid_i, mean_i)`` points (through ``(0, 0)`` before the first mid,
        extrapolated linearly after the last); the mid-point value is then set
        to ``2 mean_i - (v_start + v_end) / 2`` so that the average of the
        curve over frame ``i`` equals ``mean_i``. A linear curve is reproduced
        exactly; the map from frame means to knot values is linear
        (:func:`mean_preserving_matrix`). Across a gap between frames the
        edge values and 8 interior knots follow the cubic through the two
        mid-points on either side, so a skipped frame costs little accuracy.
        """
        t, m = mean_preserving_matrix(timing)
        v = np.asarray(frame_means, dtype=float)
        return cls(t, v @ m.T)

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

        Notes
        -----
        The per-segment factors ``exp(-theta h)``, ``A(h)``, ``B(h)`` depend only
        on the segment length, and frame schedules have few distinct lengths,
        so they are computed once per distinct length; the recurrence then
        costs four element-wise operations per knot on arrays of the batch
        size (which stay in cache).
        """
        return self.plan(timing)(rates)

    def plan(self, timing: FrameTiming) -> ExpConvPlan:
        """The rate-independent part of :meth:`exp_conv_frame_means`, computed once.

        A fit that evaluates the convolution at many rates for the same curve
        and frames (every iteration of a non-linear fit) keeps the plan and
        calls it with the rates.
        """
        edges = np.concatenate([timing.start, timing.end])
        tt, yy, idx = self._with_points(edges)
        h = np.diff(tt)
        h_unique, which = np.unique(h, return_inverse=True)
        knots, inverse = np.unique(idx, return_inverse=True)   # contiguous frames share edges
        slots = np.full(tt.size, -1)
        slots[knots] = np.arange(knots.size)
        ci = self.integral(edges)
        n = timing.n_frames
        return ExpConvPlan(yy=yy, slope=np.diff(yy, axis=-1) / h, h_unique=h_unique,
                           which=which, slots=slots, inverse=inverse,
                           frame_int_c=ci[..., n:] - ci[..., :n],
                           duration=np.asarray(timing.duration, dtype=float))


@dataclass(frozen=True)
class ExpConvPlan:
    """Frame means of ``C * exp(-rate t)`` for one curve (or a bank of curves) and frames.

    Made by :meth:`PiecewiseLinear.plan`; calling it with rates gives
    :meth:`PiecewiseLinear.exp_conv_frame_means`. For a *bank* of curves
    (values (D, K)), ``rows`` picks the curve of each batch row: the result
    then has the rows on the second-to-last batch axis (rates shaped
    ``(..., n, m)`` with ``rows`` (n,) give ``(..., n, m, n_frames)``).
    """

    yy: NDArray
    slope: NDArray
    h_unique: NDArray
    which: NDArray
    slots: NDArray
    inverse: NDArray
    frame_int_c: NDArray
    duration: NDArray

    def __call__(self, rates: ArrayLike, rows: NDArray | None = None) -> NDArray:
        """Exact frame averages of the convolution (kBq/mL), see the module docs."""
        theta = np.maximum(np.asarray(rates, dtype=float), MIN_RATE)
        n_k = self.yy.shape[-1]
        by_knot = rows is not None and rows.size * n_k > _GATHER_ONCE
        if rows is None:
            yy, slope, frame_int_c = self.yy, self.slope, self.frame_int_c
        elif by_knot:  # many rows: read a knot's values of every curve, knot by knot
            yy, slope = np.ascontiguousarray(self.yy.T), np.ascontiguousarray(self.slope.T)
            frame_int_c = self.frame_int_c[rows][:, None, :]
        else:  # each row's curve of the bank, on a batch axis before the rates' last
            yy, slope = self.yy[rows][:, None, :], self.slope[rows][:, None, :]
            frame_int_c = self.frame_int_c[rows][:, None, :]
        shape = np.broadcast_shapes(theta.shape, (rows.size, 1) if by_knot else yy.shape[:-1])
        th = np.broadcast_to(theta, shape)
        factors = []
        for hj in self.h_unique:
            x = th * hj
            e = np.exp(-x)
            a = -np.expm1(-x) / th
            # B = (1 - e (1 + x)) / theta^2, series for small x to avoid cancellation
            small = x < 1e-4
            b = np.where(small, hj * hj * (0.5 - x / 3.0 + x * x / 8.0),
                         (-np.expm1(-x) - x * e) / np.where(small, 1.0, th * th))
            factors.append((e, a, b))
        n_knots = int(np.count_nonzero(self.slots >= 0))
        y_knots = np.empty(shape + (n_knots,))
        cur = np.zeros(shape)
        for j in range(n_k):
            if j > 0:
                e, a, b = factors[self.which[j - 1]]
                cur *= e
                if by_knot:
                    cur += yy[j][rows][:, None] * a - slope[j - 1][rows][:, None] * b
                else:
                    cur += yy[..., j] * a - slope[..., j - 1] * b
            if self.slots[j] >= 0:
                y_knots[..., self.slots[j]] = cur
        y_at = y_knots[..., self.inverse]
        n = self.duration.size
        dy = y_at[..., n:] - y_at[..., :n]
        return (frame_int_c - dy) / th[..., None] / self.duration


def mean_preserving_matrix(timing: FrameTiming) -> tuple[NDArray, NDArray]:
    """Knot times and the linear map from frame means to knot values.

    Returns
    -------
    t : ndarray, shape (K,)
        Knot times in minutes: 0, then each frame's start, mid and end
        (shared edges of contiguous frames appear once).
    m : ndarray, shape (K, n_frames)
        ``knot_values = m @ frame_means`` for the form of
        :meth:`PiecewiseLinear.mean_preserving`.
    """
    n = timing.n_frames
    a, c, b = timing.start, timing.mid, timing.end
    if a[0] < 0 or c[0] <= 0:
        raise ModelError("frames must start at or after injection", field="FrameTimesStart",
                         fix="give times relative to injection")
    eye = np.eye(n)
    knots_mid = np.concatenate([[0.0], c])
    vals_mid = np.concatenate([np.zeros((1, n)), eye], axis=0)  # (n+1, n)

    def line(t: float) -> NDArray:
        """Value (as a row over frames) of the mid-point interpolant at ``t``."""
        if t >= knots_mid[-1]:
            if n == 1:
                return vals_mid[-1]
            k0, k1 = n - 1, n
        else:
            k1 = int(np.searchsorted(knots_mid, t, side="right"))
            k0 = k1 - 1
        w = (t - knots_mid[k0]) / (knots_mid[k1] - knots_mid[k0])
        return vals_mid[k0] * (1.0 - w) + vals_mid[k1] * w

    def cubic(t: float, k1: int) -> NDArray:
        """Lagrange cubic through the mid-points around ``knots_mid[k1 - 1 : k1 + 1]``."""
        ks = np.arange(max(k1 - 2, 0), min(k1 + 2, n + 1))
        row = np.zeros(n)
        for k in ks:
            others = ks[ks != k]
            row += vals_mid[k] * np.prod((t - knots_mid[others]) / (knots_mid[k]
                                                                     - knots_mid[others]))
        return row

    times: list[float] = []
    rows: list[NDArray] = []

    def add(t: float, row: NDArray) -> None:
        if times and t <= times[-1] + TIME_TOL_MIN:
            times[-1] = max(times[-1], t)
            rows[-1] = row
            return
        times.append(float(t))
        rows.append(row)

    if a[0] > TIME_TOL_MIN:
        add(0.0, np.zeros(n))
    gap_after = np.append(a[1:] - b[:-1] > TIME_TOL_MIN, False)
    for i in range(n):
        # frame i lies between mids knots_mid[i] and knots_mid[i + 2]; across a gap
        # the curve is bridged by a cubic through two mid-points on each side
        va = cubic(a[i], i + 1) if i > 0 and gap_after[i - 1] else line(a[i])
        vb = cubic(b[i], i + 2) if gap_after[i] else line(b[i])
        if a[i] <= TIME_TOL_MIN:
            va = np.zeros(n)
        add(a[i], va)
        add(c[i], 2.0 * eye[i] - 0.5 * (va + vb))
        add(b[i], vb)
        if gap_after[i]:
            for t in np.linspace(b[i], a[i + 1], _GAP_KNOTS + 2)[1:-1]:
                add(t, cubic(t, i + 2))
    return np.asarray(times), np.asarray(rows)


def running_integral_frame_means(timing: FrameTiming) -> NDArray:
    """Linear map from frame means to frame means of the running integral.

    For the mean-preserving form ``C`` of the frame data
    (:meth:`PiecewiseLinear.mean_preserving`) returns ``L`` (n_frames x
    n_frames) with ``(L @ means)_i = (1 / d_i) int_{a_i}^{b_i} int_0^t C(s) ds dt``
    exactly. Used by the linearised methods (MRTM, MRTM2, Logan), whose
    operational equations are integrated over each frame.
    """
    t, m = mean_preserving_matrix(timing)
    h = np.diff(t)
    # running integral at knots (K, n) and its integral over each segment
    seg = 0.5 * (m[1:] + m[:-1]) * h[:, None]
    cum = np.concatenate([np.zeros((1, m.shape[1])), np.cumsum(seg, axis=0)], axis=0)
    seg_int = cum[:-1] * h[:, None] + h[:, None] ** 2 * (m[:-1] / 3.0 + m[1:] / 6.0)
    cum2 = np.concatenate([np.zeros((1, m.shape[1])), np.cumsum(seg_int, axis=0)], axis=0)
    ia = np.searchsorted(t, timing.start - TIME_TOL_MIN)
    ib = np.searchsorted(t, timing.end - TIME_TOL_MIN)
    return (cum2[ib] - cum2[ia]) / timing.duration[:, None]


class ExpConvTable:
    """Frame means of ``C_R * exp(-theta t)`` tabulated over theta, for fast fits.

    The exact values (:meth:`PiecewiseLinear.exp_conv_frame_means`) are
    computed on a grid uniform in ``u = ln theta`` and joined by a cubic
    spline in ``u`` (per frame), so that values and derivatives for any
    number of rates cost one table gather and a Horner step. With the default
    2049 points the spline's relative error is below 1e-9.

    Parameters
    ----------
    curve : PiecewiseLinear
        A single input curve (``y`` 1-D).
    timing : FrameTiming
        Frames to average over.
    theta_min, theta_max : float
        Range of rates (1/min) to cover; rates outside are clipped.
    n_grid : int
        Number of grid points.
    """

    def __init__(self, curve: PiecewiseLinear, timing: FrameTiming, theta_min: float,
                 theta_max: float, n_grid: int = 2049) -> None:
        from scipy.interpolate import CubicSpline

        if curve.y.ndim != 1:
            raise ModelError("the table needs a single input curve", field="ref",
                             fix="give one reference curve")
        if not 0 < theta_min < theta_max:
            raise ModelError(f"bad theta range [{theta_min}, {theta_max}]", field="theta3",
                             fix="give 0 < theta_min < theta_max (1/min)")
        self.u0 = float(np.log(theta_min))
        self.u1 = float(np.log(theta_max))
        self.h = (self.u1 - self.u0) / (n_grid - 1)
        u = self.u0 + self.h * np.arange(n_grid)
        vals = curve.exp_conv_frame_means(np.exp(u), timing)
        spline = CubicSpline(u, vals, axis=0)
        # self._c[k][j, :] multiplies (u - u_j) ** (3 - k)
        self._c = [np.ascontiguousarray(spline.c[k]) for k in range(4)]
        self.theta_min = float(theta_min)
        self.theta_max = float(theta_max)

    def __call__(self, theta: ArrayLike, derivative: bool = False
                 ) -> NDArray | tuple[NDArray, NDArray]:
        """Values (and d/dtheta) at ``theta`` (shape S) -> arrays shaped S + (n_frames,)."""
        th = np.clip(np.asarray(theta, dtype=float), self.theta_min, self.theta_max)
        u = np.log(th)
        j = np.clip(((u - self.u0) / self.h).astype(np.intp), 0, self._c[0].shape[0] - 1)
        du = (u - (self.u0 + j * self.h))[..., None]
        c0, c1, c2 = (np.take(c, j, axis=0) for c in self._c[:3])
        val = c0 * du
        val += c1
        val *= du
        val += c2
        val *= du
        val += np.take(self._c[3], j, axis=0)
        if not derivative:
            return val
        c0 *= 3.0 * du
        c1 *= 2.0
        c0 += c1
        c0 *= du
        c0 += c2
        c0 /= th[..., None]
        return val, c0
