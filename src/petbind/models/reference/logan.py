"""Logan reference-region graphical analysis (Logan et al. 1996), t* given or by max error.

See :mod:`petbind.models.reference` for the frame averaging.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.errors import ModelError
from petbind.models.reference.common import (
    Result,
    _Linearised,
    _sigma2,
)
from petbind.models.weights import window_mask
from petbind.timing import FrameTiming


class LoganRef(_Linearised):
    """Logan reference-region graphical analysis, with or without the k2' term (Logan 1996).

    For frames after t*:
    ``J(C_T)/mean(C_T) = DVR [J(C_R) + mean(C_R)/k2'] / mean(C_T) + b``,
    fitted by weighted linear regression; ``BP_ND = DVR - 1``. (For one-tissue
    target and reference the frame-averaged relation is exact with
    ``b = -1/k2a``.) With ``k2prime=None`` the ``mean(C_R)/k2'`` term is
    dropped: ``J(C_T)/mean(C_T) = DVR J(C_R)/mean(C_T) + b'``, the usual
    variant for [11C]PiB (tpcclib ``logan``, tacmagic, dynamicpet), which
    holds once ``C_R / C_T`` is constant (Logan et al. 1996): exact for curves
    in a constant ratio, otherwise biased while that ratio still drifts.
    ``tstar`` (minutes): frames starting at or after it are used; if None, t*
    is chosen per curve as the earliest frame start from which, with at least
    ``min_points`` frames, the largest relative deviation of the plot from its
    regression line is at most ``max_error`` (default 10 %; Ichise et al. 2002,
    as in PMOD's Logan plot).

    Output parameters: ``dvr``, ``bp_nd``, ``intercept`` (min), ``tstar`` (min).
    ``fitted`` is the target curve implied by the line
    (``(J(C_T) - DVR X) / b``), as for MRTM. Frames with ``C_T <= 0`` are left
    out of the plot (the ratio is undefined there).
    """

    name = "logan"
    n_params = 2
    min_frames = 3

    def __init__(self, timing: FrameTiming, ref: ArrayLike, *, k2prime: float | None = None,
                 tstar: float | None = None, max_error: float = 0.10, min_points: int = 3,
                 **kw: Any) -> None:
        if k2prime is not None and not (np.isfinite(k2prime) and k2prime > 0):
            raise ModelError(f"logan needs a positive k2' (or none), got {k2prime}",
                             field="k2prime",
                             fix="give --k2prime VALUE (1/min), auto, or leave it out")
        super().__init__(timing, ref, **kw)
        self.k2prime = None if k2prime is None else float(k2prime)
        self.tstar = None if tstar is None else float(tstar)
        self.max_error = float(max_error)
        self.min_points = int(min_points)
        if self.tstar is not None:
            window_mask(timing, max(self.tstar, self.start or self.tstar), self.end,
                        min_frames=self.min_points)
        self.xnum = self.ref_int if self.k2prime is None \
            else self.ref_int + self.ref / self.k2prime

    def _settings(self) -> dict[str, Any]:
        return {**super()._settings(), "k2prime": self.k2prime,
                "k2prime_term": self.k2prime is not None, "tstar_min": self.tstar,
                "tstar_rule": "given" if self.tstar is not None else
                f"earliest start with max relative error <= {self.max_error:g}",
                "min_points": self.min_points}

    @staticmethod
    def _line(x: NDArray, yy: NDArray, w: NDArray) -> tuple[NDArray, ...]:
        sw = np.sum(w, -1)
        mx = np.sum(w * x, -1) / sw
        my = np.sum(w * yy, -1) / sw
        dx = x - mx[:, None]
        sxx = np.sum(w * dx * dx, -1)
        slope = np.sum(w * dx * (yy - my[:, None]), -1) / sxx
        icpt = my - slope * mx
        return slope, icpt, sxx, sw, mx

    def _fit(self, y: NDArray, w: NDArray) -> Result:
        jt = self._target_int(y)
        pos = y > 0
        safe = np.where(pos, y, 1.0)
        x = np.where(pos, self.xnum / safe, 0.0)
        yy = np.where(pos, jt / safe, 0.0)
        wb = np.where(pos, w, 0.0)
        n = self.timing.n_frames
        start = self.timing.start
        if self.tstar is not None:
            k_sel = np.full(y.shape[0], int(np.searchsorted(start, self.tstar - 1e-4)))
        else:
            k_sel = np.full(y.shape[0], -1)
            ww = wb * self.window
            # suffix sums over frames >= k give every candidate line at once
            sums = [np.cumsum(a[:, ::-1], axis=1)[:, ::-1]
                    for a in (ww, ww * x, ww * yy, ww * x * x, ww * x * yy)]
            frames = np.arange(n)
            act = np.arange(y.shape[0])
            for k in np.flatnonzero(self.window):
                if act.size == 0 or (self.window & (frames >= k)).sum() < self.min_points:
                    break
                sw, sx, sy, sxx, sxy = (a[act, k] for a in sums)
                slope = (sw * sxy - sx * sy) / (sw * sxx - sx * sx)
                icpt = (sy - slope * sx) / sw
                ua = ww[act, k:] > 0
                ya = yy[act, k:]
                rel = np.abs(ya - slope[:, None] * x[act, k:] - icpt[:, None]) \
                    / np.where(ua, np.abs(ya), 1.0)
                err = np.max(np.where(ua, rel, 0.0), axis=-1)
                pick = (err <= self.max_error) & (ua.sum(-1) >= self.min_points)
                k_sel[act[pick]] = k
                act = act[~pick]
            k_sel = np.where(k_sel < 0, n, k_sel)
        use = (np.arange(n)[None, :] >= k_sel[:, None]) & self.window & pos
        wk = wb * use
        slope, icpt, sxx, sw, mx = self._line(x, yy, wk)
        pred = slope[:, None] * x + icpt[:, None]
        s2 = _sigma2(np.where(use, yy - pred, 0.0), wk, 2)
        se_slope = np.sqrt(s2 / sxx)
        se_icpt = np.sqrt(s2 * (1.0 / sw + mx * mx / sxx))
        fitted = np.where(use, (jt - slope[:, None] * self.xnum) / icpt[:, None], np.nan)
        tstar = np.where(k_sel < n, start[np.minimum(k_sel, n - 1)], np.nan)
        params = {"dvr": slope, "intercept": icpt, "tstar": tstar}  # BP_ND = DVR - 1 derived
        se = {"bp_nd": se_slope, "dvr": se_slope, "intercept": se_icpt}
        npts = np.sum(use, -1)
        valid = np.isfinite(slope) & (npts >= self.min_points)
        return Result(params, se, fitted, valid, {"logan_x": x, "logan_y": yy, "used": use})

