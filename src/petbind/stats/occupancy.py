"""Receptor occupancy of a blocking design and the Lassen plot.

For a baseline and a blocked (drug-pretreated) scan of one subject:

- **per region, reference-tissue** (BP_ND): ``occ = 1 - BP_blocked / BP_base``;
  assumes the reference region has no specific binding and no occupancy.
- **Lassen plot, plasma input** (V_T; Lassen et al., JCBFM 1995; Cunningham
  et al., JCBFM 2010, "occupancy plot"): across regions
  ``V_T,base - V_T,blocked = occ (V_T,base - V_ND)``, i.e. a straight line of
  the drop ``y = V_T,base - V_T,blocked`` against ``x = V_T,base`` with slope
  ``occ`` and x-intercept ``V_ND``. It needs no reference region (it assumes
  one occupancy and one V_ND in every region).
- **Lassen plot on DVR** (reference-tissue variant): the same line on
  ``DVR = BP_ND + 1 = V_T / V_T,ref``; the x-intercept is ``V_ND / V_T,ref``,
  which is 1 when the reference region is free of specific binding, so an
  x-intercept away from 1 shows binding or blocking in the reference.

**Errors in both variables.** ``V_T,base`` is an estimate, not a known
regressor, and its error enters both axes of the classical plot (``x`` and
``y = x - V_T,blocked``), so the ordinary least-squares (OLS) slope is
biased: ``E[b_OLS] ~ 1 - (1 - occ) R`` with ``R = var(V_T) / (var(V_T) +
sigma^2) < 1`` the reliability of ``V_T,base`` across regions, i.e. OLS
overstates occupancy (and misplaces V_ND) by an amount that grows with the
noise. The primary estimate here is therefore the errors-in-variables line of
Cunningham et al. (JCBFM 2010): the same model written between the two
measured quantities, ``V_T,blocked = occ V_ND + (1 - occ) V_T,base``, with
independent errors in both, fitted by Deming regression (Deming 1943;
orthogonal regression for the default error-variance ratio 1, i.e. equal
errors at baseline and after the drug), from which
``occ = 1 - slope`` and ``V_ND = intercept / occ``. The intervals are
jackknife intervals over regions (leave one region out; Linnet, Clin Chem
1990, for Deming regression): ``estimate +- t_{n-2} SE_jack``. With fewer than
3 regions there is no interval.

The OLS fit of the classical plot is reported beside it (``*_ols``): t
interval of the slope (``scipy.stats.linregress``, n_regions - 2 df) and
Fieller's (1954) interval of the x-intercept ``-intercept / slope``.

References
----------
Cunningham VJ, Rabiner EA, Slifstein M, Laruelle M, Gunn RN. Measuring drug
occupancy in the absence of a reference region: the Lassen plot re-visited.
J Cereb Blood Flow Metab 2010;30:46-50.
Lassen NA, et al. Benzodiazepine receptor quantification in vivo in humans
using [11C]flumazenil and PET. J Cereb Blood Flow Metab 1995;15:152-165.
Linnet K. Estimation of the linear relationship between the measurements of
two methods with proportional errors. Stat Med 1990;9:1463-1473.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray


def _fieller(a: float, b: float, va: float, vb: float, cab: float, t: float
             ) -> tuple[float, float]:
    """Fieller interval of ``x0 = -a / b`` (NaN, NaN when unbounded)."""
    qa = b * b - t * t * vb
    qb = 2 * (a * b - t * t * cab)
    qc = a * a - t * t * va
    disc = qb * qb - 4 * qa * qc
    if qa <= 0 or disc < 0:
        return float("nan"), float("nan")
    r = np.sqrt(disc)
    lo, hi = sorted(((-qb - r) / (2 * qa), (-qb + r) / (2 * qa)))
    return float(lo), float(hi)


def deming(x: ArrayLike, y: ArrayLike, error_ratio: float = 1.0) -> tuple[float, float]:
    """Deming regression line ``y = a + b x`` with errors in both variables.

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Paired measurements (finite).
    error_ratio : float
        ``delta = var(error of y) / var(error of x)``; 1 = orthogonal regression.

    Returns
    -------
    intercept, slope : float
        The maximum-likelihood line for normal errors of known variance ratio
        (Deming 1943): ``b = (s_yy - d s_xx + sqrt((s_yy - d s_xx)^2 + 4 d s_xy^2))
        / (2 s_xy)``, ``a = mean(y) - b mean(x)``. NaN when ``x`` does not vary.
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    d = float(error_ratio)
    mx, my = x.mean(), y.mean()
    sxx = float(((x - mx) ** 2).mean())
    syy = float(((y - my) ** 2).mean())
    sxy = float(((x - mx) * (y - my)).mean())
    if sxx == 0:
        return float("nan"), float("nan")
    if sxy == 0:  # no linear relation: the line is flat (or vertical, not a Lassen line)
        b = 0.0
    else:
        diff = syy - d * sxx
        b = (diff + np.sqrt(diff * diff + 4 * d * sxy * sxy)) / (2 * sxy)
    return float(my - b * mx), float(b)


