"""The delay pre-fit (moved from tests/test_blood.py with fit_delay): 1TCM + v_B over delays."""

import numpy as np

from petbind.blood import build_input_function
from petbind.models.delay import fit_delay
from petbind.numerics.convolution import PiecewiseLinear
from petbind.timing import FrameTiming


def _delayed_1tcm(true_delay, k1=0.4, k2=0.2, vb=0.04):
    """Input, frames and early 1TCM + v_B frame means with the input delayed."""
    t = np.arange(0, 12, 0.01)
    cpl = PiecewiseLinear(t, 50 * t * np.exp(-2 * t) + 2 * np.exp(-0.05 * t))
    inp = build_input_function(plasma=(t, cpl.y))
    tm = FrameTiming.from_schedule([(12, 10), (6, 30), (4, 60)])
    # independent truth: 1TCM by explicit Euler-free exact recursion on a 1e-3 grid
    fine = np.arange(0, 10.0005, 1e-3)
    cin = np.where(fine - true_delay >= 0, cpl.interp(np.maximum(fine - true_delay, 0)), 0)
    ct = np.zeros_like(fine)
    e = np.exp(-k2 * 1e-3)
    for i in range(1, fine.size):
        ct[i] = ct[i - 1] * e + k1 * 0.5e-3 * (cin[i] + cin[i - 1] * e)
    return inp, tm, tm.frame_means(fine, (1 - vb) * ct + vb * cin)


def test_fit_delay_finds_the_shift_of_a_1tcm_curve_within_one_step():
    step = 1 / 60
    true = 0.15
    inp, tm, data = _delayed_1tcm(true)
    out = fit_delay(inp, tm, data[None], step_min=step)
    assert abs(out.delay[0] - true) <= step


def test_fit_delay_reports_the_blood_volume_and_rates_of_its_1tcm_fit():
    inp, tm, data = _delayed_1tcm(0.15, k1=0.3, k2=0.1, vb=0.06)
    out = fit_delay(inp, tm, np.stack([data, data]), step_min=1 / 60)
    assert out.vb.shape == out.k1.shape == out.k2.shape == (2,)
    np.testing.assert_allclose(out.vb, 0.06, atol=1e-3)
    np.testing.assert_allclose(out.k1, 0.3, rtol=1e-2)
    np.testing.assert_allclose(out.k2, 0.1, rtol=3e-2)
    # with no delay range (here the true one, 0) only v_B and the rates are fitted
    inp, tm, data = _delayed_1tcm(0.0, k1=0.3, k2=0.1, vb=0.06)
    fixed = fit_delay(inp, tm, data[None], search_min=(0.0, 0.0))
    assert fixed.delay[0] == 0.0 and list(fixed.candidates) == [0.0]
    np.testing.assert_allclose(fixed.vb, 0.06, atol=1e-3)
    np.testing.assert_allclose(fixed.k1, 0.3, rtol=1e-2)


def test_fit_delay_in_blocks_equals_one_block():
    inp, tm, data = _delayed_1tcm(0.1)
    scales = np.array([[1.0], [0.5], [2.0]])
    batch = (data[None] * scales).reshape(3, 1, -1)  # any batch shape
    whole = fit_delay(inp, tm, batch)
    blocks = fit_delay(inp, tm, batch, chunk=2)
    assert blocks.delay.shape == (3, 1) and blocks.wrss.shape == whole.wrss.shape
    for name in ("delay", "vb", "k1", "k2", "wrss"):
        np.testing.assert_allclose(getattr(blocks, name), getattr(whole, name), rtol=1e-10)
    np.testing.assert_allclose(blocks.delay, 0.1, atol=1 / 60)


def test_fit_delay_recovers_a_known_delay_within_a_fraction_of_a_second():
    """Noiseless 1TCM + v_B curves (the independent recursion above) at delays off the
    coarse grid (every 4 s): on a 1-s step the delay is found exactly; between steps it is
    one of the two steps around it (the reported delay is a whole step), within 0.75 s."""
    step = 1 / 60
    for true in (0.15, 0.4, -0.5, 0.77, 0.1234, -0.21):
        inp, tm, data = _delayed_1tcm(true, k1=0.3, k2=0.1, vb=0.06)
        out = fit_delay(inp, tm, data[None], step_min=step)
        err_s = abs(out.delay[0] - true) * 60
        on_step = abs(true / step - round(true / step)) < 1e-6
        assert err_s < (1e-6 if on_step else 0.75), (true, out.delay[0])
        assert out.wrss.shape == (1, out.candidates.size)
        np.testing.assert_allclose(out.vb, 0.06, atol=3e-3)
        np.testing.assert_allclose(out.k1, 0.3, rtol=2e-2)


def test_the_delay_fit_is_the_one_tissue_engine_of_the_compartment_models():
    """At a fixed delay the pre-fit's v_B, K1 and k2 are OneTCM's on the same early frames."""
    from petbind.models.plasma import OneTCM

    inp, tm, data = _delayed_1tcm(0.0, k1=0.3, k2=0.1, vb=0.06)
    early = tm.end <= 10.0 + 1e-9
    pre = fit_delay(inp, tm, data[None], search_min=(0.0, 0.0))
    one = OneTCM(tm.subset(early), inp, vb="fit").fit(data[None, early])
    np.testing.assert_allclose(pre.k1, one.k1, rtol=1e-3)
    np.testing.assert_allclose(pre.k2, one.k2, rtol=1e-3)
    np.testing.assert_allclose(pre.vb, one.vb, atol=1e-4)
