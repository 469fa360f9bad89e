"""Blood processing: each step recovers the function it was generated from."""

import numpy as np
import pytest

from petbind.blood import (
    PARENT_MODELS,
    PlasmaBloodRatio,
    build_input_function,
    check_samples,
    correct_dispersion,
    decay_correct_samples,
    fit_parent_fraction,
    merge_samples,
    shift_curve,
)
from petbind.errors import DataError
from petbind.numerics.convolution import PiecewiseLinear
from petbind.timing import FrameTiming

T_PF = np.array([2.5, 5, 10, 15, 20, 30, 40, 50, 60, 75, 90.0])
FILE = "sub-01_recording-manual_blood.tsv"


def hill(t, a, b, c):
    return 1 - a * t**b / (c**b + t**b)


def power(t, a, b, c):
    return (1 + (a * t) ** b) ** (-c)


def biexp(t, a, b, c):
    return a * np.exp(-b * t) + (1 - a) * np.exp(-c * t)


@pytest.mark.parametrize(("kind", "func", "params"), [
    ("hill", hill, (0.8, 1.8, 12.0)),
    ("power", power, (0.08, 1.5, 0.7)),
    ("exponential", biexp, (0.6, 0.01, 0.25)),
])
def test_parent_fraction_model_recovers_its_generating_function(kind, func, params):
    f = func(T_PF, *params)
    fit = fit_parent_fraction(T_PF, f, kind)
    grid = np.linspace(0, 90, 181)
    np.testing.assert_allclose(fit(grid), func(grid, *params), atol=1e-5)
    if kind == "hill":
        np.testing.assert_allclose([fit.params[k] for k in "abc"], params, rtol=1e-4)


def test_parent_fraction_auto_picks_the_generating_model_by_aic():
    rng = np.random.default_rng(0)
    f = np.clip(hill(T_PF, 0.8, 1.8, 12.0) + rng.normal(0, 0.003, T_PF.size), 0, 1)
    fit = fit_parent_fraction(T_PF, f, "auto")
    assert set(fit.candidates) == set(PARENT_MODELS)
    assert fit.kind == min(fit.candidates, key=fit.candidates.get)
    grid = np.linspace(0, 90, 181)
    np.testing.assert_allclose(fit(grid), hill(grid, 0.8, 1.8, 12.0), atol=0.01)


def test_parent_fraction_interpolation_starts_at_one_and_holds_the_last_value():
    fit = fit_parent_fraction([5.0, 10.0], [0.8, 0.6], "interp")
    np.testing.assert_allclose(fit([0.0, 2.5, 7.5, 50.0]), [1.0, 0.9, 0.7, 0.6])


def test_plasma_blood_ratio_models_recover_constant_linear_and_interpolated():
    t = np.array([1.0, 5, 10, 30, 60])
    lin = 1.1 + 0.002 * t
    fit = PlasmaBloodRatio.fit(t, lin, "linear")
    np.testing.assert_allclose(fit.coef, (1.1, 0.002), rtol=1e-10)
    np.testing.assert_allclose(fit(np.array([0.0, 90.0])), [1.1, 1.28])
    assert PlasmaBloodRatio.fit(t, np.full(5, 1.2), "constant")(np.array([3.0])) == [1.2]
    r = np.array([1.0, 1.2, 1.1, 1.3, 1.25])
    interp = PlasmaBloodRatio.fit(t, r, "interp")
    np.testing.assert_allclose(interp(t), r)
    assert interp(np.array([7.5]))[0] == pytest.approx(1.15)


def test_input_function_is_ratio_times_blood_times_parent_at_every_sample():
    t = np.array([0.5, 1, 2, 5, 10, 20, 40, 60, 90.0])
    wb = 100 * t * np.exp(-t / 2) + 5 * np.exp(-0.01 * t)
    ratio = PlasmaBloodRatio.fit(t, 1.1 + 0.002 * t, "linear")
    parent = fit_parent_fraction(T_PF, hill(T_PF, 0.8, 1.8, 12.0), "hill")
    inp = build_input_function(whole_blood=(t, wb), ratio=ratio, parent=parent)
    expected = (1.1 + 0.002 * t) * wb * hill(t, 0.8, 1.8, 12.0)
    np.testing.assert_allclose(inp.plasma.interp(t), expected, rtol=1e-6)
    np.testing.assert_allclose(inp.blood.interp(t), wb)
    assert inp.plasma.interp(np.array([0.0]))[0] == 0.0
    assert inp.settings["parent_fraction"] == "hill"


