"""Tissue ratio (SUVR with a reference region) over a window."""

from __future__ import annotations

import numpy as np
import pytest

from petbind.errors import DataError
from petbind.models import get_model
from petbind.timing import FrameTiming

TIMING = FrameTiming.from_schedule([(6, 10), (4, 60), (4, 300), (3, 600)])


def test_ratio_is_the_time_weighted_mean_ratio_over_the_window():
    rng = np.random.default_rng(3)
    ref = rng.uniform(1, 3, TIMING.n_frames)
    tgt = rng.uniform(2, 6, (4, TIMING.n_frames))
    fit = get_model("suvr", timing=TIMING, ref=ref, start=30.0, end=70.0).fit(tgt)
    win = (TIMING.start >= 30.0) & (TIMING.end <= 70.0)
    d = TIMING.duration[win]
    expect = (tgt[:, win] @ d) / (ref[win] @ d)
    np.testing.assert_allclose(fit.suvr, expect, rtol=1e-12)
    np.testing.assert_allclose(fit.bp_nd, expect - 1, rtol=1e-12)
    assert list(fit.to_frame(list("abcd")).columns[:4]) == ["region", "model", "bp_nd", "suvr"]


def test_default_window_is_the_last_third_and_is_recorded():
    ref = np.ones(TIMING.n_frames)
    model = get_model("suvr", timing=TIMING, ref=ref)
    assert model.settings["window_rule"] == "last third of the scan"
    used = TIMING.start >= TIMING.end[-1] * 2 / 3 - 1e-9
    assert model.window.tolist() == used.tolist()


def test_reference_without_signal_in_the_window_is_an_error():
    ref = np.where(TIMING.start < 30, 1.0, 0.0)
    with pytest.raises(DataError, match="window"):
        get_model("suvr", timing=TIMING, ref=ref, start=40.0)
