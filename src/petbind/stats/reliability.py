"""Test-retest reliability of BP_ND: ICC(3,1), within-subject CV, repeatability.

For ``n`` subjects each measured in ``k`` sessions of one condition (``k = 2``:
test and retest) the two-way ANOVA without replication gives the between-
subjects mean square BMS, the sessions mean square JMS and the residual mean
square EMS (Shrout & Fleiss, Psychol Bull 1979, Table 2):

- ``ICC(3,1) = (BMS - EMS) / (BMS + (k - 1) EMS)`` (two-way mixed, consistency,
  single measurement), with the F-based 1 - alpha interval of Shrout & Fleiss
  (1979, Table 4): ``F = BMS / EMS``, ``FL = F / F_{1-alpha/2}(n-1, (n-1)(k-1))``,
  ``FU = F F_{1-alpha/2}((n-1)(k-1), n-1)``, bounds ``(FL - 1) / (FL + k - 1)``
  and ``(FU - 1) / (FU + k - 1)``;
- within-subject SD ``s_w = sqrt(WMS)``, the one-way within-subject mean
  square (mean of the subjects' session variances; Bland & Altman, BMJ 1996
  313:744), with the chi-square interval on ``n (k - 1)`` degrees of freedom;
- within-subject CV ``100 s_w / mean`` (%), its interval that of ``s_w``
  divided by the grand mean (the mean's own uncertainty is left out);
- repeatability coefficient ``RC = 1.96 sqrt(2) s_w`` (= 2.77 s_w; Bland &
  Altman 1986, 1996): 95 % of the absolute differences between two sessions
  of one subject are expected below it; interval from that of ``s_w``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

#: 1.96 sqrt(2): the repeatability coefficient in units of the within-subject SD.
RC_FACTOR = 1.959963984540054 * np.sqrt(2.0)


def icc_anova(y: ArrayLike) -> dict[str, float]:
    """Mean squares of the two-way ANOVA of a subjects x sessions table.

    Parameters
    ----------
    y : array_like, shape (n, k)
        One row per subject, one column per session; complete (no NaN).

    Returns
    -------
    dict
        ``n, k, BMS, JMS, EMS, WMS, grand_mean``.
    """
    y = np.asarray(y, dtype=float)
    n, k = y.shape
    grand = y.mean()
    ss_total = ((y - grand) ** 2).sum()
    ss_rows = k * ((y.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((y.mean(axis=0) - grand) ** 2).sum()
    ss_err = ss_total - ss_rows - ss_cols
    return {"n": float(n), "k": float(k), "BMS": ss_rows / (n - 1),
            "JMS": ss_cols / (k - 1) if k > 1 else np.nan,
            "EMS": ss_err / ((n - 1) * (k - 1)),
            "WMS": (ss_cols + ss_err) / (n * (k - 1)), "grand_mean": float(grand)}


def retest_reliability(y: ArrayLike, alpha: float = 0.05) -> dict[str, float]:
    """ICC(3,1), within-subject SD and CV, repeatability coefficient, with intervals.

    Parameters
    ----------
    y : array_like, shape (n, k)
        Subjects x sessions of one condition (k >= 2). Rows with a NaN are
        left out.
    alpha : float
        The intervals are 1 - alpha.

    Returns
    -------
    dict
        ``n, k, mean, icc, icc_low, icc_high, sd_within, wscv_pct,
        wscv_low, wscv_high, rc, rc_low, rc_high`` (units of ``y`` for
        ``sd_within`` and ``rc``; % for wsCV). NaN where n < 2.
    """
    from scipy.stats import chi2
    from scipy.stats import f as f_dist

    y = np.asarray(y, dtype=float)
    y = y[np.all(np.isfinite(y), axis=1)]
    keys = ["n", "k", "mean", "icc", "icc_low", "icc_high", "sd_within", "wscv_pct",
            "wscv_low", "wscv_high", "rc", "rc_low", "rc_high"]
    out = dict.fromkeys(keys, float("nan"))
    n, k = y.shape if y.ndim == 2 else (0, 0)
    out.update(n=float(n), k=float(k))
    if n < 2 or k < 2:
        return out
    a = icc_anova(y)
    bms, ems, wms = a["BMS"], a["EMS"], a["WMS"]
    df1, df2 = n - 1, (n - 1) * (k - 1)
    out["mean"] = a["grand_mean"]
    if ems > 0:
        out["icc"] = (bms - ems) / (bms + (k - 1) * ems)
        fo = bms / ems
        fl = fo / f_dist.ppf(1 - alpha / 2, df1, df2)
        fu = fo * f_dist.ppf(1 - alpha / 2, df2, df1)
        out["icc_low"] = (fl - 1) / (fl + k - 1)
        out["icc_high"] = (fu - 1) / (fu + k - 1)
    sw = float(np.sqrt(wms))
    dfw = n * (k - 1)
    sw_low = float(np.sqrt(wms * dfw / chi2.ppf(1 - alpha / 2, dfw)))
    sw_high = float(np.sqrt(wms * dfw / chi2.ppf(alpha / 2, dfw)))
    m = a["grand_mean"]
    out.update(sd_within=sw, rc=RC_FACTOR * sw, rc_low=RC_FACTOR * sw_low,
               rc_high=RC_FACTOR * sw_high)
    if m != 0:
        out.update(wscv_pct=100 * sw / abs(m), wscv_low=100 * sw_low / abs(m),
                   wscv_high=100 * sw_high / abs(m))
    return out


def retest_statistics(outcomes: pd.DataFrame, *, value: str = "bp_nd", alpha: float = 0.05,
                      regions: Sequence[str] | None = None) -> pd.DataFrame:
    """Test-retest table from repeated runs of one subject x condition x tracer.

    Parameters
    ----------
    outcomes : DataFrame
        The outcome table (``subject, condition, tracer, run, region, model``
        and ``value``; ``valid``). A condition counts as a test-retest
        condition when at least 2 subjects have 2 or more runs of it; the
        first two runs (by run label) of each subject are the sessions.
    value : str
    alpha : float
    regions : sequence of str, optional

    Returns
    -------
    DataFrame
        ``tracer, model, region, condition`` + the keys of
        :func:`retest_reliability`; empty when no condition has retests.
    """
    cols = ["tracer", "model", "region", "condition", "n", "k", "mean", "icc", "icc_low",
            "icc_high", "sd_within", "wscv_pct", "wscv_low", "wscv_high", "rc", "rc_low",
            "rc_high"]
    if "run" not in outcomes.columns:
        return pd.DataFrame(columns=cols)
    df = outcomes.copy()
    if "valid" in df:
        df.loc[~df["valid"].astype(bool), value] = np.nan
    if regions is not None:
        df = df[df["region"].isin(list(regions))]
    df = df[df["run"].notna()]
    rows = []
    for (tracer, model, region, cond), g in df.groupby(
            ["tracer", "model", "region", "condition"], sort=True):
        g = g.sort_values(["subject", "run"])
        g = g.assign(session=g.groupby("subject").cumcount())
        wide = g[g["session"] < 2].pivot(index="subject", columns="session", values=value)
        if wide.shape[1] < 2 or wide.dropna().shape[0] < 2:
            continue
        rows.append({"tracer": tracer, "model": model, "region": region, "condition": cond,
                     **retest_reliability(wide.to_numpy(dtype=float), alpha=alpha)})
    out = pd.DataFrame(rows, columns=cols)
    if len(out):
        out["n"] = out["n"].astype(int)
        out["k"] = out["k"].astype(int)
    return out
