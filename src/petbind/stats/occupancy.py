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

The line is ordinary least squares (Cunningham 2010 fit it the same way; its
errors-in-variables refinement is not done). The occupancy CI is the t
interval of the slope (``scipy.stats.linregress``), n_regions - 2 df; the
x-intercept's CI is Fieller's (1954) interval of the ratio
``-intercept / slope``, from the covariance of the two coefficients. With
fewer than 3 regions there is no interval.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike


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


def lassen(base: ArrayLike, blocked: ArrayLike, alpha: float = 0.05) -> dict[str, float]:
    """Occupancy and non-displaceable volume from a Lassen plot of one subject.

    Parameters
    ----------
    base, blocked : array_like, shape (n_regions,)
        V_T (mL/cm3; plasma input) or DVR of each region at baseline and
        after the blocking drug. Non-finite pairs are left out.
    alpha : float
        The intervals are 1 - alpha.

    Returns
    -------
    dict
        ``n_regions, occupancy, occupancy_low, occupancy_high, v_nd, v_nd_low,
        v_nd_high, r2`` (occupancy as a fraction; ``v_nd`` in the units of
        the input: mL/cm3 for V_T, V_ND / V_T,ref for DVR).
    """
    from scipy.stats import linregress
    from scipy.stats import t as t_dist

    x = np.asarray(base, float)
    y = x - np.asarray(blocked, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    out = dict.fromkeys(["occupancy", "occupancy_low", "occupancy_high", "v_nd", "v_nd_low",
                         "v_nd_high", "r2"], float("nan"))
    out["n_regions"] = float(n)
    if n < 2 or np.ptp(x) == 0:
        return out
    fit = linregress(x, y)
    b, a = float(fit.slope), float(fit.intercept)
    out.update(occupancy=b, v_nd=-a / b if b != 0 else float("nan"), r2=float(fit.rvalue**2))
    if n >= 3:
        df = n - 2
        t = float(t_dist.isf(alpha / 2, df))
        resid = y - (a + b * x)
        s2 = float(resid @ resid / df)
        sxx = float(((x - x.mean()) ** 2).sum())
        vb = s2 / sxx
        va = s2 * (1 / n + x.mean() ** 2 / sxx)
        cab = -x.mean() * s2 / sxx
        out.update(occupancy_low=b - t * np.sqrt(vb), occupancy_high=b + t * np.sqrt(vb))
        out["v_nd_low"], out["v_nd_high"] = _fieller(a, b, va, vb, cab, t)
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
    las_cols = ["tracer", "model", "condition", "subject", "input", "n_regions", "occupancy",
                "occupancy_low", "occupancy_high", "v_nd", "v_nd_low", "v_nd_high", "r2"]
    return pd.DataFrame(per, columns=per_cols), pd.DataFrame(las, columns=las_cols)
