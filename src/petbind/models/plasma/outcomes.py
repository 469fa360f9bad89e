"""Outcomes computed from plasma-input fits: BP_ND from V_T and V_ND, model comparison."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from petbind.errors import ModelError
from petbind.lazy import lazy_module
from petbind.models.base import Fit

pd = lazy_module("pandas")  # imported on first use: `petbind --help` needs no pandas

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