def _eiv(x: NDArray, z: NDArray, error_ratio: float) -> tuple[float, float]:
    """Occupancy and V_ND from the Deming line of ``z = V_T,blocked`` on ``x = V_T,base``."""
    a, b = deming(x, z, error_ratio)
    occ = 1.0 - b
    return occ, (a / occ if occ != 0 else float("nan"))


def lassen(base: ArrayLike, blocked: ArrayLike, alpha: float = 0.05,
           error_ratio: float = 1.0) -> dict[str, float | str]:
    """Occupancy and non-displaceable volume from a Lassen plot of one subject.

    Parameters
    ----------
    base, blocked : array_like, shape (n_regions,)
        V_T (mL/cm3; plasma input) or DVR of each region at baseline and
        after the blocking drug. Non-finite pairs are left out.
    alpha : float
        The intervals are 1 - alpha.
    error_ratio : float
        Variance of the blocked values' errors over that of the baseline
        values' (1: equal, the default).

    Returns
    -------
    dict
        ``n_regions, method, occupancy, occupancy_low, occupancy_high, v_nd,
        v_nd_low, v_nd_high`` of the errors-in-variables (Deming) fit with
        jackknife intervals, ``r2`` of the classical plot, and the OLS fit of
        the classical plot: ``occupancy_ols, occupancy_ols_low,
        occupancy_ols_high, v_nd_ols, v_nd_ols_low, v_nd_ols_high``
        (occupancy as a fraction; ``v_nd`` in the units of the input: mL/cm3
        for V_T, V_ND / V_T,ref for DVR).
    """
    from scipy.stats import linregress
    from scipy.stats import t as t_dist

    x = np.asarray(base, float)
    z = np.asarray(blocked, float)
    y = x - z
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, z = x[ok], y[ok], z[ok]
    n = int(x.size)
    out: dict[str, float | str] = dict.fromkeys(
        ["occupancy", "occupancy_low", "occupancy_high", "v_nd", "v_nd_low", "v_nd_high", "r2",
         "occupancy_ols", "occupancy_ols_low", "occupancy_ols_high", "v_nd_ols",
         "v_nd_ols_low", "v_nd_ols_high"], float("nan"))
    out["n_regions"] = float(n)
    out["method"] = "deming" if error_ratio == 1.0 else f"deming (error ratio {error_ratio:g})"
    if n < 2 or np.ptp(x) == 0:
        return out
    occ, vnd = _eiv(x, z, error_ratio)
    out.update(occupancy=occ, v_nd=vnd)
    fit = linregress(x, y)
    b, a = float(fit.slope), float(fit.intercept)
    out.update(occupancy_ols=b, v_nd_ols=-a / b if b != 0 else float("nan"),
               r2=float(fit.rvalue**2))
    if n >= 3:
        df = n - 2
        t = float(t_dist.isf(alpha / 2, df))
        # jackknife over regions (Linnet 1990)
        keep = ~np.eye(n, dtype=bool)
        jk = np.array([_eiv(x[k], z[k], error_ratio) if np.ptp(x[k]) > 0
                       else (np.nan, np.nan) for k in keep])
        with np.errstate(invalid="ignore"):
            se = np.sqrt((n - 1) / n * np.nansum((jk - np.nanmean(jk, axis=0)) ** 2, axis=0))
        out.update(occupancy_low=occ - t * se[0], occupancy_high=occ + t * se[0],
                   v_nd_low=vnd - t * se[1], v_nd_high=vnd + t * se[1])
        resid = y - (a + b * x)
        s2 = float(resid @ resid / df)
        sxx = float(((x - x.mean()) ** 2).sum())
        vb = s2 / sxx
        va = s2 * (1 / n + x.mean() ** 2 / sxx)
        cab = -x.mean() * s2 / sxx
        out.update(occupancy_ols_low=b - t * np.sqrt(vb), occupancy_ols_high=b + t * np.sqrt(vb))
        out["v_nd_ols_low"], out["v_nd_ols_high"] = _fieller(a, b, va, vb, cab, t)
    return out