def test_merge_keeps_autosampler_over_its_span_and_manual_samples_after():
    t, y = merge_samples((np.array([0.0, 1, 2, 3]), np.array([0.0, 5, 4, 3])),
                         (np.array([2.0, 10, 20]), np.array([9.0, 2, 1])))
    np.testing.assert_array_equal(t, [0, 1, 2, 3, 10, 20])
    np.testing.assert_array_equal(y, [0, 5, 4, 3, 2, 1])
    t, y = merge_samples((np.array([0.0, 1, 2, 3]), np.array([0.0, 5, 4, 3])),
                         (np.array([2.0, 10, 20]), np.array([9.0, 2, 1])), prefer="manual")
    np.testing.assert_array_equal(t, [0, 1, 2, 10, 20])


def test_decay_correction_turns_physical_decay_into_a_constant():
    lam = np.log(2) / 20.364
    t = np.array([1.0, 10, 60])
    phys = 50 * np.exp(-lam * t)
    np.testing.assert_allclose(decay_correct_samples(t, phys, "C-11", from_ref_min=None), 50)
    # corrected to scan start (5 min) -> to injection: times exp(lambda 5)
    np.testing.assert_allclose(
        decay_correct_samples(t, np.full(3, 50.0), "C-11", from_ref_min=5.0),
        50 * np.exp(lam * 5))


def test_dispersion_correction_recovers_the_undispersed_curve():
    b, tau = 1.5, 0.1  # gamma-variate t exp(-b t), dispersion 6 s
    t = np.arange(0, 10, 0.002)
    k = 1 / tau
    d = k - b
    dispersed = (np.exp(-b * t) * (t / d - 1 / d**2) + np.exp(-k * t) / d**2) / tau
    true = t * np.exp(-b * t)
    out = correct_dispersion(t, dispersed, tau)
    assert np.max(np.abs(dispersed - true)) > 0.02  # the dispersion is visible
    np.testing.assert_allclose(out, true, atol=1e-4)  # 0.04 % of the peak


def test_shift_curve_delays_exactly_both_ways():
    c = PiecewiseLinear(np.array([0.0, 1, 2, 5]), np.array([0.0, 4, 2, 1]))
    t = np.linspace(0, 6, 61)
    for d in (0.3, -0.4):
        np.testing.assert_allclose(shift_curve(c, d).interp(t),
                                   np.where(t - d >= 0, c.interp(np.maximum(t - d, 0)), 0),
                                   atol=1e-12)


@pytest.mark.parametrize(("kw", "field", "text"), [
    ({"t": [0, 2, 1], "y": [1, 2, 3]}, "time", "not strictly increasing"),
    ({"t": [0, 1, 2], "y": [1, -2, 3]}, "whole_blood_radioactivity", "negative"),
    ({"t": [0, 1, 2], "y": [1, 1.2, 0.9], "fraction": True}, "metabolite_parent_fraction",
     "> 1"),
    ({"t": [0, 1, 2], "y": [1, np.nan, 3]}, "whole_blood_radioactivity", "non-finite"),
])
def test_bad_samples_raise_errors_naming_file_and_column(kw, field, text):
    value_field = "metabolite_parent_fraction" if kw.get("fraction") else \
        "whole_blood_radioactivity"
    with pytest.raises(DataError) as err:
        check_samples(kw["t"], kw["y"], path=FILE, value_field=value_field,
                      fraction=kw.get("fraction", False))
    assert err.value.path == FILE and err.value.field == field
    assert text in str(err.value) and FILE in str(err.value)


def test_parent_fraction_above_one_is_refused_by_the_fit():
    with pytest.raises(DataError, match="metabolite_parent_fraction"):
        fit_parent_fraction([1, 2, 3, 4], [1.0, 1.5, 0.9, 0.8], path=FILE)


