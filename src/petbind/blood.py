"""Arterial blood processing: from blood samples to a continuous plasma input.

Everything here works on arrays (times in **minutes** after injection,
activity in **kBq/mL**) that :func:`petbind.io.blood.read_blood` returns; no
file is opened. The chain, each step a function of its own:

1. :func:`check_samples` -- sorted, finite, non-negative samples (fractions in
   [0, 1]); errors name the file and the column.
2. :func:`merge_samples` -- autosampler (early, dense) and manual (late) samples
   into one curve.
3. :func:`decay_correct_samples` -- put blood on the image's decay reference
   (images in petbind are decay-corrected to injection).
4. :func:`correct_dispersion` -- optional, ``C + tau dC/dt`` (Iida et al.
   1986).
5. :class:`PlasmaBloodRatio` -- plasma from whole blood with a constant, linear
   or interpolated plasma/blood ratio.
6. :func:`fit_parent_fraction` -- the unmetabolised (parent) fraction, by
   interpolation or a fitted Hill, bi-exponential or power function, chosen
   by AIC when asked.
7. :func:`build_input_function` -- the metabolite-corrected plasma input and
   the whole-blood curve as :class:`~petbind.numerics.convolution.PiecewiseLinear`
   curves on the samples plus a fine grid (the continuous form the kinetic
   models convolve exactly), with an optional delay
   (:meth:`InputFunction.shifted`; the delay is fitted by
   :func:`petbind.models.delay.fit_delay`, the one-tissue compartment model
   over delays - kinetic fits live in :mod:`petbind.models`, not here).

:func:`input_from_recordings` runs the whole chain on the recordings that
:func:`petbind.io.blood.read_blood` returns (manual and autosampler).

Delay convention: a delay ``d > 0`` means the tracer reaches the brain ``d``
minutes *after* the measured curve shows it, so the input used by the models
is ``C(t - d)``. Arterial samples drawn at the wrist usually lag the brain,
so fitted delays are typically negative (a few seconds).

References
----------
Iida H, Kanno I, Miura S, et al. Error analysis of a quantitative cerebral
blood flow measurement using H2(15)O autoradiography and positron emission
tomography, with respect to the dispersion of the input function. J Cereb
Blood Flow Metab 1986;6:536-545.
Meyer E. Simultaneous correction for tracer arrival delay and dispersion in
CBF measurements by the H215O autoradiographic method and dynamic PET.
J Nucl Med 1989;30:1069-1078.
Tonietto M, Rizzo G, Veronese M, et al. Plasma radiometabolite correction in
dynamic PET studies: insights on the available modeling approaches. J Cereb
Blood Flow Metab 2016;36:326-339 (Hill, exponential and power parent-fraction
models; the same forms as kinfitr's ``metab_hill``, ``metab_exponential``,
``metab_power``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.errors import ConfigError, DataError
from petbind.isotopes import Isotope, get_isotope
from petbind.numerics.convolution import PiecewiseLinear
from petbind.numerics.optimize import levenberg_marquardt
from petbind.timing import TIME_TOL_MIN, FrameTiming

__all__ = [
    "InputFunction",
    "ParentFraction",
    "PlasmaBloodRatio",
    "build_input_function",
    "check_samples",
    "correct_dispersion",
    "decay_correct_samples",
    "fit_parent_fraction",
    "input_from_recordings",
    "merge_samples",
    "shift_curve",
]


# ----------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------
def check_samples(
    t: ArrayLike,
    y: ArrayLike,
    *,
    path: str | None = None,
    time_field: str = "time",
    value_field: str = "value",
    fraction: bool = False,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Validate one recording: times strictly increasing, values finite and physical.

    Parameters
    ----------
    t : array_like, shape (K,)
        Sample times in minutes after injection.
    y : array_like, shape (K,)
        Activity (kBq/mL), or a fraction when ``fraction`` is true.
    path : str, optional
        The blood file, named in errors.
    time_field, value_field : str
        Column names in that file, named in errors.
    fraction : bool
        Values are fractions (parent fraction, plasma/blood ratio is *not* one):
        they must lie in [0, 1].

    Returns
    -------
    (t, y) : tuple of ndarray
        Float copies.

    Raises
    ------
    DataError
        Empty, lengths differ, non-finite values, unsorted or repeated times,
        negative activity, fractions outside [0, 1].
    """
    t = np.asarray(t, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if t.size == 0:
        raise DataError("no samples", path=path, field=time_field,
                        fix="give at least one blood sample")
    if t.size != y.size:
        raise DataError(f"{t.size} times but {y.size} values", path=path, field=value_field,
                        fix="give one value per sample time")
    for arr, name in ((t, time_field), (y, value_field)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise DataError(f"non-finite value in row {bad[0] + 1}", path=path, field=name,
                            fix="remove the sample or give its measured value")
    dec = np.flatnonzero(np.diff(t) <= 0)
    if dec.size:
        i = int(dec[0])
        raise DataError(
            f"sample times are not strictly increasing (row {i + 2}: {t[i + 1]:g} min after "
            f"{t[i]:g} min)", path=path, field=time_field,
            fix="sort the samples by time and merge repeated times")
    if t[0] < -TIME_TOL_MIN:
        raise DataError(f"first sample at {t[0]:g} min, before injection", path=path,
                        field=time_field, fix="times must be relative to injection")
    neg = np.flatnonzero(y < 0)
    if neg.size:
        i = int(neg[0])
        raise DataError(f"negative value {y[i]:g} at {t[i]:g} min (row {i + 1})", path=path,
                        field=value_field,
                        fix="activity and fractions cannot be negative; check background "
                            "subtraction")
    if fraction:
        over = np.flatnonzero(y > 1.0 + 1e-9)
        if over.size:
            i = int(over[0])
            raise DataError(
                f"fraction {y[i]:g} > 1 at {t[i]:g} min (row {i + 1})", path=path,
                field=value_field, fix="give fractions in [0, 1], not percent")
    return t, y


def _with_zero(t: NDArray, y: NDArray) -> tuple[NDArray, NDArray]:
    """Prepend (0, 0) (no activity at injection) when the first sample is later."""
    if t[0] > TIME_TOL_MIN:
        return np.concatenate([[0.0], t]), np.concatenate([[0.0], y])
    return t, y


# ----------------------------------------------------------------------------
# merging, decay, dispersion
# ----------------------------------------------------------------------------
def merge_samples(
    auto: tuple[ArrayLike, ArrayLike],
    manual: tuple[ArrayLike, ArrayLike],
    *,
    prefer: Literal["auto", "manual"] = "auto",
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Merge autosampler and manual samples of the same quantity into one curve.

    Parameters
    ----------
    auto, manual : (t, y)
        Times (min) and activities (kBq/mL) of the two recordings, each sorted.
    prefer : {"auto", "manual"}
        Where the two overlap in time: ``"auto"`` keeps the autosampler over its
        whole span and the manual samples after it (the usual practice: the
        autosampler catches the peak, manual samples the tail);
        ``"manual"`` keeps every manual sample and the autosampler only before
        the first manual sample.

    Returns
    -------
    (t, y) : tuple of ndarray
        Sorted, without repeated times.
    """
    ta, ya = (np.asarray(v, dtype=float) for v in auto)
    tm, ym = (np.asarray(v, dtype=float) for v in manual)
    if prefer == "auto":
        keep = tm > ta[-1] + TIME_TOL_MIN
        t = np.concatenate([ta, tm[keep]])
        y = np.concatenate([ya, ym[keep]])
    elif prefer == "manual":
        keep = ta < tm[0] - TIME_TOL_MIN
        t = np.concatenate([ta[keep], tm])
        y = np.concatenate([ya[keep], ym])
    else:
        raise ConfigError(f"prefer must be 'auto' or 'manual', got {prefer!r}",
                          field="prefer", fix="use 'auto' or 'manual'")
    order = np.argsort(t, kind="stable")
    return t[order], y[order]


def decay_correct_samples(
    t: ArrayLike,
    y: ArrayLike,
    isotope: Isotope | str,
    *,
    from_ref_min: float | None,
    to_ref_min: float = 0.0,
) -> NDArray[np.float64]:
    """Bring blood activities onto the image's decay-correction reference.

    Parameters
    ----------
    t : array_like
        Sample times (min after injection).
    y : array_like
        Activities (kBq/mL).
    isotope : Isotope or str
        Radionuclide.
    from_ref_min : float or None
        Time (min) the samples are decay-corrected to; ``None`` when they are
        not decay-corrected (physical activity at the sampling time).
    to_ref_min : float
        Time (min) the image is decay-corrected to (0: injection, petbind's
        convention).

    Returns
    -------
    ndarray
        Activities decay-corrected to ``to_ref_min``:
        ``y exp(lambda (t - to_ref))`` for uncorrected samples,
        ``y exp(lambda (from_ref - to_ref))`` for corrected ones.
    """
    iso = get_isotope(isotope) if isinstance(isotope, str) else isotope
    lam = iso.decay_constant_per_min
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    ref = t if from_ref_min is None else from_ref_min
    return y * np.exp(lam * (ref - to_ref_min))


def correct_dispersion(t: ArrayLike, y: ArrayLike, tau_min: float) -> NDArray[np.float64]:
    """Undo mono-exponential dispersion in the sampling line: ``C + tau dC/dt``.

    A curve dispersed by the kernel ``exp(-t/tau)/tau`` obeys
    ``C_true = C_meas + tau dC_meas/dt`` (Iida et al. 1986; Meyer 1989). The
    derivative is taken by second-order finite differences (``numpy.gradient``)
    on the sample times, so the samples should be dense (autosampler) and
    smooth; noise in ``y`` is amplified by about ``tau / dt``.

    Parameters
    ----------
    t : array_like, shape (K,)
        Sample times (min), increasing.
    y : array_like, shape (K,)
        Measured (dispersed) activity (kBq/mL).
    tau_min : float
        Dispersion time constant (min), >= 0.

    Returns
    -------
    ndarray, shape (K,)
        Dispersion-corrected activity (kBq/mL); negative values are clipped to 0.
    """
    if tau_min < 0:
        raise ConfigError(f"dispersion time constant {tau_min:g} min < 0",
                          field="dispersion_tau", fix="give tau >= 0 (minutes)")
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    if tau_min == 0 or t.size < 3:
        return y.copy()
    return np.maximum(y + tau_min * np.gradient(y, t, edge_order=2), 0.0)


# ----------------------------------------------------------------------------
# plasma / blood ratio
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PlasmaBloodRatio:
    """Plasma-to-whole-blood activity ratio as a function of time.

    Build with :meth:`fit` from measured ratios, or :meth:`constant_value`.

    Attributes
    ----------
    kind : {"constant", "linear", "interp"}
        ``constant``: the mean of the measured ratios; ``linear``: least-squares
        line ``a + b t``; ``interp``: linear interpolation between the measured
        ratios, constant before the first and after the last.
    coef : tuple of float
        ``(a,)`` or ``(a, b)`` (b in 1/min); empty for ``interp``.
    t, ratio : ndarray
        The measured times (min) and ratios.
    """

    kind: Literal["constant", "linear", "interp"]
    coef: tuple[float, ...]
    t: NDArray[np.float64]
    ratio: NDArray[np.float64]

    @classmethod
    def constant_value(cls, value: float) -> PlasmaBloodRatio:
        """A known constant ratio (e.g. 1 / (1 - haematocrit) for a plasma-only tracer)."""
        if not value > 0:
            raise ConfigError(f"plasma/blood ratio {value!r} must be > 0",
                              field="plasma_blood_ratio", fix="give a positive ratio")
        return cls("constant", (float(value),), np.zeros(0), np.zeros(0))

    @classmethod
    def fit(cls, t: ArrayLike, ratio: ArrayLike,
            kind: Literal["constant", "linear", "interp"] = "constant", *,
            path: str | None = None, field: str = "plasma_blood_ratio") -> PlasmaBloodRatio:
        """Fit the ratio model to measured ratios (times in min)."""
        t, r = check_samples(t, ratio, path=path, value_field=field)
        if np.any(r <= 0):
            raise DataError("plasma/blood ratio must be > 0", path=path, field=field,
                            fix="drop samples with zero whole-blood or plasma activity")
        if kind == "constant":
            return cls(kind, (float(np.mean(r)),), t, r)
        if kind == "linear":
            if t.size < 2:
                raise DataError("a linear ratio needs at least 2 samples", path=path,
                                field=field, fix="use kind='constant'")
            b, a = np.polyfit(t, r, 1)
            return cls(kind, (float(a), float(b)), t, r)
        if kind == "interp":
            return cls(kind, (), t, r)
        raise ConfigError(f"unknown plasma/blood ratio model {kind!r}", field="kind",
                          fix="use 'constant', 'linear' or 'interp'")

    def __call__(self, t: ArrayLike) -> NDArray[np.float64]:
        """Ratio at times ``t`` (min)."""
        t = np.asarray(t, dtype=float)
        if self.kind == "constant":
            return np.full(t.shape, self.coef[0])
        if self.kind == "linear":
            return self.coef[0] + self.coef[1] * t
        return np.interp(t, self.t, self.ratio)


# ----------------------------------------------------------------------------
# parent fraction
# ----------------------------------------------------------------------------
def _hill(p: NDArray, t: NDArray) -> NDArray:
    a, b, c = p[..., 0:1], p[..., 1:2], p[..., 2:3]
    tb = np.power(t, b)
    return 1.0 - a * tb / (np.power(c, b) + tb)


def _biexp(p: NDArray, t: NDArray) -> NDArray:
    a, b, c = p[..., 0:1], p[..., 1:2], p[..., 2:3]
    return a * np.exp(-b * t) + (1.0 - a) * np.exp(-c * t)


def _power(p: NDArray, t: NDArray) -> NDArray:
    a, b, c = p[..., 0:1], p[..., 1:2], p[..., 2:3]
    return np.power(1.0 + np.power(a * t, b), -c)


@dataclass(frozen=True)
class _PFModel:
    func: Callable[[NDArray, NDArray], NDArray]
    names: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    starts: tuple[tuple[float, ...], ...]
    formula: str


#: Parent-fraction models: f(0) = 1 for each; times in minutes.
PARENT_MODELS: dict[str, _PFModel] = {
    "hill": _PFModel(
        _hill, ("a", "b", "c"), (0.0, 0.1, 1e-3), (1.0, 20.0, 1e3),
        tuple((a, b, c) for a in (0.7, 1.0) for b in (1.0, 2.0, 4.0) for c in (2.0, 10.0, 40.0)),
        "1 - a t^b / (c^b + t^b)"),
    "exponential": _PFModel(
        _biexp, ("a", "b", "c"), (0.0, 0.0, 0.0), (1.0, 20.0, 20.0),
        tuple((a, b, c) for a in (0.3, 0.7) for b in (0.01, 0.05) for c in (0.2, 1.0, 5.0)),
        "a exp(-b t) + (1 - a) exp(-c t)"),
    "power": _PFModel(
        _power, ("a", "b", "c"), (1e-4, 0.1, 1e-3), (10.0, 20.0, 20.0),
        tuple((a, b, c) for a in (0.02, 0.1, 0.5) for b in (1.0, 2.0, 4.0) for c in (0.3, 1.0)),
        "(1 + (a t)^b)^-c"),
}


@dataclass(frozen=True)
class ParentFraction:
    """Fraction of plasma activity that is the unmetabolised parent tracer.

    Attributes
    ----------
    kind : {"interp", "hill", "exponential", "power"}
        Model used (see :data:`PARENT_MODELS` for the formulas; ``interp`` is
        linear interpolation through ``(0, 1)`` and the samples, constant
        after the last sample).
    params : dict of str -> float
        Fitted parameters (empty for ``interp``).
    t, fraction : ndarray
        The measured times (min) and fractions.
    aic : float
        ``n ln(RSS / n) + 2 p`` of the fit (NaN for ``interp``).
    candidates : dict of str -> float
        AIC of every model tried when the model was chosen automatically.
    """

    kind: str
    params: dict[str, float]
    t: NDArray[np.float64]
    fraction: NDArray[np.float64]
    aic: float = float("nan")
    candidates: dict[str, float] = field(default_factory=dict)

    def __call__(self, t: ArrayLike) -> NDArray[np.float64]:
        """Parent fraction at times ``t`` (min), in [0, 1]."""
        t = np.asarray(t, dtype=float)
        if self.kind == "interp":
            tk, fk = self.t, self.fraction
            if tk[0] > TIME_TOL_MIN:
                tk, fk = np.concatenate([[0.0], tk]), np.concatenate([[1.0], fk])
            return np.interp(t, tk, fk)
        m = PARENT_MODELS[self.kind]
        p = np.array([self.params[n] for n in m.names])
        out = m.func(p, np.maximum(t.ravel(), 0.0)).reshape(t.shape)
        return np.clip(out, 0.0, 1.0)


def fit_parent_fraction(
    t: ArrayLike,
    fraction: ArrayLike,
    model: Literal["auto", "interp", "hill", "exponential", "power"] = "auto",
    *,
    path: str | None = None,
    field: str = "metabolite_parent_fraction",
) -> ParentFraction:
    """Fit a parent-fraction model to measured fractions.

    Parameters
    ----------
    t : array_like
        Sample times (min after injection).
    fraction : array_like
        Measured parent fractions in [0, 1].
    model : {"auto", "interp", "hill", "exponential", "power"}
        ``auto`` fits Hill, exponential and power and keeps the lowest AIC
        (Akaike 1974; Tonietto et al. 2016 compare these forms).
    path, field : str
        File and column, named in errors.

    Returns
    -------
    ParentFraction

    Notes
    -----
    Each model is fitted by bounded Levenberg-Marquardt from a fixed set of
    starting points, all solved in one batched call; the best solution wins.
    """
    t, f = check_samples(t, fraction, path=path, value_field=field, fraction=True)
    if model == "interp":
        return ParentFraction("interp", {}, t, f)
    names = list(PARENT_MODELS) if model == "auto" else [model]
    for name in names:
        if name not in PARENT_MODELS:
            raise ConfigError(f"unknown parent-fraction model {name!r}", field="model",
                              fix="use auto, interp, hill, exponential or power")
    n = t.size
    if n < 4:
        raise DataError(f"{n} parent-fraction samples are too few to fit a 3-parameter model",
                        path=path, field=field, fix="use model='interp'")
    fits: dict[str, tuple[float, dict[str, float]]] = {}
    for name in names:
        m = PARENT_MODELS[name]
        starts = np.array(m.starts, dtype=float)

        def predict(p: NDArray, idx: NDArray, m: _PFModel = m) -> NDArray:
            return m.func(p, t)

        with np.errstate(all="ignore"):
            res = levenberg_marquardt(predict, np.broadcast_to(f, (len(starts), n)), starts,
                                      lower=m.lower, upper=m.upper, max_iter=200)
        wrss = np.where(np.isfinite(res.wrss), res.wrss, np.inf)
        best = int(np.argmin(wrss))
        rss = max(float(wrss[best]), 1e-300)
        aic = n * np.log(rss / n) + 2 * len(m.names)
        fits[name] = (aic, dict(zip(m.names, map(float, res.params[best]), strict=True)))
    chosen = min(fits, key=lambda k: fits[k][0])
    return ParentFraction(chosen, fits[chosen][1], t, f, aic=fits[chosen][0],
                          candidates={k: v[0] for k, v in fits.items()} if len(fits) > 1
                          else {})


# ----------------------------------------------------------------------------
# continuous input function
# ----------------------------------------------------------------------------
#: Width (min) of the ramp that stands for the step of a delayed curve whose
#: first sample is not 0 (0.36 s: far below any frame or sampling interval).
STEP_RAMP_MIN = 1e-4


def shift_curve(curve: PiecewiseLinear, delay_min: float) -> PiecewiseLinear:
    """The curve delayed by ``delay_min`` minutes: ``C(t - delay)``, exactly.

    Knots move by ``delay_min``; a positive delay puts ``(0, 0)`` before the
    first knot (and, when the curve does not start at 0, a zero knot
    :data:`STEP_RAMP_MIN` before it: the curve is 0 before its first sample,
    so the delayed curve steps up there rather than ramping from injection),
    a negative one cuts the curve at ``t = 0`` (its value there is
    interpolated).
    """
    t = curve.t + delay_min
    y = curve.y
    if delay_min > 0:
        if t[0] > TIME_TOL_MIN:
            zero = np.zeros(y.shape[:-1] + (1,))
            if np.any(y[..., 0] != 0) and t[0] > 2 * STEP_RAMP_MIN:
                t = np.concatenate([[0.0, t[0] - STEP_RAMP_MIN], t])
                y = np.concatenate([zero, zero, y], axis=-1)
            else:
                t = np.concatenate([[0.0], t])
                y = np.concatenate([zero, y], axis=-1)
    elif delay_min < 0:
        keep = t > TIME_TOL_MIN
        y0 = curve.interp(np.array([-delay_min]))
        t = np.concatenate([[0.0], t[keep]])
        y = np.concatenate([y0, y[..., keep]], axis=-1)
    return PiecewiseLinear(t, y)


@dataclass(frozen=True)
class InputFunction:
    """Metabolite-corrected plasma input and whole-blood curve, continuous.

    Attributes
    ----------
    plasma : PiecewiseLinear
        Parent (metabolite-corrected) plasma activity C_P(t), kBq/mL,
        decay-corrected like the image.
    blood : PiecewiseLinear
        Whole-blood activity C_B(t), kBq/mL (for the blood-volume term v_B).
    delay_min : float
        Delay already applied (min; see the module docstring for the sign).
    t_last : float
        Time (min) of the last measured sample; the curves are held constant
        after their last knot, so a scan must not outlast this
        (:meth:`check_covers`).
    source : str, optional
        The blood file, named in errors.
    time_field : str
        Its time column, named in errors.
    settings : dict
        How the curves were made (ratio model, parent model, grid, delay, ...).
    parent : ParentFraction, optional
        The parent-fraction model used (for plots and reports).
    """

    plasma: PiecewiseLinear
    blood: PiecewiseLinear
    delay_min: float = 0.0
    t_last: float = float("inf")
    source: str | None = None
    time_field: str = "time"
    settings: dict[str, Any] = field(default_factory=dict)
    parent: ParentFraction | None = None

    def shifted(self, delay_min: float) -> InputFunction:
        """The input delayed by a further ``delay_min`` minutes."""
        if delay_min == 0:
            return self
        return InputFunction(shift_curve(self.plasma, delay_min),
                             shift_curve(self.blood, delay_min),
                             self.delay_min + delay_min, self.t_last + delay_min,
                             self.source, self.time_field,
                             {**self.settings, "delay_min": self.delay_min + delay_min},
                             self.parent)

    def on_grid(self, step_min: float, t_end: float | None = None
                ) -> tuple[NDArray, NDArray, NDArray]:
        """``(t, C_P(t), C_B(t))`` on a uniform grid from 0 (for plots and export)."""
        end = self.t_last if t_end is None else t_end
        t = np.arange(0.0, end + 0.5 * step_min, step_min)
        return t, self.plasma.interp(t), self.blood.interp(t)

    def check_covers(self, timing: FrameTiming, *, tolerance_min: float | None = None) -> None:
        """Raise :class:`DataError` when the blood data end before the scan does.

        Parameters
        ----------
        timing : FrameTiming
            The scan's frames.
        tolerance_min : float, optional
            How long before the end of the last frame the last sample may be;
            default half the last frame (the samples must reach its mid-time).
        """
        tol = 0.5 * timing.duration[-1] if tolerance_min is None else tolerance_min
        end = float(timing.end[-1])
        if self.t_last < end - tol - TIME_TOL_MIN:
            raise DataError(
                f"blood samples end at {self.t_last:.3g} min but the scan runs to "
                f"{end:.3g} min", path=self.source, field=self.time_field,
                fix="give blood samples up to the end of the scan, or fit only the frames "
                    "the blood covers (--end)")


def _grid(t_list: list[NDArray], step: float, t_end: float) -> NDArray:
    grid = np.arange(0.0, t_end + 0.5 * step, step)
    tt = np.unique(np.concatenate([grid, *t_list]))
    tt = tt[np.concatenate([[True], np.diff(tt) > 1e-7])]  # merge float near-duplicates
    return tt[tt <= t_end + TIME_TOL_MIN]


def build_input_function(
    *,
    plasma: tuple[ArrayLike, ArrayLike] | None = None,
    whole_blood: tuple[ArrayLike, ArrayLike] | None = None,
    ratio: PlasmaBloodRatio | float | None = None,
    parent: ParentFraction | Callable[[NDArray], NDArray] | None = None,
    grid_step_min: float = 0.1,
    delay_min: float = 0.0,
    source: str | None = None,
    time_field: str = "time",
) -> InputFunction:
    """Make the continuous input function from processed blood samples.

    Parameters
    ----------
    plasma : (t, y), optional
        Total plasma activity samples (min, kBq/mL).
    whole_blood : (t, y), optional
        Whole-blood activity samples (min, kBq/mL).
    ratio : PlasmaBloodRatio or float, optional
        Plasma/blood ratio. Used to make plasma from whole blood when no plasma
        samples are given, and whole blood from plasma when no whole blood is
        given. With neither ratio nor whole blood, whole blood is taken equal
        to plasma (recorded in ``settings``).
    parent : ParentFraction or callable, optional
        Parent fraction f(t); the input is ``f(t) C_plasma(t)``. ``None``:
        the plasma is taken as parent already (recorded in ``settings``).
    grid_step_min : float
        Step (min) of the uniform grid added to the sample times; the products
        with the ratio and the parent fraction are evaluated on it, and the
        curves are linear between the resulting knots.
    delay_min : float
        Delay to apply (see :meth:`InputFunction.shifted`).
    source, time_field : str
        Blood file and time column, named in errors.

    Returns
    -------
    InputFunction
    """
    if grid_step_min <= 0:
        raise ConfigError(f"grid step {grid_step_min!r} min must be > 0",
                          field="grid_step_min", fix="use e.g. 0.1 (minutes)")
    if plasma is None and whole_blood is None:
        raise DataError("no plasma and no whole-blood samples", path=source,
                        field="plasma_radioactivity",
                        fix="give plasma_radioactivity or whole_blood_radioactivity")
    if plasma is None and ratio is None:
        raise DataError("only whole blood given and no plasma/blood ratio", path=source,
                        field="plasma_radioactivity",
                        fix="give plasma samples or a plasma/blood ratio")
    rat = PlasmaBloodRatio.constant_value(ratio) if isinstance(ratio, (int, float)) else ratio
    settings: dict[str, Any] = {"grid_step_min": grid_step_min}
    pts: list[NDArray] = []
    pl_curve = wb_curve = None
    if plasma is not None:
        tp, yp = check_samples(*plasma, path=source, time_field=time_field,
                               value_field="plasma_radioactivity")
        pl_curve = PiecewiseLinear(*_with_zero(tp, yp))
        pts.append(tp)
    if whole_blood is not None:
        tb, yb = check_samples(*whole_blood, path=source, time_field=time_field,
                               value_field="whole_blood_radioactivity")
        wb_curve = PiecewiseLinear(*_with_zero(tb, yb))
        pts.append(tb)
    t_last = min(float(p[-1]) for p in pts)
    tt = _grid(pts, grid_step_min, max(float(p[-1]) for p in pts))
    if pl_curve is not None:
        cp = pl_curve.interp(tt)
        settings["plasma_source"] = "plasma samples"
    else:
        cp = rat(tt) * wb_curve.interp(tt)
        settings["plasma_source"] = f"whole blood x plasma/blood ratio ({rat.kind})"
    if wb_curve is not None:
        cb = wb_curve.interp(tt)
        settings["blood_source"] = "whole-blood samples"
    elif rat is not None:
        cb = cp / rat(tt)
        settings["blood_source"] = f"plasma / plasma-blood ratio ({rat.kind})"
    else:
        cb = cp.copy()
        settings["blood_source"] = "plasma (no whole blood or ratio given)"
    if parent is None:
        settings["parent_fraction"] = "none (plasma taken as parent)"
        cpp = cp
    else:
        cpp = cp * np.asarray(parent(tt), dtype=float)
        settings["parent_fraction"] = getattr(parent, "kind", "callable")
        if isinstance(parent, ParentFraction):
            settings["parent_params"] = dict(parent.params)
    inp = InputFunction(PiecewiseLinear(tt, cpp), PiecewiseLinear(tt, cb), 0.0, t_last,
                        source, time_field, settings,
                        parent if isinstance(parent, ParentFraction) else None)
    return inp.shifted(delay_min)


# ----------------------------------------------------------------------------
# recordings -> input function
# ----------------------------------------------------------------------------
def _column(rec: Any, name: str) -> tuple[NDArray, NDArray] | None:
    v = getattr(rec, "columns", {}).get(name)
    if v is None:
        return None
    v = np.asarray(v, dtype=float)
    ok = np.isfinite(v)
    if not ok.any():
        return None
    return np.asarray(rec.time, dtype=float)[ok], v[ok]


def _is_auto(rec: Any) -> bool:
    return "auto" in str(getattr(rec, "recording", "")).lower()


def input_from_recordings(
    recordings: list[Any],
    *,
    parent_model: Literal["auto", "interp", "hill", "exponential", "power"] = "auto",
    ratio_model: Literal["constant", "linear", "interp"] = "constant",
    isotope: Isotope | str | None = None,
    dispersion_tau_min: float = 0.0,
    grid_step_min: float = 0.1,
    delay_min: float = 0.0,
) -> InputFunction:
    """The continuous input function from BIDS blood recordings.

    Parameters
    ----------
    recordings : list of BloodRecording
        What :func:`petbind.io.blood.read_blood` returns (``recording``,
        ``time`` in min, ``columns`` in kBq/mL and fractions, ``metadata``,
        ``path``); typically one manual and one autosampler recording.
    parent_model : str
        Parent-fraction model for :func:`fit_parent_fraction` (when a
        recording has ``metabolite_parent_fraction``); ``auto`` picks by AIC.
    ratio_model : {"constant", "linear", "interp"}
        Plasma/blood ratio model, fitted to the samples that have both
        ``plasma_radioactivity`` and ``whole_blood_radioactivity``.
    isotope : Isotope or str, optional
        Radionuclide; needed only for a recording whose sidecar says
        ``"DecayCorrected": false`` (it is then decay-corrected to injection,
        the image convention). Recordings without the field are taken as
        decay-corrected to injection, as BIDS-PET blood data usually are.
    dispersion_tau_min : float
        Dispersion time constant (min) to undo in autosampler recordings whose
        sidecar says ``"DispersionCorrected": false`` (0: none).
    grid_step_min, delay_min : float
        As for :func:`build_input_function`.

    Returns
    -------
    InputFunction
        With ``settings`` recording every choice made.

    Notes
    -----
    Autosampler and manual samples are merged with :func:`merge_samples`
    (autosampler over its span). When whole blood starts earlier than the
    plasma samples (autosampler whole blood, manual plasma), plasma is made
    from whole blood and the fitted plasma/blood ratio; otherwise the plasma
    samples are used and the whole blood serves the v_B term.
    """
    if not recordings:
        raise DataError("no blood recording given", field="--blood",
                        fix="give a *_blood.tsv file")
    paths = [str(getattr(r, "path", None)) for r in recordings]
    source = paths[0] if len(paths) == 1 else ", ".join(paths)
    settings: dict[str, Any] = {"recordings": [getattr(r, "recording", "?")
                                               for r in recordings]}

    def prepared(rec: Any, name: str) -> tuple[NDArray, NDArray] | None:
        col = _column(rec, name)
        if col is None:
            return None
        t, y = check_samples(*col, path=getattr(rec, "path", None), value_field=name)
        md = getattr(rec, "metadata", {}) or {}
        if md.get("DecayCorrected") is False:
            if isotope is None:
                raise DataError("blood values are not decay-corrected and the radionuclide "
                                "is unknown", path=getattr(rec, "path", None),
                                field="DecayCorrected",
                                fix="give the isotope (--isotope C-11)")
            y = decay_correct_samples(t, y, isotope, from_ref_min=None, to_ref_min=0.0)
            settings["decay_corrected_here"] = True
        if _is_auto(rec) and md.get("DispersionCorrected") is False and dispersion_tau_min > 0:
            y = correct_dispersion(t, y, dispersion_tau_min)
            settings["dispersion_tau_min"] = dispersion_tau_min
        return t, y

    def merged(name: str) -> tuple[NDArray, NDArray] | None:
        parts = [(r, prepared(r, name)) for r in recordings]
        parts = [(r, c) for r, c in parts if c is not None]
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0][1]
        autos = [c for r, c in parts if _is_auto(r)]
        manuals = [c for r, c in parts if not _is_auto(r)]
        if len(autos) != 1 or len(manuals) != 1:
            raise DataError(f"{len(parts)} recordings give '{name}'; cannot tell the "
                            "autosampler from the manual samples", path=source, field=name,
                            fix="give one manual and one autosampler recording")
        t, y = merge_samples(autos[0], manuals[0])
        return check_samples(t, y, path=source, value_field=name)

    wb = merged("whole_blood_radioactivity")
    pl = merged("plasma_radioactivity")
    ratio = None
    pairs_t, pairs_r = [], []
    for r in recordings:
        both = _column(r, "plasma_radioactivity"), _column(r, "whole_blood_radioactivity")
        if both[0] is None or both[1] is None:
            continue
        tp, yp = both[0]
        tb, yb = both[1]
        common, ip, ib = np.intersect1d(tp, tb, return_indices=True)
        good = yb[ib] > 0
        pairs_t.append(common[good])
        pairs_r.append(yp[ip][good] / yb[ib][good])
    if pairs_t:
        tr = np.concatenate(pairs_t)
        order = np.argsort(tr, kind="stable")
        tr, rr = tr[order], np.concatenate(pairs_r)[order]
        keep = np.concatenate([[True], np.diff(tr) > 0])
        ratio = PlasmaBloodRatio.fit(tr[keep], rr[keep], ratio_model, path=source)
        settings["plasma_blood_ratio"] = {"kind": ratio.kind, "coef": list(ratio.coef)}
    if pl is not None and wb is not None and ratio is not None and wb[0][0] < pl[0][0] - 1e-9 \
            and wb[0].size > pl[0].size:
        pl = None  # dense early whole blood: plasma = ratio x whole blood
    parent = None
    pf = [(r, _column(r, "metabolite_parent_fraction")) for r in recordings]
    pf = [(r, c) for r, c in pf if c is not None]
    if pf:
        r0, (tpf, fpf) = pf[0]
        parent = fit_parent_fraction(tpf, fpf, parent_model, path=getattr(r0, "path", None))
    inp = build_input_function(plasma=pl, whole_blood=wb, ratio=ratio, parent=parent,
                               grid_step_min=grid_step_min, delay_min=delay_min,
                               source=source)
    inp.settings.update(settings)
    if parent is not None:
        inp.settings["parent_aic"] = dict(parent.candidates) or parent.aic
    return inp
