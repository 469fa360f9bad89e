"""Region statistics equal scipy / statsmodels (and textbook formulas) run by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from petbind.errors import ConfigError, DataError
from petbind.stats.roi import Contrast, mixed_model_statistics, roi_statistics

CONDS = ("baseline", "ketamine", "ketaminenbqx")
REGIONS = ("NAcc", "VP", "caudate", "thalamus")
EFFECT = {"baseline": 1.0, "ketamine": 1.2, "ketaminenbqx": 1.0}


def _table(n_subjects: int = 5, seed: int = 1, noise: float = 0.08) -> pd.DataFrame:
    """Independent generator: subject BP_ND = base x subject factor x effect x noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        subj = 1.0 + 0.1 * rng.standard_normal()
        for r, region in enumerate(REGIONS):
            for c in CONDS:
                true = (1.0 + 0.3 * r) * subj * EFFECT[c]
                rows.append({"subject": f"{s + 1:02d}", "condition": c, "tracer": "AZ",
                             "region": region, "model": "srtm",
                             "bp_nd": true * (1 + noise * rng.standard_normal()),
                             "bp_nd_true": true, "valid": True})
    return pd.DataFrame(rows)


def _pair(df, region, cond):
    g = df[(df.region == region) & (df.condition == cond)].sort_values("subject")
    return g["bp_nd"].to_numpy()


def test_contrast_parse_names_simple_and_interaction():
    c = Contrast.parse("ketamine - baseline")
    assert (c.terms, c.name, c.kind) == (("ketamine", "baseline"), "ketamineVsBaseline", "simple")
    i = Contrast.parse("(ketamine-baseline) - ( ketaminenbqx - baseline)")
    assert i.kind == "interaction"
    assert i.expr == "(ketamine - baseline) - (ketaminenbqx - baseline)"
    assert i.name == "ketamineVsBaselineMinusKetaminenbqxVsBaseline"
    assert i.conditions == ("ketamine", "baseline", "ketaminenbqx")


@pytest.mark.parametrize("expr", ["ketamine", "ketamine + baseline", "a - a", "(a - b) - c"])
def test_contrast_parse_rejects_other_forms_naming_the_key(expr):
    with pytest.raises(ConfigError) as e:
        Contrast.parse(expr, path="study.toml", field="contrasts[0]")
    assert e.value.field == "contrasts[0]" and "study.toml" in str(e.value)


def test_simple_contrast_equals_scipy_by_hand():
    df = _table()
    c = Contrast.parse("ketamine - baseline")
    out = roi_statistics(df, [c])
    assert len(out) == len(REGIONS)
    for region in REGIONS:
        row = out[out.region == region].iloc[0]
        a, b = _pair(df, region, "ketamine"), _pair(df, region, "baseline")
        tt = stats.ttest_rel(a, b)
        assert row.t == pytest.approx(tt.statistic, rel=1e-12)
        assert row.p == pytest.approx(tt.pvalue, rel=1e-12)
        assert row.p_wilcoxon == pytest.approx(stats.wilcoxon(a - b).pvalue, rel=1e-12)
        d = a - b
        assert row.cohen_dz == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-12)
        pct = 100 * (a - b) / b
        half = stats.t.ppf(0.975, len(pct) - 1) * pct.std(ddof=1) / np.sqrt(len(pct))
        assert row["pct_change"] == pytest.approx(pct.mean(), rel=1e-12)
        assert row.pct_ci_low == pytest.approx(pct.mean() - half, rel=1e-10)
        assert row.pct_ci_high == pytest.approx(pct.mean() + half, rel=1e-10)
        # truth: the generator's effect is exactly +20 %
        assert row.pct_change_true == pytest.approx(20.0, rel=1e-12)
        assert row.n == 5 and row.df == 4


def test_holm_and_bh_correct_across_regions_by_textbook_formula():
    df = _table(seed=3, noise=0.15)
    out = roi_statistics(df, [Contrast.parse("ketamine - baseline")])
    p = out["p"].to_numpy()
    m = p.size
    order = np.argsort(p)
    holm = np.empty(m)
    holm[order] = np.minimum(1, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    np.testing.assert_allclose(out["p_holm"], holm, rtol=1e-12)
    bh = np.empty(m)
    ranked = p[order] * m / np.arange(1, m + 1)
    bh[order] = np.minimum(1, np.minimum.accumulate(ranked[::-1])[::-1])
    np.testing.assert_allclose(out["p_bh"], bh, rtol=1e-12)
    np.testing.assert_allclose(out["p_holm"], multipletests(p, method="holm")[1], rtol=1e-12)


def _power(dz: float, m: int) -> float:
    """Two-sided paired-t power from the noncentral t distribution."""
    c = stats.t.ppf(0.975, m - 1)
    nc = dz * np.sqrt(m)
    return stats.nct.sf(c, m - 1, nc) + stats.nct.cdf(-c, m - 1, nc)


def test_power_equals_noncentral_t_and_n_for_80_reaches_80_percent():
    df = _table(seed=4)
    out = roi_statistics(df, [Contrast.parse("ketamine - baseline")], alpha=0.05)
    for _, row in out.iterrows():
        n, dz = row.n, abs(row.cohen_dz)
        crit = stats.t.ppf(0.975, n - 1)
        nc = dz * np.sqrt(n)
        power = stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc)
        assert row.power == pytest.approx(power, rel=1e-6)
        k = int(row.n_for_80_power)
        assert _power(dz, k) >= 0.8 > _power(dz, k - 1)


