"""Plasma-input graphical methods: Logan (plasma), Patlak, MA1 (t* given or by max error).

See :mod:`petbind.models.plasma` for the equations.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.blood import InputFunction
from petbind.models.base import Fit, judge
from petbind.models.kinetics import weighted_lstsq as _weighted_lstsq
from petbind.models.plasma.common import _is_fit, _PlasmaModelBase, plasma_frame_terms
from petbind.numerics.convolution import running_integral_frame_means
from petbind.timing import TIME_TOL_MIN, FrameTiming


# ----------------------------------------------------------------------------
# graphical methods
# ----------------------------------------------------------------------------
class _GraphicalModel(_PlasmaModelBase):
    """Shared machinery of Logan plasma, Patlak and MA1.

    Parameters
    ----------
    timing : FrameTiming
        Frames (minutes).
    blood : InputFunction
        Arterial input.
    tstar : float, optional
        Start (min) of the linear phase: frames starting at or after it are
        fitted. ``None`` chooses it per curve: the earliest frame start from
        which every fitted point lies within ``max_error`` (relative) of the
        regression line, with at least ``min_points`` frames (the max-error
        rule of PMOD and kinfitr); if no start qualifies, the one with the
        smallest maximum error.
    max_error : float
        Tolerance of the automatic t* rule (default 0.1).
    min_points : int
        Fewest frames in the linear phase (default 3).
    max_err, min_frames
        Deprecated names of ``max_error`` and ``min_points`` (the reference
        Logan's names, now shared).
    vb : float or "fit"
        Blood volume fraction; the tissue curve is taken as
        ``(C_PET - v_B C_B) / (1 - v_B)`` (default 0: no correction).
        ``"fit"`` takes v_B per curve from the early-frame 1TCM + v_B pre-fit
        of :func:`petbind.models.delay.fit_delay` (frames ending by
        ``delay_end_min``), reported as the parameter ``vb``.
    delay : float or "fit"
        Input delay (min) applied before fitting, or ``"fit"``: per curve,
        from the same pre-fit (a grid over ``delay_search_min`` with step
        ``delay_step_min``), reported as the parameter ``delay``. Curves
        with different delays get their own shifted input, in one batched
        regression.
    delay_search_min, delay_step_min, delay_end_min
        The pre-fit's settings, as for :class:`OneTCM`.
    weights, start, end, isotope
        As for :class:`OneTCM`.

    Notes
    -----
    The pre-fit assumes one tissue compartment over its frames. For a curve
    with two-tissue kinetics its v_B is biased upwards and its delay 1-2 s
    late (on the Feng input with K1 = 0.2-0.5, k3 = 0.03-0.2 /min: v_B
    +0.003 to +0.027 for a true 0.05, V_T +0.2 to +1.8 %), less than
    ignoring delay and v_B (V_T 2-6 % low on those curves). It also doubles
    the CV of V_T at region-like noise, and at voxel-like noise a delay and
    v_B fitted on a region serve better (docs/plasma.md). Its delay is that
    of the compartment models' ``delay="fit"`` before their refinement. The
    standard errors of the graphical outcome do not include the pre-fit's
    uncertainty.
    """

    n_coef = 2
    coef_names: tuple[str, str] = ("", "")

    def __init__(self, timing: FrameTiming, blood: InputFunction, *,
                 tstar: float | None = None, max_error: float = 0.1, min_points: int = 3,
                 vb: float | str = 0.0, max_err: float | None = None,
                 min_frames: int | None = None, **kw: Any) -> None:
        # max_err / min_frames: the names before the reference Logan's were adopted
        for old, new, value in (("max_err", "max_error", max_err),
                                ("min_frames", "min_points", min_frames)):
            if value is not None:
                warnings.warn(f"{old}= is deprecated, use {new}=", DeprecationWarning,
                              stacklevel=2)
        max_error = max_error if max_err is None else max_err
        min_points = min_points if min_frames is None else min_frames
        super().__init__(timing, blood, vb=vb, **kw)
        self.tstar = tstar
        self.max_error = float(max_error)
        self.min_points = int(min_points)
        self.vb = vb if _is_fit(vb) else float(vb)

    def _delay_and_vb(self, y2: NDArray, w2: NDArray) -> tuple[NDArray, NDArray]:
        """Per-curve delay (min) and v_B: given, or from the pre-fit."""
        n_b = y2.shape[0]
        fit_d, fit_v = _is_fit(self.delay), _is_fit(self.vb)
        delay = np.full(n_b, 0.0 if fit_d else float(self.delay))
        vb = np.full(n_b, 0.0 if fit_v else float(self.vb))
        if fit_d or fit_v:
            pre = self._prefit(y2, np.where(np.isfinite(y2), w2, 0.0), fit_delay_too=fit_d)
            delay = pre.delay if fit_d else delay
            vb = pre.vb if fit_v else vb
        return delay, vb

    def _input_terms(self, delays: NDArray) -> tuple[NDArray, NDArray, NDArray]:
        """Frame means of ``C_P``, ``int C_P`` and ``C_B`` (each (B, F)) for per-curve delays."""
        uniq, inv = np.unique(delays, return_inverse=True)
        cp, icp, cb = [], [], []
        for d in uniq:
            inp = self.blood.shifted(float(d))
            c, ic = plasma_frame_terms(inp.plasma, self.timing)
            cp.append(c)
            icp.append(ic)
            cb.append(inp.blood.frame_means(self.timing))
        shape = (delays.size, self.timing.n_frames)
        if uniq.size == 1:
            return tuple(np.broadcast_to(a[0], shape) for a in (cp, icp, cb))
        return tuple(np.stack(a)[inv.ravel()] for a in (cp, icp, cb))

    def _design(self, ct: NDArray, ict: NDArray, cp: NDArray, icp: NDArray
                ) -> tuple[NDArray, NDArray]:
        """(x (B, F, 2), target (B, F)) of the operational equation."""
        raise NotImplementedError

    def _outcomes(self, beta: NDArray, cov: NDArray) -> tuple[dict, dict]:
        raise NotImplementedError

    def _tissue_fit(self, beta: NDArray, ct: NDArray, ict: NDArray, cp: NDArray,
                    icp: NDArray) -> NDArray:
        raise NotImplementedError

    def fit(self, tacs: ArrayLike, weights: Any = None) -> Fit:
        """Fit a batch of tissue curves (see the class docstring).

        Returns
        -------
        Fit
            ``params`` with the outcome (``vt`` or ``ki``), the other
            regression coefficient, and ``tstar`` (min); ``extra`` holds the
            plot coordinates ``x``, ``y`` and the line ``y_fit`` (NaN off the
            linear phase).
        """
        y, y2, _, w2 = self._prepare(tacs, weights, min_frames=self.min_points)
        batch = y.shape[:-1]
        n_b = y2.shape[0]
        delays, vbs = self._delay_and_vb(y2, w2)
        cp, icp, cb = self._input_terms(delays)
        vb = vbs[:, None]
        finite = np.all(np.isfinite(y2), axis=-1)
        ct = (np.where(np.isfinite(y2), y2, 0.0) - vb * cb) / (1.0 - vb)
        ict = ct @ running_integral_frame_means(self.timing).T
        with np.errstate(divide="ignore", invalid="ignore"):
            x, target = self._design(ct, ict, cp, icp)
        usable = np.isfinite(target) & np.all(np.isfinite(x), axis=-1)
        base_w = np.where(usable, w2, 0.0)
        if self.tstar is not None:
            cand = self.timing.start >= self.tstar - TIME_TOL_MIN
            wsel = np.where(cand, base_w, 0.0)
            beta, cov, _ = _weighted_lstsq(x, target, wsel)
            tstar = np.full(n_b, float(self.tstar))
        else:
            beta, cov, wsel, tstar = self._auto_tstar(x, target, base_w)
        enough = np.sum(wsel > 0, axis=-1) >= self.min_points
        n_prefit = int(_is_fit(self.vb)) + int(_is_fit(self.delay))
        judged = {"usable": finite, "solved": enough & np.all(np.isfinite(beta), axis=-1),
                  "n_used": np.sum(wsel > 0, axis=-1), "n_params": self.n_coef + n_prefit}
        valid = judge(**judged)[0]
        out, se = self._outcomes(beta, cov)
        out["tstar"] = tstar
        if _is_fit(self.vb):
            out["vb"] = vbs
        if _is_fit(self.delay):
            out["delay"] = delays
        used = (wsel > 0) & valid[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            tissue = self._tissue_fit(beta, ct, ict, cp, icp)
        fitted = np.where(used, (1.0 - vb) * tissue + vb * cb, np.nan)
        line = np.where(used, np.einsum("bfp,bp->bf", np.nan_to_num(x), beta), np.nan)
        settings = {**self._base_settings(), "tstar_min": self.tstar,
                    "max_error": self.max_error, "min_points": self.min_points, "vb": self.vb,
                    "delay_min": self.delay}
        if n_prefit:
            settings["prefit"] = {"model": "1tcm+vb", "end_min": self.delay_end_min,
                                  "delay_search_min": list(self.delay_search_min)
                                  if _is_fit(self.delay) else None,
                                  "delay_step_min": self.delay_step_min}
        extra = {"x": x[..., 0].reshape(y.shape) if self.name != "ma1" else None,
                 "y": target.reshape(y.shape), "y_fit": line.reshape(y.shape)}
        return self._assemble(batch=batch, params=out, se=se, data=y,
                              fitted=fitted.reshape(y.shape), weights=wsel.reshape(y.shape),
                              settings=settings, extra=extra, **judged)

    def _auto_tstar(self, x: NDArray, target: NDArray, w: NDArray):
        """Per-curve t* by the max-error rule; one batched regression per candidate frame."""
        n_b = target.shape[0]
        starts = self.timing.start
        best = None
        for k in np.flatnonzero(np.any(w > 0, axis=0)):
            wk = np.where(starts >= starts[k] - TIME_TOL_MIN, w, 0.0)
            beta, cov, _ = _weighted_lstsq(x, target, wk)
            pred = np.einsum("bfp,bp->bf", np.nan_to_num(x), beta)
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.abs(target - pred) / np.abs(pred)
            err = np.max(np.where(wk > 0, rel, 0.0), axis=-1)
            err = np.where((np.sum(wk > 0, axis=-1) >= self.min_points) & np.isfinite(err),
                           err, np.inf)
            if best is None:
                best = {"beta": beta, "cov": cov, "w": wk, "tstar": np.full(n_b, starts[k]),
                        "err": err, "done": err <= self.max_error}
                continue
            # take this start where no earlier start met the rule and it is better
            take = ~best["done"] & ((err <= self.max_error) | (err < best["err"]))
            best["beta"] = np.where(take[:, None], beta, best["beta"])
            best["cov"] = np.where(take[:, None, None], cov, best["cov"])
            best["w"] = np.where(take[:, None], wk, best["w"])
            best["tstar"] = np.where(take, starts[k], best["tstar"])
            best["err"] = np.where(take, err, best["err"])
            best["done"] |= err <= self.max_error
        return best["beta"], best["cov"], best["w"], best["tstar"]


class _LinePlot(_GraphicalModel):
    """A graphical method that fits a line ``y = slope x + intercept`` (Logan, Patlak).

    Subclasses give the plot axes (:meth:`_axes`) and name the two
    coefficients in :attr:`coef_names` (slope first); the design, the
    outcomes and their standard errors (from the regression covariance) are
    shared.
    """

    def _axes(self, ct: NDArray, ict: NDArray, cp: NDArray, icp: NDArray
              ) -> tuple[NDArray, NDArray]:
        """Plot coordinates ``(x, y)``, each (B, F), from the frame-mean terms."""
        raise NotImplementedError

    def _design(self, ct, ict, cp, icp):
        x, y = self._axes(ct, ict, cp, icp)
        return np.stack([x, np.ones_like(x)], axis=-1), y

    def _outcomes(self, beta, cov):
        se = np.sqrt(np.maximum(np.diagonal(cov, axis1=-2, axis2=-1), 0.0))
        return ({name: beta[:, i] for i, name in enumerate(self.coef_names)},
                {name: se[:, i] for i, name in enumerate(self.coef_names)})


class LoganPlasma(_LinePlot):
    """Logan graphical analysis with plasma input: ``vt`` (slope) and ``intercept`` (min).

    See :class:`_GraphicalModel` for the parameters.
    """

    name = "logan-plasma"
    coef_names = ("vt", "intercept")

    def _axes(self, ct, ict, cp, icp):
        return icp / ct, ict / ct

    def _tissue_fit(self, beta, ct, ict, cp, icp):
        # mean int C_T = V_T mean int C_P + b mean C_T  ->  C_T implied by the line
        return (ict - beta[:, :1] * icp) / beta[:, 1:2]


class Patlak(_LinePlot):
    """Patlak plot with plasma input: ``ki`` (slope, mL/cm3/min) and ``v0`` (intercept).

    See :class:`_GraphicalModel` for the parameters. ``vt`` is NaN (not
    defined for irreversible uptake).
    """

    name = "patlak"
    coef_names = ("ki", "v0")

    def _axes(self, ct, ict, cp, icp):
        return icp / cp, ct / cp

    def _outcomes(self, beta, cov):
        out, se = super()._outcomes(beta, cov)
        out["vt"] = np.full(beta.shape[0], np.nan)
        return out, se

    def _tissue_fit(self, beta, ct, ict, cp, icp):
        return beta[:, :1] * icp + beta[:, 1:2] * cp


class MA1(_GraphicalModel):
    """Ichise's multilinear analysis MA1: ``vt = -g1 / g2`` and ``b = 1 / g2`` (min).

    ``C_T = g1 int C_P + g2 int C_T`` over the linear phase. See
    :class:`_GraphicalModel` for the parameters.
    """

    name = "ma1"

    def _design(self, ct, ict, cp, icp):
        return np.stack([icp, ict], axis=-1), ct

    def _outcomes(self, beta, cov):
        g1, g2 = beta[:, 0], beta[:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            vt = -g1 / g2
            grad = np.stack([-1.0 / g2, g1 / g2**2], axis=-1)
            var = np.einsum("bp,bpq,bq->b", grad, cov, grad)
            se_vt = np.sqrt(np.where(var >= 0, var, np.nan))
            b = 1.0 / g2
        return {"vt": vt, "b": b}, {"vt": se_vt}

    def _tissue_fit(self, beta, ct, ict, cp, icp):
        return beta[:, :1] * icp + beta[:, 1:2] * ict


