"""Mixed model with group and covariate against statsmodels called directly."""

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from petbind.errors import DataError
from petbind.stats.design import attach_covariates, mixed_design_statistics
from petbind.stats.roi import Contrast


def _data(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(12):
        grp = "A" if i < 6 else "B"
        subj = 1.0 + 0.15 * rng.standard_normal()
        for cond in ("baseline", "drug"):
            dose = 0.0 if cond == "baseline" else rng.uniform(0.5, 1.5)
            effect = (0.2 if grp == "B" else 0.0) * (cond == "drug") - 0.1 * dose
            rows.append({"subject": f"{i:02d}", "condition": cond, "tracer": "X",
                         "region": "NAcc", "model": "srtm", "group": grp, "dose": dose,
                         "bp_nd": subj + effect + 0.03 * rng.standard_normal(),
                         "valid": True})
    return pd.DataFrame(rows)


def test_group_difference_and_covariate_match_statsmodels_with_dummy_coding():
    df = _data()
    out = mixed_design_statistics(df, [Contrast.parse("drug - baseline")],
                                  baseline="baseline", group="group", covariates=["dose"])
    # independent: the same model written with 0/1 columns, fitted by statsmodels
    d = df.assign(drug=(df["condition"] == "drug").astype(float),
                  grpB=(df["group"] == "B").astype(float))
    ref = smf.mixedlm("bp_nd ~ drug + grpB + drug:grpB + dose", d,
                      groups=d["subject"]).fit(reml=True)
    gd = out[out["kind"] == "group difference (B - A)"].iloc[0]
    assert gd["estimate"] == pytest.approx(ref.params["drug:grpB"], rel=1e-4)
    assert gd["se"] == pytest.approx(ref.bse["drug:grpB"], rel=1e-3)
    assert gd["p"] == pytest.approx(ref.pvalues["drug:grpB"], rel=1e-2)
    dose = out[(out["kind"] == "fixed") & (out["term"] == "dose")].iloc[0]
    assert dose["estimate"] == pytest.approx(ref.params["dose"], rel=1e-4)
    in_b = out[out["kind"] == "contrast in B"].iloc[0]
    assert in_b["estimate"] == pytest.approx(ref.params["drug"] + ref.params["drug:grpB"],
                                             rel=1e-4)
    # the simulated truth: group B's drug effect is 0.2 larger, dose lowers BP_ND by 0.1/unit
    assert gd["ci_low"] < 0.2 < gd["ci_high"]
    assert dose["ci_low"] < -0.1 < dose["ci_high"]


def test_attach_covariates_from_bids_tables(tmp_path):
    (tmp_path / "participants.tsv").write_text(
        "participant_id\tgroup\tweight\nsub-01\tA\t7.5\nsub-02\tB\t8.0\n")
    for s in ("01", "02"):
        (tmp_path / f"sub-{s}").mkdir()
        (tmp_path / f"sub-{s}" / f"sub-{s}_sessions.tsv").write_text(
            "session_id\tdose\nses-baseline\t0\nses-drug\t1.5\n")
    out = pd.DataFrame({"subject": ["01", "01", "02", "02"],
                        "condition": ["baseline", "drug"] * 2, "bp_nd": [1.0, 1.1, 1.2, 1.3]})
    got = attach_covariates(out, tmp_path, group="group", covariates=["dose", "weight"])
    assert list(got["group"]) == ["A", "A", "B", "B"]
    assert list(got["dose"]) == [0.0, 1.5, 0.0, 1.5]
    assert list(got["weight"]) == [7.5, 7.5, 8.0, 8.0]
    with pytest.raises(DataError, match="covariate 'plasma'"):
        attach_covariates(out, tmp_path, covariates=["plasma"])