def test_interaction_tests_difference_of_changes():
    df = _table(seed=5)
    c = Contrast.parse("(ketamine - baseline) - (ketaminenbqx - baseline)")
    out = roi_statistics(df, [c])
    for region in REGIONS:
        row = out[out.region == region].iloc[0]
        k, b, x = (_pair(df, region, cc) for cc in ("ketamine", "baseline", "ketaminenbqx"))
        tt = stats.ttest_rel(k - b, x - b)
        assert row.p == pytest.approx(tt.pvalue, rel=1e-12)
        pct = 100 * (k - b) / b - 100 * (x - b) / b
        assert row["pct_change"] == pytest.approx(pct.mean(), rel=1e-12)
        assert row.pct_change_true == pytest.approx(20.0, rel=1e-12)
        assert row.kind == "interaction"


def test_invalid_fits_are_left_out_of_the_pairs():
    df = _table()
    bad = (df.subject == "02") & (df.condition == "ketamine") & (df.region == "VP")
    df.loc[bad, "valid"] = False
    out = roi_statistics(df, [Contrast.parse("ketamine - baseline")])
    assert out.set_index("region").loc["VP", "n"] == 4
    assert out.set_index("region").loc["NAcc", "n"] == 5


def test_contrast_naming_unknown_condition_is_a_config_error():
    with pytest.raises(ConfigError, match="placebo"):
        roi_statistics(_table(), [Contrast.parse("placebo - baseline")])


def test_two_values_per_subject_and_condition_is_a_data_error():
    df = _table()
    df = pd.concat([df, df.iloc[:1]])
    with pytest.raises(DataError, match="more than one"):
        roi_statistics(df, [Contrast.parse("ketamine - baseline")])


def test_noise_free_changes_give_zero_variance_without_crashing():
    df = _table(noise=0.0)
    out = roi_statistics(df, [Contrast.parse("ketaminenbqx - baseline")])
    assert np.all(out["pct_change"].abs() < 1e-9)
    assert out["power"].isna().all()


def test_mixed_model_estimate_and_se_equal_balanced_anova_formulas():
    rng = np.random.default_rng(7)
    n, rows = 6, []
    for s in range(n):
        u = 0.5 * rng.standard_normal()  # large subject spread: variance off the boundary
        for c in CONDS:
            rows.append({"subject": f"s{s}", "condition": c, "tracer": "T", "model": "m",
                         "region": "R", "bp_nd": 2 + u + 0.3 * EFFECT[c]
                         + 0.05 * rng.standard_normal()})
    df = pd.DataFrame(rows)
    c = Contrast.parse("ketamine - baseline")
    out = mixed_model_statistics(df, [c, Contrast.parse(
        "(ketamine - baseline) - (ketaminenbqx - baseline)")], baseline="baseline")
    y = df.pivot(index="subject", columns="condition", values="bp_nd")[list(CONDS)].to_numpy()
    resid = y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + y.mean()
    ms_res = (resid**2).sum() / ((n - 1) * (len(CONDS) - 1))
    row = out.iloc[0]
    assert row.estimate == pytest.approx(y[:, 1].mean() - y[:, 0].mean(), rel=1e-6)
    assert row.se == pytest.approx(np.sqrt(2 * ms_res / n), rel=1e-4)
    assert row.p == pytest.approx(2 * stats.norm.sf(abs(row.estimate / row.se)), rel=1e-6)
    assert bool(row.converged)
    inter = out.iloc[1]
    assert inter.estimate == pytest.approx(y[:, 1].mean() - y[:, 2].mean(), rel=1e-6)


def test_contrast_combine_works_on_voxel_arrays_for_an_interaction():
    rng = np.random.default_rng(11)
    v = {c: 1 + rng.random((4, 7)) for c in CONDS}
    c = Contrast.parse("(ketamine - baseline) - (ketaminenbqx - baseline)")
    a, b, pct = c.combine(v)
    k, base, x = v["ketamine"], v["baseline"], v["ketaminenbqx"]
    np.testing.assert_allclose(a - b, k - x, rtol=1e-12)
    np.testing.assert_allclose(pct, 100 * (k - x) / base, rtol=1e-12)


def test_mixed_model_flags_a_zero_subject_variance_as_boundary():
    rng = np.random.default_rng(2)
    rows = [{"subject": f"s{s}", "condition": c, "tracer": "T", "model": "m", "region": "R",
             "bp_nd": 1 + 0.2 * EFFECT[c] + 0.05 * rng.standard_normal()}
            for s in range(4) for c in CONDS]
    df = pd.DataFrame(rows)
    # subtract each subject's mean: no between-subject spread is left to estimate
    df["bp_nd"] -= df.groupby("subject")["bp_nd"].transform("mean") - 1.0
    out = mixed_model_statistics(df, [Contrast.parse("ketamine - baseline")],
                                 baseline="baseline")
    assert bool(out.iloc[0]["boundary"])
    y = df.pivot(index="subject", columns="condition", values="bp_nd")
    assert out.iloc[0]["estimate"] == pytest.approx((y["ketamine"] - y["baseline"]).mean(),
                                                    rel=1e-6)
