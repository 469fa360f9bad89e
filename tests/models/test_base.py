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
    assert list(df.columns) == ["region", "model", "bp_nd", "bp_nd_se", "aic", "r2",
                                "n_frames_used", "valid"]
    assert df["valid"].tolist() == [True, False]
    assert fit.bp_nd.tolist() == [1.0, 2.0]
    assert np.isnan(fit.residuals[0, 3])