def test_unsorted_plasma_samples_are_refused_when_building_the_input():
    with pytest.raises(DataError) as err:
        build_input_function(plasma=([0, 2, 1, 3], [0, 5, 4, 3]), source=FILE)
    assert err.value.field == "time" and err.value.path == FILE


def test_blood_ending_before_the_scan_names_file_and_time_column():
    inp = build_input_function(plasma=([0, 1, 30, 60], [0, 5, 2, 1]), source=FILE)
    tm = FrameTiming.from_schedule([(9, 600)])
    with pytest.raises(DataError) as err:
        inp.check_covers(tm)
    assert err.value.path == FILE and err.value.field == "time"
    inp.check_covers(tm.subset(tm.end <= 60))


def _recordings(decay_corrected=True):
    from petbind.io.blood import BloodRecording

    def wb(t):
        return 100 * t * np.exp(-t / 0.5) + 8 * np.exp(-0.02 * t)

    ta = np.arange(0, 5.0001, 1 / 60)
    tm = np.array([1.0, 3, 6, 10, 20, 30, 45, 60, 75, 90])
    lam = np.log(2) / 20.364
    scale = (lambda t: np.exp(-lam * t)) if not decay_corrected else (lambda t: 1.0)
    auto = BloodRecording("autosampler", ta, {"whole_blood_radioactivity": wb(ta) * scale(ta)},
                          {"DispersionCorrected": True, "DecayCorrected": decay_corrected},
                          "sub-01_recording-autosampler_blood.tsv")
    manual = BloodRecording("manual", tm, {
        "whole_blood_radioactivity": wb(tm) * scale(tm),
        "plasma_radioactivity": 1.25 * wb(tm) * scale(tm),
        "metabolite_parent_fraction": hill(tm, 0.8, 1.8, 12.0)},
        {"DecayCorrected": decay_corrected}, FILE)
    return [auto, manual], wb


def test_input_from_recordings_merges_autosampler_and_manual_with_ratio_and_parent():
    from petbind.blood import input_from_recordings

    recs, wb = _recordings()
    inp = input_from_recordings(recs, parent_model="hill")
    t = np.array([0.5, 2.0, 4.0, 10.0, 60.0, 90.0])
    np.testing.assert_allclose(inp.blood.interp(t), wb(t), rtol=1e-3)
    np.testing.assert_allclose(inp.plasma.interp(t), 1.25 * wb(t) * hill(t, 0.8, 1.8, 12.0),
                               rtol=1e-3)
    assert inp.settings["plasma_blood_ratio"]["coef"] == pytest.approx([1.25])
    assert inp.settings["plasma_source"].startswith("whole blood x")
    assert inp.parent is not None and inp.parent.kind == "hill"


def test_input_from_recordings_decay_corrects_uncorrected_blood_to_injection():
    from petbind.blood import input_from_recordings

    recs, wb = _recordings(decay_corrected=False)
    with pytest.raises(DataError, match="DecayCorrected"):
        input_from_recordings(recs)
    inp = input_from_recordings(recs, isotope="C-11", parent_model="hill")
    t = np.array([2.0, 30.0, 90.0])
    np.testing.assert_allclose(inp.blood.interp(t), wb(t), rtol=1e-3)


def test_a_delayed_input_that_does_not_start_at_zero_steps_up_at_the_delay():
    # C is 0 before its first sample: C(t - d) is 0 until d, not a ramp from injection
    # (the ramp put the delay pre-fit two steps off on such an input)
    c = PiecewiseLinear(np.array([0.0, 1, 2]), np.array([2.0, 4, 1]))
    s = shift_curve(c, 0.5)
    np.testing.assert_allclose(s.interp(np.array([0.0, 0.25, 0.4999])), 0.0, atol=1e-12)
    np.testing.assert_allclose(s.interp(np.array([0.5, 1.0, 1.5, 2.5])), [2.0, 3.0, 4.0, 1.0])
    # area before the delay: only the 1e-4 min ramp standing for the step
    assert float(s.integral(np.array([0.5]))[0]) == pytest.approx(1e-4, rel=1e-6)
