"""Plasma-input kinetic models: compartment models and graphical methods.

All models take the arterial input as a :class:`petbind.blood.InputFunction`
(metabolite-corrected plasma ``C_P`` and whole blood ``C_B``, continuous and
piecewise linear) and fit a batch of tissue curves shaped ``(..., n_frames)``
(kBq/mL, decay-corrected to injection; times in minutes) in one call.

Compartment models (non-linear, batched Levenberg-Marquardt from
:mod:`petbind.numerics.optimize`, started from a basis-function grid):

``1tcm``
    ``C_T = K1 C_P * exp(-k2 t)``; ``V_T = K1 / k2``.
``2tcm``
    Reversible two-tissue model. Its impulse response is
    ``phi1 exp(-alpha1 t) + phi2 exp(-alpha2 t)`` with
    ``alpha1,2 = (k2 + k3 + k4 -/+ sqrt((k2 + k3 + k4)^2 - 4 k2 k4)) / 2``,
    ``phi1 = K1 (k3 + k4 - alpha1) / (alpha2 - alpha1)``,
    ``phi2 = K1 (alpha2 - k3 - k4) / (alpha2 - alpha1)``;
    ``V_T = K1 / k2 (1 + k3 / k4)``, ``BP_ND = k3 / k4``.
``2tcm-irr``
    ``k4 = 0``: response ``K1 / (k2 + k3) (k3 + k2 exp(-(k2 + k3) t))``;
    ``K_i = K1 k3 / (k2 + k3)``.

The measured curve is ``C_PET = (1 - v_B) C_T + v_B C_B`` (v_B fitted or
fixed). Each convolution is the exact frame average of the piecewise-linear
input convolved with an exponential
(:meth:`PiecewiseLinear.exp_conv_frame_means`), so the model is exact over
frames. An optional input delay is fitted per curve (:func:`petbind.models.delay.fit_delay`),
checked against its neighbours with the full model, and then held fixed.

Graphical methods (linear, fit voxels as easily as regions; ``t*`` given or
chosen by the max-error rule):

``logan-plasma``
    ``int C_T / C_T = V_T int C_P / C_T + b`` for ``t > t*`` (Logan et al. 1990).
``patlak``
    ``C_T / C_P = K_i int C_P / C_P + V_0`` for ``t > t*`` (Patlak et al. 1983).
``ma1``
    ``C_T = -(V_T / b) int C_P + (1 / b) int C_T`` for ``t > t*`` (Ichise et al. 2002).

Every relation is averaged over each frame: the plasma terms exactly (from
the piecewise-linear input) and the tissue running integral from the
mean-preserving continuous form of the frame data
(:func:`petbind.numerics.convolution.running_integral_frame_means`).
The input delay and v_B are given, or (``"fit"``) taken per curve from the
early-frame 1TCM + v_B pre-fit of :func:`petbind.models.delay.fit_delay`.

References
----------
Innis RB, Cunningham VJ, Delforge J, et al. Consensus nomenclature for in
vivo imaging of reversibly binding radioligands. J Cereb Blood Flow Metab
2007;27:1533-1539.
Gunn RN, Gunn SR, Cunningham VJ. Positron emission tomography compartmental
models. J Cereb Blood Flow Metab 2001;21:635-652.
Logan J, Fowler JS, Volkow ND, et al. Graphical analysis of reversible
radioligand binding from time-activity measurements applied to
[N-11C-methyl]-(-)-cocaine PET studies in human subjects. J Cereb Blood Flow
Metab 1990;10:740-747.
Patlak CS, Blasberg RG, Fenstermacher JD. Graphical evaluation of
blood-to-brain transfer constants from multiple-time uptake data. J Cereb
Blood Flow Metab 1983;3:1-7.
Ichise M, Toyama H, Innis RB, Carson RE. Strategies to improve neuroreceptor
parameter estimation by linear regression analysis. J Cereb Blood Flow Metab
2002;22:1271-1281.
Akaike H. A new look at the statistical model identification. IEEE Trans
Automat Control 1974;19:716-723.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from petbind.blood import InputFunction
from petbind.errors import ModelError
from petbind.lazy import lazy_module
from petbind.models.base import Fit, Model, at_bounds, judge
from petbind.models.delay import DelayFit, fit_delay
from petbind.models.weights import frame_weights, window_mask
from petbind.numerics.convolution import MIN_RATE, PiecewiseLinear, running_integral_frame_means
from petbind.numerics.optimize import levenberg_marquardt
from petbind.timing import TIME_TOL_MIN, FrameTiming

pd = lazy_module("pandas")  # imported on first use: `petbind --help` needs no pandas

__all__ = [
    "MA1",
    "LoganPlasma",
    "OneTCM",
    "Patlak",
    "TwoTCM",
    "TwoTCMIrreversible",
    "add_binding",
    "compare_fits",
    "plasma_frame_terms",
]


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


def _weighted_lstsq(x: NDArray, y: NDArray, w: NDArray
                    ) -> tuple[NDArray, NDArray, NDArray]:
    """Batched weighted least squares ``y ~ x @ beta``.

    ``x`` (B, F, P), ``y`` and ``w`` (B, F); rows with zero weight are ignored.
    Returns ``beta`` (B, P), its covariance (B, P, P) (``s^2 (X^T W X)^-1``)
    and the WRSS (B,). Singular systems give NaN.
    """
    x = np.where(w[..., None] > 0, x, 0.0)
    y = np.where(w > 0, y, 0.0)
    xtx = np.einsum("bfp,bf,bfq->bpq", x, w, x)
    xty = np.einsum("bfp,bf,bf->bp", x, w, y)
    n_p = x.shape[-1]
    ok = np.isfinite(xtx).all(axis=(-1, -2)) & np.isfinite(xty).all(axis=-1)
    det = np.where(ok, np.linalg.det(np.where(ok[:, None, None], xtx, np.eye(n_p))), 0.0)
    scale = np.prod(np.diagonal(xtx, axis1=-2, axis2=-1), axis=-1)
    ok &= np.abs(det) > 1e-12 * np.abs(scale)
    safe = np.where(ok[:, None, None], xtx, np.eye(n_p))
    inv = np.linalg.inv(safe)
    beta = np.einsum("bpq,bq->bp", inv, np.where(ok[:, None], xty, 0.0))
    r = y - np.einsum("bfp,bp->bf", x, beta)
    wrss = np.sum(w * r * r, axis=-1)
    dof = np.sum(w > 0, axis=-1) - n_p
    with np.errstate(divide="ignore", invalid="ignore"):
        s2 = np.where(dof > 0, wrss / dof, np.nan)
    cov = inv * s2[:, None, None]
    beta = np.where(ok[:, None], beta, np.nan)
    cov = np.where(ok[:, None, None], cov, np.nan)
    return beta, cov, np.where(ok, wrss, np.nan)


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


# ----------------------------------------------------------------------------
# compartment models
# ----------------------------------------------------------------------------
class _CompartmentModel(_PlasmaModelBase):
    """Shared machinery of 1TCM / 2TCM / 2TCM-irr (see the module docstring)."""

    kinetic: tuple[str, ...] = ()
    lower: tuple[float, ...] = ()
    upper: tuple[float, ...] = ()
    #: rate grid (1/min) for the basis-function start
    grid = np.geomspace(0.002, 3.0, 28)

    def __init__(self, timing: FrameTiming, blood: InputFunction, *,
                 vb: float | str = "fit", delay_refine: int = 2, max_iter: int = 200,
                 **kw: Any) -> None:
        super().__init__(timing, blood, vb=vb, **kw)
        if not (isinstance(delay_refine, int) and delay_refine >= 0):
            raise ModelError(f"delay_refine must be a whole number >= 0, got {delay_refine!r}",
                             field="delay_refine", fix="e.g. 2 (steps each side), 0 for none")
        self.delay_refine = delay_refine
        self.max_iter = max_iter

    # -- model-specific -------------------------------------------------------
    def _exponentials(self, k: NDArray) -> tuple[NDArray, NDArray]:
        """Rates alpha (..., m) and amplitudes phi (..., m) from kinetic params (..., nk)."""
        raise NotImplementedError

    def _from_basis(self, rates: NDArray, amps: NDArray) -> NDArray:
        """Kinetic params (..., nk) from grid rates (..., m) and amplitudes (..., m)."""
        raise NotImplementedError

    def _basis_pairs(self) -> NDArray:
        """Grid rate combinations (G, m) used for the starting values."""
        raise NotImplementedError

    # -- engine ---------------------------------------------------------------
    @property
    def _fit_vb(self) -> bool:
        return self.vb == "fit"

    def _split(self, p: NDArray) -> tuple[NDArray, NDArray]:
        nk = len(self.kinetic)
        vb = p[..., nk] if self._fit_vb else np.full(p.shape[:-1], float(self.vb))
        return p[..., :nk], vb

    def _predict(self, inp: InputFunction, cb: NDArray, p: NDArray) -> NDArray:
        k, vb = self._split(p)
        alpha, phi = self._exponentials(k)
        e = inp.plasma.exp_conv_frame_means(alpha, self.timing)
        tissue = np.sum(phi[..., None] * e, axis=-2)
        return (1.0 - vb)[..., None] * tissue + vb[..., None] * cb

    def _start_values(self, inp: InputFunction, cb: NDArray, y: NDArray, w: NDArray
                      ) -> NDArray:
        rates = self._basis_pairs()  # (G, m)
        e = inp.plasma.exp_conv_frame_means(rates, self.timing)  # (G, m, F)
        g, m, _ = e.shape
        if self._fit_vb:
            x = np.concatenate([np.moveaxis(e, 1, -1),
                                np.broadcast_to(cb[None, :, None], (g, cb.size, 1))], axis=-1)
            target = y
        else:
            x = np.moveaxis(e, 1, -1)
            target = y - float(self.vb) * cb
        n_b = y.shape[0]
        xb = np.broadcast_to(x[None], (n_b,) + x.shape).reshape(n_b * g, *x.shape[1:])
        yb = np.repeat(target, g, axis=0)
        wb = np.repeat(w, g, axis=0)
        beta, _, wrss = _weighted_lstsq(xb, yb, wb)
        beta = beta.reshape(n_b, g, -1)
        wrss = wrss.reshape(n_b, g)
        amps = beta[..., :m]
        vb = beta[..., m] if self._fit_vb else np.full((n_b, g), float(self.vb))
        ok = np.all(amps >= 0, axis=-1) & np.isfinite(wrss)
        if self._fit_vb:
            ok &= (vb >= 0) & (vb < 0.9)
        wrss = np.where(ok, wrss, np.inf)
        best = np.argmin(wrss, axis=-1)
        rows = np.arange(n_b)
        vb_b = np.where(np.isfinite(wrss[rows, best]), vb[rows, best], 0.05)
        amp_b = np.where(np.isfinite(wrss[rows, best])[:, None], amps[rows, best], 0.1)
        k = self._from_basis(rates[best], amp_b / (1.0 - vb_b)[:, None])
        k = np.clip(k, np.asarray(self.lower) * 1.01 + 1e-6, np.asarray(self.upper) * 0.99)
        return np.concatenate([k, vb_b[:, None]], axis=-1) if self._fit_vb else k

    def _fit_group(self, inp: InputFunction, y: NDArray, w: NDArray,
                   p0: NDArray | None = None):
        """LM fit of curves sharing one input; ``p0`` (all finite) skips the grid start."""
        cb = inp.blood.frame_means(self.timing)

        def predict(p: NDArray, idx: NDArray) -> NDArray:
            return self._predict(inp, cb, p)

        if p0 is None or not np.all(np.isfinite(p0)):
            p0 = self._start_values(inp, cb, y, w)
        lo = list(self.lower) + ([0.0] if self._fit_vb else [])
        hi = list(self.upper) + ([0.9] if self._fit_vb else [])
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return levenberg_marquardt(predict, y, p0, weights=w, lower=lo, upper=hi,
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
        lo = list(self.lower) + ([0.0] if self._fit_vb else [])
        hi = list(self.upper) + ([0.9] if self._fit_vb else [])
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
    kinetic = ("k1", "k2")
    lower = (1e-5, 1e-4)
    upper = (10.0, 10.0)

    def _exponentials(self, k):
        return k[..., 1:2], k[..., 0:1]

    def _basis_pairs(self):
        return self.grid[:, None]

    def _from_basis(self, rates, amps):
        return np.stack([amps[..., 0], rates[..., 0]], axis=-1)


def _two_tissue_exponentials(k: NDArray) -> tuple[NDArray, NDArray]:
    k1, k2, k3, k4 = (k[..., i] for i in range(4))
    s = k2 + k3 + k4
    disc = np.sqrt(np.maximum(s * s - 4.0 * k2 * k4, 0.0))
    a1 = 0.5 * (s - disc)
    a2 = 0.5 * (s + disc)
    gap = np.maximum(a2 - a1, 1e-12)
    phi1 = k1 * (k3 + k4 - a1) / gap
    phi2 = k1 * (a2 - k3 - k4) / gap
    return np.stack([a1, a2], axis=-1), np.stack([phi1, phi2], axis=-1)


class TwoTCM(_CompartmentModel):
    """Reversible two-tissue compartment model with blood volume (and optional delay).

    Parameters are those of :class:`OneTCM`. Fitted: ``k1, k2, k3, k4`` (and
    ``vb``); derived: ``vt = k1/k2 (1 + k3/k4)``, ``vnd_2tcm = k1/k2``,
    ``bp_nd = k3/k4`` (Innis et al. 2007). With a reference region
    (:func:`add_binding`) ``bp_nd`` becomes ``V_T / V_ND - 1``.
    """

    name = "2tcm"
    kinetic = ("k1", "k2", "k3", "k4")
    lower = (1e-5, 1e-4, 0.0, 1e-5)
    upper = (10.0, 10.0, 10.0, 10.0)

    def _exponentials(self, k):
        return _two_tissue_exponentials(k)

    def _basis_pairs(self):
        i, j = np.triu_indices(self.grid.size, 1)
        return np.stack([self.grid[i], self.grid[j]], axis=-1)

    def _from_basis(self, rates, amps):
        a1, a2 = rates[..., 0], rates[..., 1]
        p1, p2 = amps[..., 0], amps[..., 1]
        k1 = np.maximum(p1 + p2, 1e-5)
        k2 = (p1 * a1 + p2 * a2) / k1
        k4 = a1 * a2 / np.maximum(k2, 1e-6)
        k3 = a1 + a2 - k2 - k4
        return np.stack([k1, k2, k3, k4], axis=-1)


class TwoTCMIrreversible(_CompartmentModel):
    """Irreversible two-tissue compartment model (``k4 = 0``) with blood volume.

    Parameters are those of :class:`OneTCM`. Fitted: ``k1, k2, k3`` (and
    ``vb``); derived ``ki = k1 k3 / (k2 + k3)`` (mL/cm3/min). ``vt`` is not
    defined for an irreversible model and is NaN.
    """

    name = "2tcm-irr"
    kinetic = ("k1", "k2", "k3")
    lower = (1e-5, 1e-4, 1e-6)
    upper = (10.0, 10.0, 10.0)

    def _exponentials(self, k):
        k1, k2, k3 = k[..., 0], k[..., 1], k[..., 2]
        s = k2 + k3
        alpha = np.stack([np.full(s.shape, MIN_RATE), s], axis=-1)
        phi = np.stack([k1 * k3 / s, k1 * k2 / s], axis=-1)
        return alpha, phi

    def _basis_pairs(self):
        return np.stack([np.full(self.grid.size, MIN_RATE), self.grid], axis=-1)

    def _from_basis(self, rates, amps):
        a2 = rates[..., 1]
        p1, p2 = amps[..., 0], amps[..., 1]
        k1 = np.maximum(p1 + p2, 1e-5)
        k2 = p2 * a2 / k1
        k3 = a2 - k2
        return np.stack([k1, k2, k3], axis=-1)


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


# ----------------------------------------------------------------------------
# derived outcomes and model comparison
# ----------------------------------------------------------------------------
def add_binding(fit: Fit, vnd: float | ArrayLike, vnd_se: float | ArrayLike = np.nan) -> Fit:
    """Add ``vnd``, ``bp_nd = V_T / V_ND - 1`` and ``bp_p = V_T - V_ND`` to a fit.

    Parameters
    ----------
    fit : Fit
        A fit with ``vt`` (mL/cm3).
    vnd : float or array_like
        Non-displaceable distribution volume V_ND (mL/cm3), e.g. the V_T of a
        reference region (Innis et al. 2007).
    vnd_se : float or array_like
        Its standard error (propagated assuming independence).

    Returns
    -------
    Fit
        A copy with the new parameters (replacing a model's own ``bp_nd``).
    """
    if "vt" not in fit.params:
        raise ModelError(f"model {fit.model} gives no V_T", field="model",
                         fix="use 1tcm, 2tcm, logan-plasma or ma1 for BP_ND")
    vt = fit.params["vt"]
    vnd_a = np.broadcast_to(np.asarray(vnd, dtype=float), vt.shape)
    if np.any(np.asarray(vnd_a) <= 0):
        raise ModelError("V_ND must be > 0", field="vnd",
                         fix="check the reference region's fit")
    vt_se = fit.se.get("vt", np.full(vt.shape, np.nan))
    vse = np.broadcast_to(np.asarray(vnd_se, dtype=float), vt.shape)
    params = {**fit.params.stored, "vnd": np.array(vnd_a), "bp_nd": vt / vnd_a - 1.0,
              "bp_p": vt - vnd_a}
    se = {**fit.se,
          "bp_nd": np.sqrt((vt_se / vnd_a) ** 2 + np.nan_to_num(vt * vse / vnd_a**2) ** 2),
          "bp_p": np.sqrt(vt_se**2 + np.nan_to_num(vse) ** 2)}
    return replace(fit, params=params, se=se,
                   settings={**fit.settings, "bp_nd": "V_T / V_ND - 1"})


def compare_fits(simple: Fit, complex_: Fit) -> pd.DataFrame:
    """AIC and F-test between two nested fits of the same curves (e.g. 1TCM vs 2TCM).

    Parameters
    ----------
    simple, complex_ : Fit
        Fits of the same batch; ``complex_`` has more parameters.

    Returns
    -------
    DataFrame
        One row per curve: ``aic_<simple>``, ``aic_<complex>``, ``preferred``
        (lower AIC), ``f`` and ``p_f`` of the extra-sum-of-squares F-test
        ``((WRSS_s - WRSS_c) / (p_c - p_s)) / (WRSS_c / (n - p_c))``.
    """
    ps, pc = simple.n_params, complex_.n_params
    if pc <= ps:
        raise ModelError(f"{complex_.model} has no more parameters than {simple.model}",
                         field="model", fix="pass the simpler model first")
    n = complex_.n_used
    dof = n - pc
    with np.errstate(divide="ignore", invalid="ignore"):
        f = ((simple.wrss - complex_.wrss) / (pc - ps)) / (complex_.wrss / dof)
    p = stats.f.sf(f, pc - ps, dof)
    a_s, a_c = np.ravel(simple.aic), np.ravel(complex_.aic)
    pref = np.where(a_c < a_s, complex_.model, simple.model)
    return pd.DataFrame({f"aic_{simple.model}": a_s, f"aic_{complex_.model}": a_c,
                         "preferred": pref, "f": np.ravel(f), "p_f": np.ravel(p)})
