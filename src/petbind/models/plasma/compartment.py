"""Plasma-input compartment models: 1TCM, 2TCM, 2TCM-irr (with v_B and an input delay).

The models hold the settings (v_B given or fitted, the input delay given or
fitted with its refinement); the solve is the batched engine of
:mod:`petbind.models.kinetics` (one :class:`~petbind.models.kinetics.TissueKinetics`
per structure), which the delay fit (:mod:`petbind.models.delay`) uses too.
See :mod:`petbind.models.plasma` for the equations.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.blood import InputFunction
from petbind.errors import ModelError
from petbind.models.base import Fit, at_bounds, judge
from petbind.models.kinetics import (
    ONE_TISSUE,
    TWO_TISSUE,
    TWO_TISSUE_IRREVERSIBLE,
    TissueKinetics,
)
from petbind.models.plasma.common import _delta_se, _PlasmaModelBase
from petbind.timing import FrameTiming


# ----------------------------------------------------------------------------
# compartment models
# ----------------------------------------------------------------------------
class _CompartmentModel(_PlasmaModelBase):
    """Shared machinery of 1TCM / 2TCM / 2TCM-irr (see the module docstring)."""

    #: the compartment structure and its batched solve (shared with the delay fit)
    kinetics: ClassVar[TissueKinetics]

    @property
    def kinetic(self) -> tuple[str, ...]:
        """Names of the kinetic parameters."""
        return self.kinetics.kinetic

    def __init__(self, timing: FrameTiming, blood: InputFunction, *,
                 vb: float | str = "fit", delay_refine: int = 2, max_iter: int = 200,
                 **kw: Any) -> None:
        super().__init__(timing, blood, vb=vb, **kw)
        if not (isinstance(delay_refine, int) and delay_refine >= 0):
            raise ModelError(f"delay_refine must be a whole number >= 0, got {delay_refine!r}",
                             field="delay_refine", fix="e.g. 2 (steps each side), 0 for none")
        self.delay_refine = delay_refine
        self.max_iter = max_iter

    @property
    def _fit_vb(self) -> bool:
        return self.vb == "fit"

    def _fit_group(self, inp: InputFunction, y: NDArray, w: NDArray,
                   p0: NDArray | None = None):
        """The engine's fit of curves sharing one input; ``p0`` (all finite) skips the grid."""
        return self.kinetics.fit(inp.plasma, inp.blood.frame_means(self.timing), self.timing,
                                 y, w, None if self._fit_vb else float(self.vb), p0=p0,
                                 max_iter=self.max_iter)

    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of the fitted parameters, in order."""
        return self.kinetic + (("vb",) if self._fit_vb else ())

    def fit(self, tacs: ArrayLike, weights: Any = None) -> Fit:
        """Fit a batch of tissue curves.

        Parameters
        ----------
        tacs : array_like, shape (..., n_frames)
            Tissue curves (kBq/mL, decay-corrected to injection).
        weights : str or array_like, optional
            Overrides the model's weighting (``uniform``, ``duration``,
            ``counts`` or an array).

        Returns
        -------
        Fit
            ``params``: the rate constants (``k1`` mL/cm3/min, ``k2``.. 1/min),
            ``vb``, ``delay`` (min) and the derived outcomes (``vt``, ``ki``,
            ``bp_nd``...); ``se`` for each, by the asymptotic covariance and
            the delta method (none for a fitted delay, which is a grid search).
            ``valid`` is False for curves that are not finite or have no
            positive value in the window; ``extra["converged"]`` is False
            where the iteration limit stopped the fit (its parameters are
            the best found).
        """
        y, y2, win, w2 = self._prepare(tacs, weights, min_frames=len(self.param_names) + 1)
        batch = y.shape[:-1]
        n_b = y2.shape[0]
        finite = np.all(np.isfinite(y2) | (w2 == 0), axis=-1) & (np.max(
            np.where((w2 > 0) & np.isfinite(y2), y2, -np.inf), axis=-1) > 0)
        y2 = np.where(np.isfinite(y2), y2, 0.0)
        if self.delay == "fit":
            start = self._prefit(y2, w2, fit_delay_too=True).delay
            # the pre-fit's delay and its neighbours, nearest first: ties keep the pre-fit
            steps = sorted(range(-self.delay_refine, self.delay_refine + 1), key=abs)
        else:
            start = np.full(n_b, float(self.delay))
            steps = [0]
        n_p = len(self.param_names)
        params = np.full((n_b, n_p), np.nan)
        cov = np.full((n_b, n_p, n_p), np.nan)
        fitted = np.full(y2.shape, np.nan)
        conv = np.zeros(n_b, dtype=bool)
        delays = start.copy()
        best = np.full(n_b, np.inf)
        first = params  # the fit at the pre-fit's delay starts its neighbours
        for j in steps:
            trial = (np.round(start / self.delay_step_min) + j) * self.delay_step_min + 0.0 \
                if j else start
            for d in np.unique(trial):
                rows = np.flatnonzero(trial == d)
                res = self._fit_group(self.blood.shifted(float(d)), y2[rows], w2[rows],
                                      p0=first[rows] if j else None)
                take = (res.wrss < best[rows]) if j else np.ones(rows.size, dtype=bool)
                rows, sel = rows[take], np.flatnonzero(take)
                params[rows], cov[rows], fitted[rows], conv[rows] = (
                    res.params[sel], res.cov[sel], res.fitted[sel], res.converged[sel])
                best[rows] = np.where(np.isfinite(res.wrss[sel]), res.wrss[sel], np.inf)
                delays[rows] = d
            if not j:
                first = params.copy()
        lo, hi = self.kinetics.bounds(self._fit_vb)
        n_params = n_p + (1 if self.delay == "fit" else 0)
        judged = {"usable": finite, "solved": np.all(np.isfinite(params), axis=-1),
                  "n_used": np.sum((w2 > 0) & win, axis=-1), "n_params": n_params,
                  "bound": at_bounds(params, self.param_names, lo, hi)}
        valid = judge(**judged)[0]
        out: dict[str, NDArray] = {}
        se: dict[str, NDArray] = {}
        for i, name in enumerate(self.param_names):
            out[name] = params[:, i]
            se[name] = np.sqrt(np.maximum(cov[:, i, i], 0.0))
        if not self._fit_vb:
            out["vb"] = np.full(n_b, float(self.vb))
        out["delay"] = delays
        # the derived outcomes (V_T, K_i, BP_ND ...) are the catalogue's rules, computed
        # from these parameters by the Fit on access; here only their standard errors
        from petbind.models.registry import derived_rules

        names = self.param_names
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for rule in derived_rules(self.name):
                def func(p: NDArray, rule: Any = rule) -> NDArray:
                    value = rule.func({n: p[..., i] for i, n in enumerate(names)}, {})
                    return np.broadcast_to(np.asarray(value, dtype=float), p.shape[:-1])

                se[rule.name] = _delta_se(func, params, cov)
        fitted = np.where(win & valid[:, None], fitted, np.nan)
        settings = {**self._base_settings(), "vb": self.vb, "delay": self.delay,
                    "delay_search_min": list(self.delay_search_min),
                    "delay_step_min": self.delay_step_min,
                    "delay_end_min": self.delay_end_min, "delay_refine": self.delay_refine,
                    "param_names": self.param_names}
        return self._assemble(batch=batch, params=out, se=se, data=y,
                              fitted=fitted.reshape(y.shape), weights=w2.reshape(y.shape),
                              settings=settings, extra={"converged": conv.reshape(batch)},
                              **judged)


class OneTCM(_CompartmentModel):
    """One-tissue compartment model with blood volume (and optional delay).

    Parameters
    ----------
    timing : FrameTiming
        Frames (minutes).
    blood : InputFunction
        Arterial input (parent plasma and whole blood).
    vb : "fit" or float
        Blood volume fraction: fitted (default) or fixed in [0, 1).
    delay : float or "fit"
        Input delay in minutes, or ``"fit"``: per curve, a 1TCM + v_B pre-fit
        (:func:`petbind.models.delay.fit_delay`: grid over ``delay_search_min`` with
        step ``delay_step_min`` on the frames ending by ``delay_end_min``),
        then this model fitted at that delay and at ``delay_refine`` steps
        either side, keeping the delay of least WRSS over the fit window.
    delay_refine : int
        Steps of ``delay_step_min`` tried either side of the pre-fit's delay
        with the full model (default 2; 0 keeps the pre-fit's delay). A
        two-tissue curve can put the one-tissue pre-fit a step off; each
        step tried costs one more fit.
    weights : {"uniform", "duration", "counts"} or array_like
        Frame weights (:func:`petbind.models.weights.frame_weights`; ``counts``
        uses the mean curve of the batch as weighting curve).
    start, end : float, optional
        Fit window (minutes).
    isotope : str, optional
        Radionuclide (for ``counts`` weights).
    """

    name = "1tcm"
    kinetics = ONE_TISSUE


class TwoTCM(_CompartmentModel):
    """Reversible two-tissue compartment model with blood volume (and optional delay).

    Parameters are those of :class:`OneTCM`. Fitted: ``k1, k2, k3, k4`` (and
    ``vb``); derived: ``vt = k1/k2 (1 + k3/k4)``, ``vnd_2tcm = k1/k2``,
    ``bp_nd = k3/k4`` (Innis et al. 2007). With a reference region
    (:func:`add_binding`) ``bp_nd`` becomes ``V_T / V_ND - 1``.
    """

    name = "2tcm"
    kinetics = TWO_TISSUE


class TwoTCMIrreversible(_CompartmentModel):
    """Irreversible two-tissue compartment model (``k4 = 0``) with blood volume.

    Parameters are those of :class:`OneTCM`. Fitted: ``k1, k2, k3`` (and
    ``vb``); derived ``ki = k1 k3 / (k2 + k3)`` (mL/cm3/min). ``vt`` is not
    defined for an irreversible model and is NaN.
    """

    name = "2tcm-irr"
    kinetics = TWO_TISSUE_IRREVERSIBLE
