"""Occupancy and Lassen plot: recovery of simulated blocking data."""

import numpy as np
import pandas as pd
import pytest

from petbind.stats.occupancy import _fieller, lassen, occupancy_statistics

OCC = 0.6
BP = np.array([0.4, 0.8, 1.2, 1.8, 2.5, 3.2])


def test_lassen_on_vt_recovers_occupancy_and_vnd_exactly():
    vnd = 0.7
    vt_base = vnd * (1 + BP)
    vt_block = vnd * (1 + BP * (1 - OCC))
    r = lassen(vt_base, vt_block)
    assert r["occupancy"] == pytest.approx(OCC, rel=1e-9)
    assert r["v_nd"] == pytest.approx(vnd, rel=1e-9)
    assert r["r2"] == pytest.approx(1.0)


def test_lassen_intervals_cover_with_noise_and_fieller_by_hand():
    rng = np.random.default_rng(1)
    vnd = 0.7
    vt_base = vnd * (1 + BP) * (1 + 0.03 * rng.standard_normal(BP.size))
    vt_block = vnd * (1 + BP * (1 - OCC)) * (1 + 0.03 * rng.standard_normal(BP.size))
    r = lassen(vt_base, vt_block)
    assert r["occupancy_low"] < r["occupancy"] < r["occupancy_high"]
    assert r["v_nd_low"] < r["v_nd"] < r["v_nd_high"]
    # Fieller: the bounds solve (a + b x0)^2 = t^2 Var(a + b x0)
    a, b, va, vb, cab, t = -1.0, 2.0, 0.01, 0.02, -0.005, 2.5
    lo, hi = _fieller(a, b, va, vb, cab, t)
    for x0 in (lo, hi):
        assert (a + b * x0) ** 2 == pytest.approx(t * t * (va + 2 * x0 * cab + x0**2 * vb))
    assert lo < -a / b < hi


def test_noise_free_blocking_through_srtm_recovers_occupancy_within_1_percent():
    """Simulator kinetics, SRTM fits, then occupancy.

    The specific compartment exchanges fast (k4 = 1/min), where SRTM's one-tissue
    assumption holds; with the demo's k4 = 0.12/min SRTM's own bias in BP_ND
    (about 1 %) would be tested instead of the occupancy arithmetic.
    """
    from petbind.models import make_model
    from petbind.simulate.config import load_config
    from petbind.simulate.kinetics import pet_frame_means

    cfg = load_config(None)
    tr = cfg.tracers[0]
    n = BP.size
    r1 = np.ones(n)
    k4 = 1.0

    def curves(bp):
        k1 = np.r_[tr.k1prime, r1 * tr.k1prime]
        k2 = np.r_[tr.k2prime, r1 * tr.k2prime]
        k3 = np.r_[0.0, bp * k4]
        return pet_frame_means(tr.plasma_input, tr.blood, cfg.timing, K1=k1, k2=k2, k3=k3,
                               k4=np.full(n + 1, k4), vb=np.zeros(n + 1))

    rows = []
    for cond, bp in (("baseline", BP), ("blocked", BP * (1 - OCC))):
        tacs = curves(bp)
        fit = make_model("srtm", cfg.timing, tacs[0]).fit(tacs[1:])
        for i, v in enumerate(np.asarray(fit.params["bp_nd"]).ravel()):
            rows.append({"subject": "01", "condition": cond, "tracer": "X", "region": f"r{i}",
                         "model": "srtm", "bp_nd": v, "valid": True})
    per, las = occupancy_statistics(pd.DataFrame(rows), baseline="baseline",
                                    blocked=["blocked"])
    np.testing.assert_allclose(per["occupancy"], OCC, rtol=0.01)
    dvr = las[las["input"] == "DVR"].iloc[0]
    assert dvr["occupancy"] == pytest.approx(OCC, rel=0.01)
    # the reference has no specific binding: the DVR x-intercept V_ND / V_T,ref is 1
    assert dvr["v_nd"] == pytest.approx(1.0, rel=0.01)


def test_plasma_vt_column_gives_a_vt_lassen_row():
    vnd = 0.5
    rows = []
    for cond, bp in (("baseline", BP), ("blocked", BP * (1 - OCC))):
        for i, v in enumerate(bp):
            rows.append({"subject": "01", "condition": cond, "tracer": "X", "region": f"r{i}",
                         "model": "2tcm", "bp_nd": v, "vt": vnd * (1 + v), "valid": True})
    _, las = occupancy_statistics(pd.DataFrame(rows), baseline="baseline", blocked=["blocked"])
    vt = las[las["input"] == "V_T"].iloc[0]
    assert vt["occupancy"] == pytest.approx(OCC) and vt["v_nd"] == pytest.approx(vnd)


