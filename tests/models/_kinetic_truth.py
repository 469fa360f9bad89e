"""Independent ground truth for the kinetic-model tests.

Nothing here uses petbind's model code: the plasma input is the Feng et al.
(1993) three-exponential model, tissue curves are its analytic convolution
with the compartmental impulse responses, and frame means come from
Simpson integration on a fine grid inside every frame.

Feng D, Huang SC, Wang X. Models for computer simulation studies of input
functions for tracer kinetic modeling with positron emission tomography.
Int J Biomed Comput 1993;32:95-110.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import simpson

# Feng 1993 (model 2) parameters: A1 in (kBq/mL)/min, A2, A3 in kBq/mL, lambdas in 1/min
FENG = {"a1": 851.1225, "a2": 21.8798, "a3": 20.8113,
        "l1": -4.133859, "l2": -0.01043449, "l3": -0.1190996, "tau": 0.25}

#: The demo study's frame schedule: (count, seconds).
DEMO_SCHEDULE = [(6, 10), (3, 20), (2, 30), (4, 60), (4, 120), (5, 300), (5, 600)]


def _terms() -> list[tuple[float, float, float]]:
    """Feng input as a sum of (alpha, beta, lambda): (alpha t + beta) exp(lambda t)."""
    f = FENG
    return [(f["a1"], -f["a2"] - f["a3"], f["l1"]), (0.0, f["a2"], f["l2"]),
            (0.0, f["a3"], f["l3"])]


def plasma(t: np.ndarray) -> np.ndarray:
    """Feng plasma input at times t (minutes), kBq/mL."""
    tp = np.maximum(t - FENG["tau"], 0.0)
    out = sum((a * tp + b) * np.exp(lam * tp) for a, b, lam in _terms())
    return np.where(t > FENG["tau"], out, 0.0)


def conv_exp(t: np.ndarray, k: float) -> np.ndarray:
    """Analytic ``int_0^t Cp(s) exp(-k (t - s)) ds`` for the Feng input."""
    tp = np.maximum(t - FENG["tau"], 0.0)
    out = np.zeros_like(tp)
    for a, b, lam in _terms():
        c = lam + k
        el, ek = np.exp(lam * tp), np.exp(-k * tp)
        out += a * (tp * el / c - (el - ek) / c**2) + b * (el - ek) / c
    return out


def one_tissue(t: np.ndarray, k1: float, k2: float) -> np.ndarray:
    """1TCM tissue curve ``K1 Cp (*) exp(-k2 t)`` (kBq/mL)."""
    return k1 * conv_exp(t, k2)


def two_tissue(t: np.ndarray, k1: float, k2: float, k3: float, k4: float) -> np.ndarray:
    """Reversible 2TCM tissue curve (free + bound), analytic (e.g. Gunn et al. 2001)."""
    s = k2 + k3 + k4
    r = np.sqrt(s * s - 4 * k2 * k4)
    a1, a2 = (s - r) / 2, (s + r) / 2
    return k1 / (a2 - a1) * ((k3 + k4 - a1) * conv_exp(t, a1) + (a2 - k3 - k4) * conv_exp(t, a2))


def frame_means(start: np.ndarray, end: np.ndarray, fun, n_points: int = 801) -> np.ndarray:
    """Frame means of ``fun(t)`` by Simpson's rule on ``n_points`` per frame."""
    out = []
    for a, b in zip(start, end, strict=True):
        tt = np.linspace(a, b, n_points)
        out.append(simpson(fun(tt), x=tt) / (b - a))
    return np.asarray(out)


REF = {"k1": 0.35, "k2": 0.15}


def srtm_truth(start, end, bp: float, r1: float, ref=REF):
    """Reference and 1TCM target frame means with the given BP_ND and R1."""
    k1, k2 = r1 * ref["k1"], r1 * ref["k2"]
    ref_tac = frame_means(start, end, lambda t: one_tissue(t, ref["k1"], ref["k2"]))
    tgt = frame_means(start, end, lambda t: one_tissue(t, k1, k2 / (1 + bp)))
    return ref_tac, tgt
