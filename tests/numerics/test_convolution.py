"""The exact kernel and the continuous form against independent integration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import fftconvolve

from petbind.numerics.convolution import (
    ExpConvTable,
    PiecewiseLinear,
    mean_preserving_matrix,
    running_integral_frame_means,
)
from petbind.timing import FrameTiming

TIMING = FrameTiming.from_schedule([(6, 10), (3, 20), (2, 30), (4, 60), (4, 120), (5, 300)])


def _curve(t):
    return 50.0 * t * np.exp(-t / 0.8) + 3.0 * np.exp(-t / 40.0) * (1 - np.exp(-t))


def _fft_frame_means(pl: PiecewiseLinear, theta: float, timing: FrameTiming) -> np.ndarray:
    """Frame means of C * exp(-theta t) by FFT convolution on a 0.25 ms grid, then trapezoid."""
    h = 0.25 / 60_000 * 60  # 0.25 ms in minutes
    t = np.arange(0.0, timing.end[-1] + h, h)
    c = pl.interp(t)
    k = np.exp(-theta * t)
    y = fftconvolve(c, k)[: t.size] * h - 0.5 * h * (c * k[0] + c[0] * k)  # trapezoid ends
    return timing.frame_means(t, y)


@pytest.mark.parametrize("theta", [1e-4, 0.03, 0.5, 5.0])
def test_exp_conv_frame_means_equals_fine_fft_convolution(theta):
    pl = PiecewiseLinear.mean_preserving(TIMING, TIMING.frame_means(
        np.linspace(0, TIMING.end[-1], 20001), _curve(np.linspace(0, TIMING.end[-1], 20001))))
    exact = pl.exp_conv_frame_means(theta, TIMING)
    np.testing.assert_allclose(exact, _fft_frame_means(pl, theta, TIMING), rtol=2e-6)


def test_exp_conv_batches_over_rates_and_curves():
    pl = PiecewiseLinear.mean_preserving(TIMING, np.stack([np.linspace(1, 2, 24),
                                                           np.linspace(3, 1, 24)]))
    rates = np.array([[0.01], [0.1], [1.0]])
    out = pl.exp_conv_frame_means(rates, TIMING)
    assert out.shape == (3, 2, 24)
    one = PiecewiseLinear(pl.t, pl.y[1]).exp_conv_frame_means(0.1, TIMING)
    np.testing.assert_allclose(out[1, 1], one, rtol=1e-13)


def test_mean_preserving_form_keeps_every_frame_mean():
    rng = np.random.default_rng(0)
    means = rng.uniform(0, 10, size=(5, TIMING.n_frames))
    t, m = mean_preserving_matrix(TIMING)
    knots = means @ m.T
    assert t[0] == 0.0
    np.testing.assert_allclose(knots[:, 0], 0.0)
    # frame means of the form via FrameTiming's trapezoid rule (exact for piecewise linear)
    np.testing.assert_allclose(TIMING.frame_means(t, knots), means, rtol=1e-12)


def test_mean_preserving_form_reproduces_a_line_through_zero():
    slope = 2.5
    means = slope * TIMING.mid
    pl = PiecewiseLinear.mean_preserving(TIMING, means)
    np.testing.assert_allclose(pl.y, slope * pl.t, rtol=1e-12, atol=1e-12)


def test_running_integral_frame_means_is_exact_for_a_line():
    # C(t) = s t  ->  (1/d) int_a^b s t^2 / 2 dt = s (b^3 - a^3) / (6 d)
    s = 1.7
    a, b, d = TIMING.start, TIMING.end, TIMING.duration
    lmat = running_integral_frame_means(TIMING)
    np.testing.assert_allclose(lmat @ (s * TIMING.mid), s * (b**3 - a**3) / (6 * d), rtol=1e-12)


def test_running_integral_handles_gaps_between_frames():
    gapped = FrameTiming([0, 1, 3, 10], [1, 1, 5, 10], unit="min")
    s = 0.4
    a, b, d = gapped.start, gapped.end, gapped.duration
    lmat = running_integral_frame_means(gapped)
    np.testing.assert_allclose(lmat @ (s * gapped.mid), s * (b**3 - a**3) / (6 * d), rtol=1e-12)


def test_exp_conv_table_matches_the_exact_kernel():
    pl = PiecewiseLinear.mean_preserving(TIMING, _curve(TIMING.mid))
    table = ExpConvTable(pl, TIMING, 0.001, 2.0)
    theta = np.geomspace(0.0011, 1.9, 37) * 1.0137
    theta = theta[theta < 2.0]
    exact = pl.exp_conv_frame_means(theta, TIMING)
    val, dval = table(theta, derivative=True)
    np.testing.assert_allclose(val, exact, rtol=1e-8)
    h = 1e-5 * theta
    fd = (pl.exp_conv_frame_means(theta + h, TIMING)
          - pl.exp_conv_frame_means(theta - h, TIMING)) / (2 * h[:, None])
    scale = np.abs(fd).max(axis=1, keepdims=True)
    assert np.all(np.abs(dval - fd) <= 1e-4 * scale)


def test_mean_preserving_form_bridges_gaps_and_still_reproduces_a_line():
    gapped = FrameTiming([0, 1, 3, 10, 20], [1, 1, 5, 10, 10], unit="min")
    assert len(gapped.gaps()) == 2
    pl = PiecewiseLinear.mean_preserving(gapped, 1.3 * gapped.mid)
    assert np.sum((pl.t > 8) & (pl.t < 10)) == 8          # interior knots in the 8-10 min gap
    np.testing.assert_allclose(pl.y, 1.3 * pl.t, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gapped.frame_means(pl.t, pl.y), 1.3 * gapped.mid, rtol=1e-12)
