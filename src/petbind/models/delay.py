"""The input-delay pre-fit: a one-tissue model + v_B on the early frames, over delays.

The arterial input reaches the brain a few seconds after the sampling site;
the plasma models take that delay given or ``"fit"``, and the graphical
methods can take v_B from the same early-frame fit. It lives here, beside the
compartment models, so that :mod:`petbind.blood` holds no kinetic fit and
imports nothing from :mod:`petbind.models`.

The fit is the compartment models' own one-tissue engine
(:data:`petbind.models.kinetics.ONE_TISSUE`), not a second 1TCM: the
candidate delays are put on the batch axis (one shifted copy of the input per
candidate, a bank of inputs with a row -> input index), every (curve, delay)
pair is fitted in one batched call, the weighted SSE profile over the
candidates locates the best, and a parabola through it and its neighbours
refines the delay between candidates.

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
from petbind.models.kinetics import ONE_TISSUE
from petbind.numerics.convolution import PiecewiseLinear
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
        Weighted residual sum of squares of the one-tissue fit at each
        candidate delay (the profile the delay is refined on).
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


def _bank(inp: InputFunction, tau: NDArray, delays: NDArray, sub: FrameTiming
          ) -> tuple[PiecewiseLinear, NDArray]:
    """The input shifted by each delay on the uniform grid ``tau``: plasma bank and C_B means."""
    shifted = tau[None, :] - delays[:, None]
    late = np.maximum(shifted, 0.0)
    cp = np.where(shifted >= 0, inp.plasma.interp(late), 0.0)
    cb = np.where(shifted >= 0, inp.blood.interp(late), 0.0)
    return PiecewiseLinear(tau, cp), PiecewiseLinear(tau, cb).frame_means(sub)


def _fine_stage(inp: InputFunction, tau: NDArray, sub: FrameTiming, y2: NDArray,
                w2: NDArray, d: NDArray, step_min: float, best: NDArray, centre: NDArray,
                max_iter: int, max_moves: int = 8) -> tuple[NDArray, NDArray]:
    """The step of least weighted SSE near ``centre`` (in steps), descending step by step.

    Each round fits, in one batched call, every still-moving curve at the steps
    ``centre - 1, centre, centre + 1`` (from ``best``); a curve whose least
    SSE is at an end of its three (and not at the end of the search range)
    moves its centre there and goes again. Returns the delay (min) and the
    parameters ``K1, k2, v_B`` at it (``best`` where no fit is finite).
    """
    n_c = y2.shape[0]
    lo, hi = round(d[0] / step_min), round(d[-1] / step_min)
    centre = np.clip(centre, lo, hi)
    delay = np.full(n_c, np.nan)
    out = best.copy()
    active = np.arange(n_c)
    offsets = np.array([-1.0, 0.0, 1.0])
    for _ in range(max_moves):
        if active.size == 0:
            break
        n_a = active.size
        steps = np.clip(centre[active][None, :] + offsets[:, None], lo, hi)  # (3, n_a)
        uniq, inv = np.unique(steps * step_min + 0.0, return_inverse=True)
        plasma, cb = _bank(inp, tau, uniq, sub)
        fin = ONE_TISSUE.fit(plasma, cb, sub, np.tile(y2[active], (3, 1)),
                             np.tile(w2[active], (3, 1)), None,
                             p0=np.tile(best[active], (3, 1)), group=inv.ravel(),
                             max_iter=max_iter, final=False)
        wf = np.where(np.isfinite(fin.wrss), fin.wrss, np.inf).reshape(3, n_a)
        k = np.argmin(wf, axis=0)
        cols = np.arange(n_a)
        found = np.isfinite(wf[k, cols])
        at = steps[k, cols]
        moving = found & (k != 1) & (at != centre[active])
        done = ~moving
        rows = active[done]
        delay[rows] = np.where(found[done], at[done] * step_min, np.nan)
        take = found[done]
        out[rows[take]] = fin.params.reshape(3, n_a, -1)[k[done][take], cols[done][take]]
        centre[active[moving]] = at[moving]
        active = active[moving]
    if active.size:  # still descending after max_moves: keep the last centre
        delay[active] = centre[active] * step_min
    return delay, out


def fit_delay(
    inp: InputFunction,
    timing: FrameTiming,
    tacs: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    search_min: tuple[float, float] = (-1.0, 1.0),
    step_min: float = 1.0 / 60.0,
    end_min: float = 10.0,
    chunk: int = 256,
    max_iter: int = 60,
    coarse_iter: int = 6,
) -> DelayFit:
    """Fit the input delay per curve with a 1TCM + v_B on the early frames.

    The model ``(1 - v_B) K1 (C_P(t - d) * exp(-k2 t)) + v_B C_B(t - d)`` is
    fitted by the one-tissue engine of the compartment models
    (:meth:`petbind.models.kinetics.TissueKinetics.fit`: basis-function start,
    then bounded Levenberg-Marquardt of ``K1, k2, v_B``) at every candidate
    delay ``d`` of a grid of step ``4 step_min`` over ``search_min``, all
    (curve, candidate) pairs in one batched call, each candidate with its own
    shifted input (on a uniform grid of step ``step_min``). Per curve the
    candidate of least weighted SSE and its two neighbours give a parabola
    whose vertex is near the delay; the model is then fitted, from the best
    candidate's parameters, at the step of ``step_min`` nearest that vertex
    and the steps either side (one batched call), moving step by step while
    the least SSE is at an end of the three: the delay is the step of least
    weighted SSE, with v_B, K1 and k2 of the fit there.

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
    chunk : int
        Curves fitted together; larger batches are fitted block by block,
        which bounds the memory and gives the same result.
    max_iter : int
        Iteration limit of the Levenberg-Marquardt fits of the fine stage.
    coarse_iter : int
        Iteration limit at the candidates when there are several: enough to
        rank them (the fine stage starts from the best and iterates to
        convergence). A single candidate (``search_min`` one delay) is fitted
        with ``max_iter``.

    Returns
    -------
    DelayFit

    Raises
    ------
    ModelError
        Fewer than three frames end by ``end_min``.
    """
    y = np.asarray(tacs, dtype=float)
    batch = y.shape[:-1]
    y2 = y.reshape(-1, y.shape[-1])
    if y2.shape[0] > chunk:
        w_all = np.ones(y.shape[-1]) if weights is None else np.asarray(weights, dtype=float)
        w_all = np.broadcast_to(w_all, y.shape).reshape(y2.shape)
        parts = [fit_delay(inp, timing, y2[i:i + chunk], weights=w_all[i:i + chunk],
                           search_min=search_min, step_min=step_min, end_min=end_min,
                           chunk=chunk, max_iter=max_iter, coarse_iter=coarse_iter)
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
    n_c = y2.shape[0]
    coarse = 4.0 * step_min
    lo_m = int(np.floor(search_min[0] / coarse + 1e-9))
    hi_m = int(np.ceil(search_min[1] / coarse - 1e-9))
    d = np.arange(lo_m, hi_m + 1) * coarse + 0.0
    n_d = d.size
    tau = np.arange(0.0, float(sub.end[-1]) + step_min, step_min)
    # every (candidate, curve) pair in one batched fit: candidate-major rows
    plasma, cb = _bank(inp, tau, d, sub)
    group = np.repeat(np.arange(n_d), n_c)
    res = ONE_TISSUE.fit(plasma, cb, sub, np.tile(y2, (n_d, 1)), np.tile(w2, (n_d, 1)), None,
                         group=group, max_iter=coarse_iter if n_d > 1 else max_iter,
                         final=False)  # one candidate (a given delay): fitted to convergence
    profile = res.wrss.reshape(n_d, n_c).T  # (N, D)
    prof = np.where(np.isfinite(profile), profile, np.inf)
    i = np.argmin(prof, axis=-1)
    rows = np.arange(n_c)
    # parabola through the best candidate and its neighbours (inside the grid)
    j = np.clip(i, 1, max(n_d - 2, 1)) if n_d >= 3 else i
    shift = np.zeros(n_c)
    if n_d >= 3:
        f0, f1, f2 = prof[rows, j - 1], prof[rows, j], prof[rows, j + 1]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            curv = f0 - 2.0 * f1 + f2
            vertex = 0.5 * (f0 - f2) / curv  # in candidate steps, from j
            ok = np.isfinite(vertex) & (curv > 0)
            shift = np.where(ok, np.clip(j + np.where(ok, vertex, 0.0), 0, n_d - 1) - i, 0.0)
    best = res.params.reshape(n_d, n_c, -1)[i, rows]  # K1, k2, vB of the best candidate
    delay = d[i]
    if n_d > 1:
        delay, best = _fine_stage(inp, tau, sub, y2, w2, d, step_min, best,
                                  np.round((d[i] + shift * coarse) / step_min), max_iter)
    delay = np.round(np.asarray(delay) / step_min) * step_min + 0.0
    return DelayFit(delay.reshape(batch), profile.reshape(batch + (n_d,)), d, step_min,
                    vb=best[:, 2].reshape(batch), k1=best[:, 0].reshape(batch),
                    k2=best[:, 1].reshape(batch))
