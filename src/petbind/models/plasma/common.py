"""What every plasma-input model shares: settings, the input, the delay / v_B pre-fit.

Split from the former ``petbind/models/plasma.py`` (see :mod:`petbind.models.plasma`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.blood import InputFunction
from petbind.errors import ModelError
from petbind.models.base import Model
from petbind.models.delay import DelayFit, fit_delay
from petbind.models.weights import frame_weights, window_mask
from petbind.numerics.convolution import PiecewiseLinear
from petbind.timing import TIME_TOL_MIN, FrameTiming


# ----------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------
def _is_fit(value: Any) -> bool:
    return isinstance(value, str) and value == "fit"


def _as_input(blood: Any) -> InputFunction:
    if isinstance(blood, InputFunction):
        return blood
    raise ModelError(f"plasma models need a petbind.blood.InputFunction, got "
                     f"{type(blood).__name__}", field="blood",
                     fix="build it with petbind.blood.build_input_function")


def plasma_frame_terms(curve: PiecewiseLinear, timing: FrameTiming
                       ) -> tuple[NDArray, NDArray]:
    """Exact frame means of ``C`` and of its running integral ``int_0^t C``.

    Parameters
    ----------
    curve : PiecewiseLinear
        A (batch of) piecewise-linear curve(s), kBq/mL.
    timing : FrameTiming
        Frames.

    Returns
    -------
    mean_c : ndarray, shape (..., n_frames)
        ``(1/d_i) int_{a_i}^{b_i} C`` (kBq/mL).
    mean_int : ndarray, shape (..., n_frames)
        ``(1/d_i) int_{a_i}^{b_i} int_0^t C(s) ds dt`` (kBq/mL min), exact for
        the piecewise-linear curve.
    """
    n = timing.n_frames
    edges = np.concatenate([timing.start, timing.end])
    tt = np.union1d(np.union1d(curve.t, edges), [0.0])
    yy = curve.interp(tt)
    h = np.diff(tt)
    seg = 0.5 * (yy[..., 1:] + yy[..., :-1]) * h
    zero = np.zeros(yy.shape[:-1] + (1,))
    cum = np.concatenate([zero, np.cumsum(seg, axis=-1)], axis=-1)
    seg2 = cum[..., :-1] * h + h * h * (yy[..., :-1] / 3.0 + yy[..., 1:] / 6.0)
    cum2 = np.concatenate([zero, np.cumsum(seg2, axis=-1)], axis=-1)
    ie = np.searchsorted(tt, edges)
    c1 = cum[..., ie]
    c2 = cum2[..., ie]
    d = timing.duration
    return (c1[..., n:] - c1[..., :n]) / d, (c2[..., n:] - c2[..., :n]) / d


def _delta_se(func: Callable[[NDArray], NDArray], p: NDArray, cov: NDArray) -> NDArray:
    """Standard error of ``func(p)`` by the delta method (numerical gradient)."""
    n_p = p.shape[-1]
    f0 = func(p)
    grad = np.empty(p.shape)
    for k in range(n_p):
        h = 1e-6 * np.maximum(np.abs(p[..., k]), 1e-6)
        q = p.copy()
        q[..., k] += h
        grad[..., k] = (func(q) - f0) / h
    var = np.einsum("bp,bpq,bq->b", grad, cov, grad)
    return np.sqrt(np.where(var >= 0, var, np.nan))


class _PlasmaModelBase(Model):
    """Settings shared by every plasma-input model (stored and checked, not processed).

    ``vb`` and ``delay`` are numbers or ``"fit"``; what ``"fit"`` means is
    the subclass's (the compartment models fit v_B with the rates; every
    model takes a fitted delay, and the graphical methods a fitted v_B, from
    the early-frame 1TCM pre-fit :meth:`_prefit`).
    """

    name = ""

    def __init__(
        self,
        timing: FrameTiming,
        blood: InputFunction,
        *,
        weights: str | ArrayLike | None = None,
        start: float | None = None,
        end: float | None = None,
        isotope: Any = None,
        vb: float | str = 0.0,
        delay: float | str = 0.0,
        delay_search_min: tuple[float, float] = (-1.0, 1.0),
        delay_step_min: float = 1.0 / 60.0,
        delay_end_min: float = 10.0,
        check_blood: bool = True,
        **unused: Any,
    ) -> None:
        if unused:
            raise ModelError(f"model {self.name} does not take {', '.join(sorted(unused))}",
                             field=sorted(unused)[0], fix="drop the option")
        if not (_is_fit(vb) or (isinstance(vb, int | float) and 0 <= vb < 1)):
            raise ModelError(f"vb must be 'fit' or a number in [0, 1), got {vb!r}",
                             field="vb", fix="e.g. --vb 0.05 or --vb fit")
        if not (_is_fit(delay) or (isinstance(delay, int | float) and np.isfinite(delay))):
            raise ModelError(f"delay must be 'fit' or minutes, got {delay!r}", field="delay",
                             fix="e.g. --delay 0.1 or --delay fit")
        self.timing = timing
        self.blood = _as_input(blood)
        self.weights = weights
        self.start = start
        self.end = end
        self.isotope = isotope
        self.vb = vb
        self.delay = delay
        self.delay_search_min = delay_search_min
        self.delay_step_min = delay_step_min
        self.delay_end_min = delay_end_min
        self.check_blood = check_blood

    def _prefit(self, y2: NDArray, w2: NDArray, *, fit_delay_too: bool) -> DelayFit:
        """The early-frame 1TCM + v_B fit of :func:`petbind.models.delay.fit_delay`.

        With ``fit_delay_too`` the delay is searched over ``delay_search_min``;
        otherwise it is held at the model's given delay (and only v_B, K1, k2
        are fitted). Frames with zero weight (outside the window) are not
        used; fewer than three weighted frames ending by ``delay_end_min`` is
        an error (curves with a non-finite frame, invalid anyway, aside).
        """
        finite = np.all(np.isfinite(y2), axis=-1)
        early = self.timing.end <= self.delay_end_min + TIME_TOL_MIN
        n_early = np.sum(w2[finite][:, early] > 0, axis=-1)
        if n_early.size and np.any(n_early < 3):
            raise ModelError(f"model {self.name}: the fit window leaves "
                             f"{int(np.min(n_early))} weighted frames ending by "
                             f"{self.delay_end_min:g} min for the delay / v_B pre-fit",
                             field="delay" if _is_fit(self.delay) else "vb",
                             fix="start the fit window earlier, or give the delay and vb")
        y2 = np.where(np.isfinite(y2), y2, 0.0)
        if fit_delay_too:
            return fit_delay(self.blood, self.timing, y2, weights=w2,
                             search_min=self.delay_search_min, step_min=self.delay_step_min,
                             end_min=self.delay_end_min)
        res = fit_delay(self.blood.shifted(float(self.delay)), self.timing, y2, weights=w2,
                        search_min=(0.0, 0.0), step_min=self.delay_step_min,
                        end_min=self.delay_end_min)
        return replace(res, delay=res.delay + float(self.delay),
                       candidates=res.candidates + float(self.delay))

    def _window(self, min_frames: int) -> NDArray[np.bool_]:
        m = window_mask(self.timing, self.start, self.end, min_frames=min_frames)
        if self.check_blood:
            last = self.timing.subset(m)
            self.blood.check_covers(last)
        return m

    def _weights(self, y: NDArray, weights: Any, window: NDArray) -> NDArray:
        scheme = self.weights if weights is None else weights
        curve = None
        if isinstance(scheme, str) and scheme == "counts":
            flat = y.reshape(-1, y.shape[-1])
            n_ok = np.sum(np.isfinite(flat), axis=0)
            curve = np.nansum(flat, axis=0) / np.maximum(n_ok, 1)
        return np.broadcast_to(frame_weights(scheme, self.timing, curve=curve,
                                             isotope=self.isotope, window=window), y.shape)

    def _prepare(self, tacs: ArrayLike, weights: Any, min_frames: int
                 ) -> tuple[NDArray, NDArray, NDArray, NDArray]:
        """Checked curves, flattened to (B, F), the fit window and frame weights.

        Returns ``(y, y2, window, w2)``: ``y`` as given (float), ``y2`` shaped
        (B, n_frames), the window mask (n_frames,) and writable weights (B,
        n_frames). Raises DataError when the curves do not match the frames
        (as every model) and ModelError when the window holds fewer than
        ``min_frames`` frames.
        """
        y = self._curves(tacs)
        y2 = y.reshape(-1, y.shape[-1])
        win = self._window(min_frames=min_frames)
        return y, y2, win, np.array(self._weights(y2, weights, win))

    def _base_settings(self) -> dict[str, Any]:
        return {"model": self.name, "start_min": self.start, "end_min": self.end,
                "weights": self.weights if isinstance(self.weights, str | None)
                else "user", "isotope": str(self.isotope) if self.isotope else None,
                "blood": dict(self.blood.settings), "blood_source": self.blood.source}


