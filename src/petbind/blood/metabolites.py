"""Plasma from whole blood and the parent fraction: steps 5-6 of :mod:`petbind.blood`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.blood.samples import check_samples
from petbind.errors import ConfigError, DataError
from petbind.numerics.optimize import levenberg_marquardt
from petbind.timing import TIME_TOL_MIN


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


