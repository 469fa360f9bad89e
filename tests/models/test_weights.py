"""Frame weights and windows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from petbind.errors import ModelError
from petbind.models.weights import frame_weights, window_mask
from petbind.timing import FrameTiming

TIMING = FrameTiming.from_schedule([(4, 30), (4, 120), (4, 600)])


def test_uniform_and_duration_weights_are_normalised_to_mean_one():
    np.testing.assert_allclose(frame_weights("uniform", TIMING), 1.0)
    w = frame_weights("duration", TIMING)
    np.testing.assert_allclose(w, TIMING.duration / TIMING.duration.mean())


def test_counts_weights_follow_duration_over_activity_times_decay_factor():
    curve = np.linspace(5.0, 1.0, TIMING.n_frames)
    lam = math.log(2) / 20.364  # C-11, 1/min
    a, d = TIMING.start, TIMING.duration
    df = lam * d * np.exp(lam * a) / (1 - np.exp(-lam * d))
    expect = d / (curve * df)
    w = frame_weights("counts", TIMING, curve=curve, isotope="C-11")
    np.testing.assert_allclose(w, expect / expect.mean(), rtol=1e-12)


def test_counts_weights_need_the_isotope_for_decay_corrected_data():
    with pytest.raises(ModelError, match="radionuclide"):
        frame_weights("counts", TIMING, curve=np.ones(TIMING.n_frames))
    w = frame_weights("counts", TIMING, curve=np.ones(TIMING.n_frames), decay_corrected=False)
    np.testing.assert_allclose(w, TIMING.duration / TIMING.duration.mean())


def test_window_zeroes_weights_outside_and_renormalises_inside():
    win = window_mask(TIMING, 2.0, 10.0)
    w = frame_weights("duration", TIMING, window=win)
    assert np.all(w[~win] == 0)
    assert w[win].mean() == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [[-1.0] + [1.0] * 11, [np.nan] + [1.0] * 11, [1.0] * 3])
def test_bad_user_weights_are_refused(bad):
    with pytest.raises(ModelError, match="weights"):
        frame_weights(np.array(bad), TIMING)


def test_unknown_scheme_and_empty_window_are_refused():
    with pytest.raises(ModelError, match="unknown weighting"):
        frame_weights("poisson", TIMING)
    with pytest.raises(ModelError, match="window"):
        window_mask(TIMING, 100.0, 200.0)
    with pytest.raises(ModelError, match="not after"):
        window_mask(TIMING, 10.0, 5.0)