def test_deming_line_is_exact_without_noise_and_matches_orthogonal_regression():
    from petbind.stats.occupancy import deming

    x = np.array([1.0, 2.0, 3.5, 4.0, 6.0])
    a, b = deming(x, 0.3 + 0.45 * x)
    assert a == pytest.approx(0.3, rel=1e-12) and b == pytest.approx(0.45, rel=1e-12)
    # error ratio 1: the line minimising perpendicular distances = the first principal axis
    rng = np.random.default_rng(2)
    y = 0.3 + 0.45 * x + 0.2 * rng.standard_normal(x.size)
    a, b = deming(x, y)
    cov = np.cov(np.vstack([x, y]))
    w, v = np.linalg.eigh(cov)
    axis = v[:, np.argmax(w)]
    assert b == pytest.approx(axis[1] / axis[0], rel=1e-10)
    assert a == pytest.approx(y.mean() - b * x.mean(), rel=1e-10)


def test_noise_free_lassen_recovers_occupancy_and_vnd_within_1_percent_both_fits():
    for occ in (0.2, 0.6, 0.9):
        vnd = 0.45
        r = lassen(vnd * (1 + BP), vnd * (1 + BP * (1 - occ)))
        assert r["method"] == "deming"
        for key in ("occupancy", "occupancy_ols"):
            assert r[key] == pytest.approx(occ, rel=0.01)
        for key in ("v_nd", "v_nd_ols"):
            assert r[key] == pytest.approx(vnd, rel=0.01)


def test_errors_in_both_variables_eiv_bias_is_smaller_than_ols_bias():
    """Independent simulation: V_T,base and V_T,blocked both measured with error.

    The classical plot's OLS slope is pulled towards 1 (the baseline error is
    in x and in the drop y), i.e. occupancy is overstated by about
    (1 - occ)(1 - R), R the reliability of V_T,base across regions; the
    Deming (errors-in-variables) fit is unbiased within Monte Carlo error.
    """
    occ, vnd, sd, reps = 0.6, 0.7, 0.25, 600
    bp = np.linspace(0.3, 3.5, 12)
    vt, vb = vnd * (1 + bp), vnd * (1 + bp * (1 - occ))
    rng = np.random.default_rng(11)
    eiv, ols, vnd_eiv, vnd_ols = [], [], [], []
    for _ in range(reps):
        r = lassen(vt + sd * rng.standard_normal(bp.size),
                   vb + sd * rng.standard_normal(bp.size))
        eiv.append(r["occupancy"])
        ols.append(r["occupancy_ols"])
        vnd_eiv.append(r["v_nd"])
        vnd_ols.append(r["v_nd_ols"])
    eiv, ols = np.array(eiv) - occ, np.array(ols) - occ
    se_eiv, se_ols = (v.std(ddof=1) / np.sqrt(reps) for v in (eiv, ols))
    diff = ols - eiv
    assert ols.mean() > 6 * se_ols  # OLS overstates occupancy
    reliability = vt.var() / (vt.var() + sd**2)
    assert ols.mean() == pytest.approx((1 - occ) * (1 - reliability), rel=0.25)
    assert abs(eiv.mean()) < 3 * se_eiv  # EIV: no bias beyond Monte Carlo error
    assert abs(eiv.mean()) < 0.3 * abs(ols.mean())
    assert diff.mean() > 10 * diff.std(ddof=1) / np.sqrt(reps)
    # V_ND (a ratio: compare medians)
    assert abs(np.median(vnd_eiv) - vnd) < abs(np.median(vnd_ols) - vnd)


def test_eiv_jackknife_interval_covers_near_nominal():
    occ, vnd, sd = 0.5, 0.7, 0.1
    vt, vb = vnd * (1 + BP), vnd * (1 + BP * (1 - occ))
    rng = np.random.default_rng(4)
    hits = []
    for _ in range(400):
        r = lassen(vt + sd * rng.standard_normal(BP.size), vb + sd * rng.standard_normal(BP.size))
        hits.append(r["occupancy_low"] < occ < r["occupancy_high"])
    # 95 % nominal; jackknife intervals with 6 regions: allow 4 MC SE below
    assert np.mean(hits) > 0.95 - 4 * np.sqrt(0.95 * 0.05 / 400)
