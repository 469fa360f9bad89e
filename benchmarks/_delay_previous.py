"""The delay pre-fit as it was before it used the compartment models' engine (a baseline).

Kept only for ``bench_plasma_prefit.py``, which times it against
:func:`petbind.models.delay.fit_delay` in the same process: a linear grid over
delay x k2 (normal equations of ``(1 - v_B) K1`` and ``v_B``), then
Levenberg-Marquardt of ``(1 - v_B) K1, k2, v_B`` and the delay together, the
input re-interpolated on a 1-step grid at every evaluation. Not used by petbind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.errors import ModelError
from petbind.models.delay import DelayFit
from petbind.numerics.convolution import PiecewiseLinear
from petbind.numerics.optimize import levenberg_marquardt
from petbind.timing import TIME_TOL_MIN, FrameTiming

if TYPE_CHECKING:
    from petbind.blood import InputFunction

__all__ = ["fit_delay_previous"]


def fit_delay_previous(
    inp: InputFunction,
    timing: FrameTiming,
    tacs: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    search_min: tuple[float, float] = (-1.0, 1.0),
    step_min: float = 1.0 / 60.0,
    end_min: float = 10.0,
    k2_grid: ArrayLike | None = None,
    chunk: int = 256,
) -> DelayFit:
    """Fit the input delay per curve with a 1TCM + v_B on the early frames.

    For every candidate delay on a grid of step ``step_min`` and every ``k2``
    on a grid, the model ``(1 - v_B) K1 (C_P * exp(-k2 t)) + v_B C_B`` is
    linear in ``(1 - v_B) K1`` and ``v_B`` and solved exactly (weighted least
    squares, frame averages from the exact kernel); the best admissible
    solution (``K1 >= 0``, ``0 <= v_B < 1``) starts a Levenberg-Marquardt
    refinement of ``(1 - v_B) K1, k2, v_B`` and the delay together, the input
    being shifted on a uniform grid of step ``step_min``. The delay is
    reported rounded to that step.

    Parameters
    ----------
    inp : InputFunction
        Input before the delay.
    timing : FrameTiming
        Frames of the curves.
    tacs : array_like, shape (..., n_frames)
        Tissue curves (kBq/mL).
    weights : array_like, optional
        Frame weights (broadcast to ``tacs``); default uniform.
    search_min : (float, float)
        Range of delays tried (min).
    step_min : float
        Grid step (min); default 1 s.
    end_min : float
        Only frames ending by this time (min) are used.
    k2_grid : array_like, optional
        k2 values (1/min); default 40 values log-spaced over 0.005-3.
    chunk : int
        Curves fitted together; larger batches are fitted block by block,
        which bounds the memory (about 0.35 MB per curve in a block) and
        gives the same result.

    Returns
    -------
    DelayFit

    Raises
    ------
    ModelError
        Fewer than three frames end by ``end_min``.

    Notes
    -----
    The refinement re-interpolates the shifted input for every curve at
    every iteration: 35-70 curves/s on a shared 2-core machine. Fine for
    regions; for voxel maps fit the delay on a region curve and pass it on.
    """
    y = np.asarray(tacs, dtype=float)
    batch = y.shape[:-1]
    y2 = y.reshape(-1, y.shape[-1])
    if y2.shape[0] > chunk:
        w_all = np.ones(y.shape[-1]) if weights is None else np.asarray(weights, dtype=float)
        w_all = np.broadcast_to(w_all, y.shape).reshape(y2.shape)
        parts = [fit_delay_previous(inp, timing, y2[i:i + chunk], weights=w_all[i:i + chunk],
                           search_min=search_min, step_min=step_min, end_min=end_min,
                           k2_grid=k2_grid, chunk=chunk)
                 for i in range(0, y2.shape[0], chunk)]

        def joined(name: str) -> NDArray:
            return np.concatenate([getattr(p, name) for p in parts]).reshape(batch)

        wrss = np.concatenate([p.wrss for p in parts])
        return DelayFit(joined("delay"), wrss.reshape(batch + wrss.shape[-1:]),
                        parts[0].candidates, step_min, vb=joined("vb"), k1=joined("k1"),
                        k2=joined("k2"))
    use = timing.end <= end_min + TIME_TOL_MIN
    if use.sum() < 3:
        raise ModelError(f"only {int(use.sum())} frames end by {end_min:g} min",
                         field="end_min", fix="raise the delay-fit window end")
    sub = timing.subset(use)
    w = np.ones(y.shape[-1]) if weights is None else np.asarray(weights, dtype=float)
    w2 = np.broadcast_to(w, y.shape).reshape(-1, y.shape[-1])[:, use]
    y2 = y2[:, use]
    coarse = 4.0 * step_min  # the grid search; the refinement reaches step_min
    lo_m = int(np.floor(search_min[0] / coarse + 1e-9))
    hi_m = int(np.ceil(search_min[1] / coarse - 1e-9))
    d = np.arange(lo_m, hi_m + 1) * coarse
    t_end = float(sub.end[-1])
    tau = np.arange(0.0, t_end + step_min, step_min)
    shifted = tau[None, :] - d[:, None]
    cp = np.where(shifted >= 0, inp.plasma.interp(np.maximum(shifted, 0)), 0.0)
    cb = np.where(shifted >= 0, inp.blood.interp(np.maximum(shifted, 0)), 0.0)
    k2 = np.geomspace(0.005, 3.0, 40) if k2_grid is None else np.asarray(k2_grid, float)
    e = PiecewiseLinear(tau, cp[:, None, :]).exp_conv_frame_means(k2, sub)  # (D, G, F)
    b = PiecewiseLinear(tau, cb).frame_means(sub)  # (D, F)
    # normal equations per (curve, delay, k2)
    wy = w2 * y2
    s_ee = np.einsum("dgf,nf,dgf->ndg", e, w2, e)
    s_eb = np.einsum("dgf,nf,df->ndg", e, w2, b)
    s_bb = np.einsum("df,nf,df->nd", b, w2, b)[..., None]
    s_ey = np.einsum("dgf,nf->ndg", e, wy)
    s_by = np.einsum("df,nf->nd", b, wy)[..., None]
    det = s_ee * s_bb - s_eb**2
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (s_ey * s_bb - s_eb * s_by) / det
        v = (s_ee * s_by - s_eb * s_ey) / det
    yy = np.sum(w2 * y2 * y2, axis=-1)[:, None, None]
    wrss = yy - 2 * (a * s_ey + v * s_by) + a * a * s_ee + 2 * a * v * s_eb + v * v * s_bb
    ok = np.isfinite(wrss) & (a >= 0) & (v >= 0) & (v < 1) & (det > 0)
    wrss = np.where(ok, wrss, np.inf)
    best_d = np.min(wrss, axis=-1)  # (N, D)
    n_c = y2.shape[0]
    flat = np.argmin(wrss.reshape(n_c, -1), axis=-1)
    i_d, i_g = np.unravel_index(flat, wrss.shape[1:])
    rows = np.arange(n_c)
    p0 = np.stack([np.nan_to_num(a[rows, i_d, i_g], nan=0.1), k2[i_g],
                   np.clip(np.nan_to_num(v[rows, i_d, i_g], nan=0.05), 0.0, 0.89),
                   d[i_d]], axis=-1)

    def predict(p: NDArray, idx: NDArray) -> NDArray:
        shift = tau - p[..., 3:4]
        cpd = np.where(shift >= 0, inp.plasma.interp(np.maximum(shift, 0.0)), 0.0)
        cbd = np.where(shift >= 0, inp.blood.interp(np.maximum(shift, 0.0)), 0.0)
        conv = PiecewiseLinear(tau, cpd).exp_conv_frame_means(p[..., 1], sub)
        return p[..., 0:1] * conv + p[..., 2:3] * PiecewiseLinear(tau, cbd).frame_means(sub)

    with np.errstate(all="ignore"):
        res = levenberg_marquardt(predict, y2, p0, weights=w2,
                                  lower=[0.0, 1e-4, 0.0, d[0]], upper=[np.inf, 10.0, 0.9, d[-1]])
    better = np.isfinite(res.wrss) & (res.wrss <= np.min(best_d, axis=-1) * (1 + 1e-9))
    best = np.where(better[:, None], res.params, p0)  # (1 - vB) K1, k2, vB, delay
    delay = np.round(best[:, 3] / step_min) * step_min + 0.0
    vb = best[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        k1 = best[:, 0] / (1.0 - vb)
    return DelayFit(delay.reshape(batch), best_d.reshape(batch + (d.size,)), d, step_min,
                    vb=vb.reshape(batch), k1=k1.reshape(batch), k2=best[:, 1].reshape(batch))
