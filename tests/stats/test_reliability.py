"""Test-retest statistics against Shrout & Fleiss (1979) and hand computation."""

import numpy as np
import pandas as pd
import pytest

from petbind.stats.reliability import RC_FACTOR, icc_anova, retest_reliability, retest_statistics

# Shrout & Fleiss, Psychol Bull 1979;86:420-428, Table 2: 6 targets x 4 judges
SF_DATA = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6],
                    [10, 5, 6, 9], [6, 2, 4, 7]], dtype=float)


def test_shrout_fleiss_mean_squares_and_icc31():
    a = icc_anova(SF_DATA)
    # Table 3 of the paper: BMS 11.24, JMS 32.49, EMS 1.02, WMS 6.26
    assert a["BMS"] == pytest.approx(11.24, abs=0.01)
    assert a["JMS"] == pytest.approx(32.49, abs=0.01)
    assert a["EMS"] == pytest.approx(1.02, abs=0.01)
    assert a["WMS"] == pytest.approx(6.26, abs=0.01)
    r = retest_reliability(SF_DATA)
    assert r["icc"] == pytest.approx(0.71, abs=0.005)  # Table 4: ICC(3,1) = .71


def test_icc_interval_matches_f_formula_by_hand():
    from scipy.stats import f

    r = retest_reliability(SF_DATA, alpha=0.05)
    bms, ems = 11.2417, 1.0194  # by hand from the table
    fo = bms / ems
    fl = fo / f.ppf(0.975, 5, 15)
    fu = fo * f.ppf(0.975, 15, 5)
    assert r["icc_low"] == pytest.approx((fl - 1) / (fl + 3), abs=1e-3)
    assert r["icc_high"] == pytest.approx((fu - 1) / (fu + 3), abs=1e-3)
    assert r["icc_low"] < r["icc"] < r["icc_high"]


def test_within_subject_sd_cv_and_rc_two_sessions_by_hand():
    y = np.array([[1.0, 1.2], [2.0, 1.8], [1.5, 1.5], [1.1, 1.4]])
    r = retest_reliability(y)
    # Bland & Altman 1996: s_w^2 = mean of the subjects' variances = sum(d^2) / (2 n)
    d = y[:, 0] - y[:, 1]
    sw = np.sqrt(np.sum(d**2) / (2 * 4))
    assert r["sd_within"] == pytest.approx(sw)
    assert r["wscv_pct"] == pytest.approx(100 * sw / y.mean())
    assert r["rc"] == pytest.approx(2.77 * sw, rel=1e-3)
    assert RC_FACTOR == pytest.approx(2.7718, abs=1e-4)
    assert r["rc_low"] < r["rc"] < r["rc_high"]
    # ICC(3,1) with k = 2 equals the consistency correlation from the two variances
    s1, s2 = y.sum(axis=1), d
    icc = (np.var(s1, ddof=1) - np.var(s2, ddof=1)) / (np.var(s1, ddof=1) + np.var(s2, ddof=1))
    assert r["icc"] == pytest.approx(icc)


def test_retest_statistics_from_runs_of_the_outcome_table():
    rng = np.random.default_rng(3)
    rows = []
    for s in range(8):
        base = 1.2 * (1 + 0.2 * rng.standard_normal())
        for run in (1, 2):
            rows.append({"subject": f"{s:02d}", "condition": "baseline", "tracer": "X",
                         "run": run, "region": "NAcc", "model": "srtm",
                         "bp_nd": base * (1 + 0.05 * rng.standard_normal()), "valid": True})
    df = pd.DataFrame(rows)
    out = retest_statistics(df)
    assert len(out) == 1 and out["n"].iloc[0] == 8 and out["k"].iloc[0] == 2
    wide = df.pivot(index="subject", columns="run", values="bp_nd").to_numpy()
    assert out["icc"].iloc[0] == pytest.approx(retest_reliability(wide)["icc"])
    # without repeated runs there is nothing to report
    assert retest_statistics(df[df["run"] == 1]).empty
