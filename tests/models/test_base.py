"""The Fit container: statistics computed by hand on a small example."""

from __future__ import annotations

import numpy as np

from petbind.models.base import Fit
from petbind.timing import FrameTiming

TIMING = FrameTiming.from_durations([1, 1, 2, 2], unit="min")


def _fit() -> Fit:
    data = np.array([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0]])
    fitted = np.array([[1.5, 2.0, 2.5, np.nan], [2.0, 2.0, 2.0, np.nan]])
    weights = np.array([1.0, 2.0, 1.0, 0.0])
    return Fit(model="toy", timing=TIMING, params={"bp_nd": np.array([1.0, 2.0])},
               data=data, fitted=fitted, weights=weights, valid=np.array([True, False]),
               n_params=1, se={"bp_nd": np.array([0.1, 0.2])})


def test_weighted_rss_aic_and_r2_by_hand():
    fit = _fit()
    # curve 0, frames 0-2 used: residuals -0.5, 0, 0.5 with weights 1, 2, 1
    wrss = 0.25 + 0 + 0.25
    assert fit.wrss[0] == wrss
    assert fit.n_used[0] == 3
    assert fit.aic[0] == 3 * np.log(wrss / 3) + 2
    mean = (1 + 4 + 3) / 4
    tss = (1 - mean) ** 2 + 2 * (2 - mean) ** 2 + (3 - mean) ** 2
    assert np.isclose(fit.r2[0], 1 - wrss / tss)
    assert np.isnan(fit.aic[1]) and np.isnan(fit.r2[1])


def test_tidy_table_and_attribute_access():
    fit = _fit()
    df = fit.to_frame(["a", "b"])
    # bound and invalid_reason: columns issue 17 adds to the contract
    assert list(df.columns) == ["region", "model", "bp_nd", "bp_nd_se", "aic", "r2",
                                "n_frames_used", "valid", "bound", "invalid_reason"]
    assert df["valid"].tolist() == [True, False]
    assert fit.bp_nd.tolist() == [1.0, 2.0]
    assert np.isnan(fit.residuals[0, 3])


def test_goodness_of_fit_rule_by_hand():
    # a prediction worse than the curve's own mean: R^2 = 1 - 8/5 < 0
    data = np.array([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0]])
    fitted = np.array([[3.0, 2.0, 1.0, 4.0], [2.0, 2.0, 2.0, 2.0]])
    kw = {"timing": TIMING, "params": {"bp_nd": np.array([1.0, 2.0])}, "data": data,
          "fitted": fitted, "weights": np.ones(4), "valid": np.array([True, True]),
          "n_params": 1}
    srtm = Fit(model="srtm", **kw)
    assert np.isclose(srtm.r2[0], 1 - 8 / 5)
    # constant curve: TSS = 0, R^2 not finite
    assert srtm.invalid_reason.tolist() == ["poor fit: R2 < 0", "poor fit: R2 not finite"]
    df = srtm.to_frame(["a", "b"])
    assert df["valid"].tolist() == [False, False] and df["bp_nd"].isna().all()
    # a ratio's "fit" is not fitted to the curve: only the finite rule applies
    suvr = Fit(model="suvr", **kw)
    assert suvr.invalid_reason.tolist() == ["", "poor fit: R2 not finite"]


def test_judge_orders_the_reasons_and_names_bounds():
    from petbind.models.base import REASONS, judge

    usable = np.array([False, True, True, True, True])
    solved = np.array([False, False, False, False, True])
    n_used = np.array([5, 3, 5, 5, 5])
    bound = {"k1": np.array([True, True, True, False, False]),
             "vb": np.array([False, False, True, False, False])}
    valid, reason, mask, names = judge(usable, solved, n_used, 3, bound)
    assert [REASONS[r] for r in reason] == [
        "unusable curve", "no residual degree of freedom", "parameter at bound", "fit failed",
        ""]
    assert valid.tolist() == [False, False, False, False, True]
    fit = Fit(model="toy", timing=TIMING, params={}, data=np.zeros((5, 4)),
              fitted=np.zeros((5, 4)), weights=np.ones(4), valid=valid, n_params=3,
              reason=reason, bound_mask=mask, bound_names=names)
    assert fit.bound.tolist() == ["k1", "k1", "k1,vb", "", ""]
    assert fit.invalid_reason[2] == "parameter at bound: k1,vb"


def test_derived_values_are_computed_from_the_fitted_ones_not_stored():
    """DVR and k2' of an SRTM fit, V_T of a 1TCM fit: one source, same names in the outputs."""
    import pickle

    from petbind.models.base import Params

    fit = Fit(model="srtm", timing=TIMING,
              params={"bp_nd": np.array([1.0, 3.0]), "r1": np.array([0.5, 2.0]),
                      "k2": np.array([0.1, np.nan]), "k2a": np.array([0.05, 0.1])},
              data=np.ones((2, 4)), fitted=np.ones((2, 4)), weights=np.ones(4),
              valid=np.array([True, False]), n_params=4)
    assert isinstance(fit.params, Params)
    assert set(fit.params.stored) == {"bp_nd", "r1", "k2", "k2a"}
    assert fit.params.derived == ("k2prime", "dvr")
    assert list(fit.params) == ["bp_nd", "r1", "k2", "k2a", "k2prime", "dvr"]
    np.testing.assert_array_equal(fit.dvr, [2.0, 4.0])  # BP_ND + 1
    assert fit.k2prime[0] == 0.1 / 0.5 and np.isnan(fit.k2prime[1])  # NaN input -> NaN
    fixed = Fit(model="srtm2", timing=TIMING, params=dict(fit.params.stored),
                data=fit.data, fitted=fit.data, weights=fit.weights, valid=fit.valid,
                n_params=2, settings={"k2prime": 0.25})
    np.testing.assert_array_equal(fixed.k2prime, [0.25, np.nan])  # the given k2'
    back = pickle.loads(pickle.dumps(fit))
    np.testing.assert_array_equal(back.params["dvr"], fit.params["dvr"])
    one = Fit(model="1tcm", timing=TIMING, params={"k1": np.array([0.3]),
                                                   "k2": np.array([0.1])},
              data=np.ones((1, 4)), fitted=np.ones((1, 4)), weights=np.ones(4),
              valid=np.array([True]), n_params=2)
    assert one.vt[0] == 0.3 / 0.1
    assert "vt" in one.to_frame().columns