def occupancy_statistics(outcomes: pd.DataFrame, *, baseline: str, blocked: Sequence[str],
                         model: str | None = None, alpha: float = 0.05
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Occupancy per region and subject, and one Lassen plot per subject.

    Parameters
    ----------
    outcomes : DataFrame
        The outcome table (``subject, condition, tracer, region, model,
        bp_nd``; ``vt`` when a plasma-input model gave V_T; ``valid``).
    baseline : str
        Baseline condition.
    blocked : sequence of str
        Blocked conditions (each compared with ``baseline``).
    model : str, optional
        Only this model's rows (default every model).
    alpha : float

    Returns
    -------
    per_region : DataFrame
        ``tracer, model, condition, subject, region, bp_nd_base, bp_nd_blocked,
        occupancy`` (fraction, ``1 - BP_blocked / BP_base``).
    lassen_table : DataFrame
        ``tracer, model, condition, subject, input`` (``"V_T"`` or ``"DVR"``)
        + the keys of :func:`lassen`.
    """
    df = outcomes.copy()
    if "valid" in df:
        df = df[df["valid"].astype(bool)]
    if model is not None:
        df = df[df["model"] == model]
    per, las = [], []
    for (tracer, mdl), g in df.groupby(["tracer", "model"], sort=True):
        for cond in blocked:
            for subj, s in g.groupby("subject", sort=True):
                b = s[s["condition"] == baseline].groupby("region")
                k = s[s["condition"] == cond].groupby("region")
                bp_b, bp_k = b["bp_nd"].mean(), k["bp_nd"].mean()
                regions = sorted(set(bp_b.index) & set(bp_k.index))
                if not regions:
                    continue
                bb, kk = bp_b[regions].to_numpy(float), bp_k[regions].to_numpy(float)
                with np.errstate(divide="ignore", invalid="ignore"):
                    occ = 1.0 - kk / bb
                per.extend({"tracer": tracer, "model": mdl, "condition": cond,
                            "subject": subj, "region": r, "bp_nd_base": x, "bp_nd_blocked": y,
                            "occupancy": o} for r, x, y, o in zip(regions, bb, kk, occ,
                                                                    strict=True))
                key = {"tracer": tracer, "model": mdl, "condition": cond, "subject": subj}
                if "vt" in s and np.isfinite(pd.to_numeric(s["vt"], errors="coerce")).any():
                    vb_, vk_ = b["vt"].mean()[regions], k["vt"].mean()[regions]
                    las.append({**key, "input": "V_T",
                                **lassen(vb_.to_numpy(float), vk_.to_numpy(float), alpha)})
                las.append({**key, "input": "DVR", **lassen(bb + 1.0, kk + 1.0, alpha)})
    per_cols = ["tracer", "model", "condition", "subject", "region", "bp_nd_base",
                "bp_nd_blocked", "occupancy"]
    las_cols = ["tracer", "model", "condition", "subject", "input", "n_regions", "method",
                "occupancy", "occupancy_low", "occupancy_high", "v_nd", "v_nd_low", "v_nd_high",
                "r2", "occupancy_ols", "occupancy_ols_low", "occupancy_ols_high", "v_nd_ols",
                "v_nd_ols_low", "v_nd_ols_high"]
    return pd.DataFrame(per, columns=per_cols), pd.DataFrame(las, columns=las_cols)
