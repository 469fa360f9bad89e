"""The input-delay pre-fit: the one-tissue compartment model on the early frames, over delays.

The arterial input reaches the brain a few seconds after the sampling site;
the plasma models take that delay given or ``"fit"``, and the graphical
methods can take v_B from the same early-frame fit. This module fits it with
the compartment machinery of :class:`petbind.models.plasma.OneTCM` (1TCM +
v_B: its basis-function start, its bounds and its batched Levenberg-Marquardt)
evaluated over a grid of delays - not a second one-tissue model.

References
----------
Gunn RN, Gunn SR, Cunningham VJ. Positron emission tomography compartmental
models. J Cereb Blood Flow Metab 2001;21:635-652.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.errors import ModelError
from petbind.timing import TIME_TOL_MIN, FrameTiming

if TYPE_CHECKING:
    from petbind.blood import InputFunction

__all__ = ["DelayFit", "fit_delay"]


@dataclass
class DelayFit:
    """Delays fitted by :func:`fit_delay`.

    Attributes
    ----------
    delay : ndarray, batch shape
        Delay (min) per curve, a multiple of ``step_min``.
    wrss : ndarray, shape batch + (n_delays,)
        Best weighted residual sum of squares at each candidate delay of the
        grid search (before refinement).
    candidates : ndarray, shape (n_delays,)
        Delays tried by the grid search (min), every ``4 step_min``.
    step_min : float
        Grid step (min).
    vb : ndarray, batch shape, optional
        Blood volume fraction of the same early-frame 1TCM + v_B fit, at the
        fitted delay.
    k1, k2 : ndarray, batch shape, optional
        ``K1`` (mL/cm3/min) and ``k2`` (1/min) of that fit.
    """

    delay: NDArray
    wrss: NDArray
    candidates: NDArray
    step_min: float
    vb: NDArray | None = None
    k1: NDArray | None = None
    k2: NDArray | None = None


def fit_delay(
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
    """Fit the input delay per curve with the 1TCM + v_B on the early frames.

    :class:`~petbind.models.plasma.OneTCM` (v_B fitted; ``K1``, ``k2``, ``v_B``
    in their box bounds) is evaluated, batched over the curves, at every
    candidate delay of a grid of step ``4 step_min`` over ``search_min`` by
    its basis-function solution (linear: one weighted least-squares solve per
    rate of its grid); at the best candidate and at every step of
    ``step_min`` up to the neighbouring candidates its Levenberg-Marquardt fit
    (started from the candidate's solution) then picks the delay of least
    weighted residual sum of squares. Only frames ending by ``end_min`` are
    used.

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
        Resolution of the delay (min); default 1 s.
    end_min : float
        Only frames ending by this time (min) are used.
    k2_grid : array_like, optional
        k2 values (1/min) of the basis-function start; default the 1TCM's own
        grid (:attr:`OneTCM.grid`).
    chunk : int
        Curves fitted together; larger batches are fitted block by block
        (same result, bounded memory).

    Returns
    -------
    DelayFit

    Raises
    ------
    ModelError
        Fewer than three frames end by ``end_min``.

    Notes
    -----
    Nine batched 1TCM fits per distinct coarse optimum: meant for region
    curves (seconds for a table); for voxel maps fit the delay on a region
    curve and pass it on.
    """
    from petbind.models.plasma import OneTCM

    y = np.asarray(tacs, dtype=float)
    batch = y.shape[:-1]
    y2 = y.reshape(-1, y.shape[-1])
    w_all = np.ones(y.shape[-1]) if weights is None else np.asarray(weights, dtype=float)
    w_all = np.broadcast_to(w_all, y.shape).reshape(y2.shape)
    if y2.shape[0] > chunk:
        parts = [fit_delay(inp, timing, y2[i:i + chunk], weights=w_all[i:i + chunk],
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
    w2 = np.ascontiguousarray(w_all[:, use])
    y2 = np.ascontiguousarray(y2[:, use])
    model = OneTCM(sub, inp, vb="fit", check_blood=False)
    if k2_grid is not None:
        model.grid = np.asarray(k2_grid, dtype=float)
    coarse = 4.0 * step_min
    lo_m = int(np.floor(search_min[0] / coarse + 1e-9))
    hi_m = int(np.ceil(search_min[1] / coarse - 1e-9))
    d = np.arange(lo_m, hi_m + 1) * coarse + 0.0
    n_c = y2.shape[0]
    wrss = np.full((n_c, d.size), np.inf)
    params = np.full((n_c, d.size, 3), np.nan)  # k1, k2, vb
    with np.errstate(all="ignore"):
        # coarse: the model's basis-function solution at every candidate delay (linear)
        for j, dj in enumerate(d):
            inp_d = inp.shifted(float(dj))
            cb = inp_d.blood.frame_means(sub)
            p = model._start_values(inp_d, cb, y2, w2)
            r = y2 - model._predict(inp_d, cb, p)
            wj = np.sum(w2 * r * r, axis=-1)
            wrss[:, j] = np.where(np.isfinite(wj), wj, np.inf)
            params[:, j] = p
    rows = np.arange(n_c)
    j_best = np.argmin(wrss, axis=-1)
    start = params[rows, j_best]
    best_p = np.full_like(start, np.nan)
    best_w = np.full(n_c, np.inf)
    delay = d[j_best].copy()
    lo, hi = float(d[0]), float(d[-1])
    with np.errstate(all="ignore"):
        # fine: the model's Levenberg-Marquardt at the coarse optimum and at every step
        # up to the neighbouring candidates, each started from the coarse solution
        for k in (0, -1, 1, -2, 2, -3, 3, -4, 4):
            trial = np.round((d[j_best] + k * step_min) / step_min) * step_min + 0.0
            ok = (trial >= lo - 1e-12) & (trial <= hi + 1e-12) & np.all(np.isfinite(start), -1)
            for val in np.unique(trial[ok]):
                sel = np.flatnonzero(ok & (trial == val))
                res = model._fit_group(inp.shifted(float(val)), y2[sel], w2[sel],
                                       p0=start[sel])
                take = np.isfinite(res.wrss) & (res.wrss < best_w[sel]) \
                    & np.all(np.isfinite(res.params), axis=-1)
                sel = sel[take]
                best_w[sel] = res.wrss[take]
                best_p[sel] = res.params[take]
                delay[sel] = val
    unfit = ~np.isfinite(best_w)  # no LM solution: keep the coarse one
    best_p[unfit] = start[unfit]
    delay = np.round(delay / step_min) * step_min + 0.0
    return DelayFit(delay.reshape(batch), wrss.reshape(batch + (d.size,)), d, step_min,
                    vb=best_p[:, 2].reshape(batch), k1=best_p[:, 0].reshape(batch),
                    k2=best_p[:, 1].reshape(batch))
