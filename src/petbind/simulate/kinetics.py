"""Tracer kinetics for the simulator: plasma input, compartment responses, frames.

Everything here is independent of the fitting engine (:mod:`petbind.models`),
so the simulator's truth does not share code, and therefore bugs, with the
models it is used to test.

Input functions are *exponential polynomials*: sums of terms
``c t^p exp(-a t)`` with ``p`` in ``{0, 1}``. Feng's parametric input
(Feng et al., Int J Biomed Comput 1993; 32:95-110) is of this form::

    Cp(t) = (A1 t - A2 - A3) exp(-l1 t) + A2 exp(-l2 t) + A3 exp(-l3 t)

and so is any sum of exponentials. The convolution of such a term with a
tissue impulse response ``exp(-b t)`` has a closed form (``d = b - a``)::

    exp(-a t) * exp(-b t)   = (exp(-a t) - exp(-b t)) / d
    t exp(-a t) * exp(-b t) = (exp(-a t) (d t - 1) + exp(-b t)) / d^2

(with the limits ``t exp(-a t)`` and ``t^2 exp(-a t) / 2`` at ``d = 0``), so
tissue curves are exact at every time point; frame means are then taken on a
fine grid with :meth:`petbind.timing.FrameTiming.frame_means`.

The two-tissue compartment model (2TCM) impulse response is (e.g. Gunn et
al., J Cereb Blood Flow Metab 2001; 21:635-652)::

    h(t) = K1 / (a2 - a1) [(k3 + k4 - a1) exp(-a1 t) + (a2 - k3 - k4) exp(-a2 t)]
    a1,2 = (k2 + k3 + k4 -/+ sqrt((k2 + k3 + k4)^2 - 4 k2 k4)) / 2

and reduces to the one-tissue model ``K1 exp(-k2 t)`` when ``k3 = 0``. The
measured PET signal adds blood volume: ``C_PET = (1 - vB) C_T + vB C_WB``.

Units: times in minutes, rates in 1/min, K1 in mL/cm3/min, activity in kBq/mL
(decay-corrected to injection).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.timing import FrameTiming

#: Below this |d t| the closed forms switch to their Taylor series (relative
#: error of either branch < 1e-11).
_SERIES_X0 = 1e-3
_SERIES_X1 = 1e-2

#: Minutes after injection sampled more densely by :func:`fine_grid`, and by how much.
EARLY_MIN = 4.0
EARLY_REFINE = 10


def _conv_term(t: NDArray, p: int, a: float, b: NDArray, eb: NDArray) -> NDArray:
    """``(t^p exp(-a t)) * exp(-b t)`` at times ``t``; ``b`` broadcasts against ``t``.

    Parameters
    ----------
    t : ndarray, shape (K,)
        Times in minutes (>= 0).
    p : {0, 1}
        Power of ``t`` in the input term.
    a : float
        Input term rate (1/min).
    b : ndarray, shape (R, 1)
        Impulse-response rates (1/min).
    eb : ndarray, shape (R, K)
        ``exp(-b t)``, precomputed by the caller.

    Returns
    -------
    ndarray, shape (R, K)
    """
    d = b - a
    x = d * t
    ea = np.exp(-a * t)
    x0 = _SERIES_X0 if p == 0 else _SERIES_X1
    small = np.abs(x) < x0
    d_safe = np.where(np.abs(d) * t[-1] < x0, 1.0, d) if small.any() else d
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if p == 0:
            out = (ea - eb) / d_safe
        else:
            out = (ea * (x - 1.0) + eb) / (d_safe * d_safe)
    if small.any():
        xs = x[small]
        tt = np.broadcast_to(t, x.shape)[small]
        es = np.broadcast_to(ea, x.shape)[small]
        if p == 0:
            out[small] = es * tt * (1.0 - xs / 2.0 + xs * xs / 6.0 - xs**3 / 24.0)
        else:
            out[small] = es * tt * tt * (0.5 - xs / 6.0 + xs * xs / 24.0 - xs**3 / 120.0
                                         + xs**4 / 720.0)
    return out


@dataclass(frozen=True)
class ExpInput:
    """A plasma input function ``sum_j c_j t^p_j exp(-a_j t)`` (kBq/mL, t in min).

    Attributes
    ----------
    terms : tuple of (float, int, float)
        ``(c, p, a)``: amplitude (kBq/mL, or kBq/mL/min when ``p = 1``), power
        of ``t`` (0 or 1) and rate (1/min, >= 0).
    """

    terms: tuple[tuple[float, int, float], ...]

    @classmethod
    def feng(cls, a1: float, a2: float, a3: float, l1: float, l2: float,
             l3: float) -> ExpInput:
        """Feng et al. (1993) input with positive rates ``l1 > l2, l3`` (1/min).

        ``Cp(t) = (a1 t - a2 - a3) exp(-l1 t) + a2 exp(-l2 t) + a3 exp(-l3 t)``,
        ``a1`` in kBq/mL/min, ``a2``, ``a3`` in kBq/mL. ``Cp(0) = 0``.
        """
        return cls(((a1, 1, l1), (-(a2 + a3), 0, l1), (a2, 0, l2), (a3, 0, l3)))

    @classmethod
    def exponentials(cls, amplitudes: ArrayLike, rates: ArrayLike) -> ExpInput:
        """A sum of exponentials ``sum_j A_j exp(-a_j t)``."""
        return cls(tuple((float(c), 0, float(a))
                         for c, a in zip(np.ravel(amplitudes), np.ravel(rates), strict=True)))

    def scaled(self, factor: float) -> ExpInput:
        """The same shape with every amplitude multiplied by ``factor``."""
        return ExpInput(tuple((c * factor, p, a) for c, p, a in self.terms))

    def __call__(self, t: ArrayLike) -> NDArray:
        """Plasma concentration (kBq/mL) at times ``t`` (min)."""
        t = np.asarray(t, dtype=float)
        out = np.zeros_like(t)
        for c, p, a in self.terms:
            out += c * (t if p else 1.0) * np.exp(-a * t)
        return out

    def convolve_exp(self, rates: ArrayLike, t: ArrayLike) -> NDArray:
        """Exact ``(Cp * exp(-b t))(t)`` for each rate ``b``.

        Parameters
        ----------
        rates : array_like, shape (R,) or scalar
            Impulse-response rates in 1/min.
        t : array_like, shape (K,)
            Times in minutes (>= 0).

        Returns
        -------
        ndarray, shape (R, K) (or (K,) for a scalar rate), kBq/mL min.
        """
        t = np.asarray(t, dtype=float)
        b = np.asarray(rates, dtype=float)
        scalar = b.ndim == 0
        b = np.atleast_1d(b)[:, None]
        eb = np.exp(-b * t)
        out = np.zeros((b.shape[0], t.size))
        for c, p, a in self.terms:
            out += c * _conv_term(t, p, a, b, eb)
        return out[0] if scalar else out


def two_tissue_rates(k2: ArrayLike, k3: ArrayLike, k4: ArrayLike
                     ) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """Macro-parameters of the 2TCM impulse response, per unit K1.

    Returns ``(alpha1, alpha2, w1, w2)`` such that
    ``h(t) / K1 = w1 exp(-alpha1 t) + w2 exp(-alpha2 t)``. When ``k3 = 0``
    the result is the 1TCM ``exp(-k2 t)`` exactly (``w1 = 1``, ``alpha1 =
    k2``, ``w2 = 0``).
    """
    k2, k3, k4 = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (k2, k3, k4)))
    s = k2 + k3 + k4
    root = np.sqrt(np.maximum(s * s - 4.0 * k2 * k4, 0.0))
    a1 = 0.5 * (s - root)
    a2 = 0.5 * (s + root)
    one = k3 == 0
    gap = np.where(one, 1.0, a2 - a1)
    w1 = np.where(one, 1.0, (k3 + k4 - a1) / gap)
    w2 = np.where(one, 0.0, (a2 - k3 - k4) / gap)
    a1 = np.where(one, k2, a1)
    a2 = np.where(one, k2, a2)
    return a1, a2, w1, w2


def tissue_curves(cp: ExpInput, t: ArrayLike, K1: ArrayLike, k2: ArrayLike,
                  k3: ArrayLike = 0.0, k4: ArrayLike = 1.0) -> NDArray:
    """Tissue concentration of the 1TCM / 2TCM (no blood volume), exact.

    Parameters
    ----------
    cp : ExpInput
        Metabolite-corrected arterial plasma input (kBq/mL).
    t : array_like, shape (K,)
        Times in minutes.
    K1 : array_like, shape (R,)
        Delivery (mL/cm3/min).
    k2, k3, k4 : array_like, shape (R,)
        Rates in 1/min; ``k3 = 0`` gives the 1TCM.

    Returns
    -------
    ndarray, shape (R, K)
        ``C_T(t)`` in kBq/mL.
    """
    K1, k2, k3, k4 = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, dtype=float))
                                           for v in (K1, k2, k3, k4)))
    a1, a2, w1, w2 = two_tissue_rates(k2, k3, k4)
    conv = cp.convolve_exp(np.concatenate([a1, a2]), t)
    n = K1.size
    return K1[:, None] * (w1[:, None] * conv[:n] + w2[:, None] * conv[n:])


@dataclass(frozen=True)
class BloodModel:
    """Whole blood from the parent plasma input.

    The parent fraction of plasma activity is
    ``f(t) = f_inf + (1 - f_inf) exp(-k_met t)``, so total plasma activity is
    ``Cp(t) / f(t)`` and whole blood is ``ratio * Cp(t) / f(t)``.

    Attributes
    ----------
    parent_fraction_inf : float
        Late parent fraction ``f_inf`` in (0, 1].
    metabolism_rate : float
        ``k_met`` in 1/min.
    blood_plasma_ratio : float
        Whole-blood to plasma activity ratio.
    """

    parent_fraction_inf: float = 1.0
    metabolism_rate: float = 0.0
    blood_plasma_ratio: float = 1.0

    def parent_fraction(self, t: ArrayLike) -> NDArray:
        """Parent fraction of plasma activity at ``t`` (min)."""
        t = np.asarray(t, dtype=float)
        f = self.parent_fraction_inf
        return f + (1.0 - f) * np.exp(-self.metabolism_rate * t)

    def whole_blood(self, cp: ExpInput, t: ArrayLike) -> NDArray:
        """Whole-blood activity (kBq/mL) at ``t`` (min)."""
        return self.blood_plasma_ratio * cp(t) / self.parent_fraction(t)


def fine_grid(timing: FrameTiming, step_min: float = 1.0 / 120.0) -> NDArray:
    """A time grid from 0 to the scan end with spacing ``<= step_min`` and every frame edge.

    The first :data:`EARLY_MIN` minutes (bolus passage, where curves bend
    most) are sampled :data:`EARLY_REFINE` times more densely.

    Frame edges are knots, so the trapezoidal frame means of
    :meth:`FrameTiming.frame_means` never straddle a frame boundary.
    """
    end = float(timing.end[-1])
    n = int(np.ceil(end / step_min))
    grid = np.linspace(0.0, end, n + 1)
    early_end = min(end, EARLY_MIN)
    early = np.linspace(0.0, early_end, int(np.ceil(early_end / step_min * EARLY_REFINE)) + 1)
    edges = np.concatenate([timing.start, timing.end])
    return np.unique(np.concatenate([grid, early, edges]))


def pet_frame_means(cp: ExpInput, blood: BloodModel, timing: FrameTiming,
                    K1: ArrayLike, k2: ArrayLike, k3: ArrayLike, k4: ArrayLike,
                    vb: float | ArrayLike, step_min: float = 1.0 / 120.0) -> NDArray:
    """Frame means of the PET signal ``(1 - vB) C_T + vB C_WB``, decay-corrected.

    Parameters
    ----------
    cp, blood : ExpInput, BloodModel
        Parent plasma input and whole-blood model.
    timing : FrameTiming
        Frames (minutes after injection).
    K1, k2, k3, k4 : array_like, shape (R,)
        2TCM micro-parameters per region (``k3 = 0``: 1TCM).
    vb : float or array_like, shape (R,)
        Fractional blood volume.
    step_min : float
        Fine-grid spacing in minutes; the curve is exact at the knots and the
        trapezoidal rule between them has relative error of order
        ``(step * rate)^2 / 12`` (below 1e-5 for the default 0.5 s, refined
        to 0.05 s over the bolus).

    Returns
    -------
    ndarray, shape (R, n_frames)
        kBq/mL, decay-corrected to injection.
    """
    t = fine_grid(timing, step_min)
    ct = tissue_curves(cp, t, K1, k2, k3, k4)
    vb = np.atleast_1d(np.asarray(vb, dtype=float))[:, None] * np.ones((ct.shape[0], 1))
    y = (1.0 - vb) * ct + vb * blood.whole_blood(cp, t)[None, :]
    return timing.frame_means(t, y)
