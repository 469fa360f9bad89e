"""Tests for petbind.timing.FrameTiming: construction, validation, decay, integration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad

from petbind.errors import TimingError
from petbind.isotopes import Isotope, get_isotope
from petbind.timing import TIME_TOL_MIN, FrameTiming

C11_HALF_LIFE_MIN = 20.364  # NNDC NuDat 3
F18_HALF_LIFE_MIN = 109.739


# -- construction -------------------------------------------------------------
def test_seconds_are_converted_to_minutes():
    t = FrameTiming([0, 30, 90], [30, 60, 120], unit="s")
    np.testing.assert_allclose(t.start, [0, 0.5, 1.5])
    np.testing.assert_allclose(t.duration, [0.5, 1.0, 2.0])
    np.testing.assert_allclose(t.end, [0.5, 1.5, 3.5])
    np.testing.assert_allclose(t.mid, [0.25, 1.0, 2.5])
    np.testing.assert_allclose(t.start_s, [0, 30, 90])


def test_unit_must_be_said_explicitly():
    with pytest.raises(TypeError):
        FrameTiming([0], [1])  # type: ignore[call-arg]
    with pytest.raises(TimingError) as e:
        FrameTiming([0], [1], unit="ms")  # type: ignore[arg-type]
    assert e.value.field == "unit"


def test_schedule_builds_contiguous_frames():
    t = FrameTiming.from_schedule([(6, 10), (3, 20), (2, 300)], unit="s")
    assert t.n_frames == 11 == len(t)
    assert t.start_s[6] == 60 and t.end[-1] * 60 == pytest.approx(60 + 60 + 600)
    assert t.gaps() == []


def test_from_seconds_and_from_minutes_agree():
    assert FrameTiming.from_seconds([0, 60], [60, 120]) == FrameTiming.from_minutes([0, 1],
                                                                                   [1, 2])


def test_to_bids_round_trips_through_seconds():
    t = FrameTiming.from_schedule([(4, 15), (5, 60), (3, 600)], unit="s")
    b = t.to_bids()
    assert b["FrameTimesStart"][:3] == [0.0, 15.0, 30.0]
    assert FrameTiming(b["FrameTimesStart"], b["FrameDuration"], unit="s") == t


def test_values_are_read_only():
    t = FrameTiming.from_schedule([(2, 60)])
    with pytest.raises(ValueError):
        t.start[0] = 5.0


@pytest.mark.parametrize(("start", "dur", "field", "words"), [
    ([], [], "FrameTimesStart", "no frames"),
    ([0, 60], [60], "FrameDuration", "2 frame starts but 1"),
    ([0, 60], [60, 0], "FrameDuration", "duration 0"),
    ([0, 60], [60, -5], "FrameDuration", "duration -5"),
    ([0, 50], [60, 60], "FrameDuration", "overlaps"),
    ([0, 120, 60], [60, 60, 60], "FrameTimesStart", "decrease"),
    ([0, float("nan")], [60, 60], "FrameTimesStart", "non-finite"),
    ([0, 60], [60, float("inf")], "FrameDuration", "non-finite"),
    ([-30, 60], [60, 60], "FrameTimesStart", "before injection"),
    ([[0, 1]], [[1, 1]], "FrameTimesStart", "1-D"),
    (["a"], [1], "FrameTimesStart", "numbers"),
])
def test_invalid_frames_are_refused_naming_the_field(start, dur, field, words):
    with pytest.raises(TimingError) as e:
        FrameTiming(start, dur, unit="s", source="scan.json")
    assert e.value.field == field
    assert words in e.value.message
    assert e.value.path == "scan.json"


def test_gaps_are_allowed_and_reported():
    t = FrameTiming([30, 90, 300], [60, 60, 60], unit="s")
    gaps = t.gaps()
    assert gaps[0] == (-1, 0.5)
    assert gaps[1][0] == 1 and gaps[1][1] == pytest.approx(2.5)


def test_overlap_within_tolerance_is_accepted():
    eps_s = TIME_TOL_MIN * 60 / 2
    t = FrameTiming([0, 60 - eps_s], [60, 60], unit="s")
    assert t.n_frames == 2


def test_window_subset_and_shift():
    t = FrameTiming.from_schedule([(4, 60), (2, 300)], unit="s")
    m = t.window(2.0, 9.0)
    np.testing.assert_array_equal(m, [False, False, True, True, True, False])
    sub = t.subset(m)
    np.testing.assert_allclose(sub.start, [2, 3, 4])
    np.testing.assert_allclose(t.shifted(1.5).start, t.start + 1.5)


# -- decay --------------------------------------------------------------------
def _closed_form_factor(a, d, t_ref, half_life):
    """Mean of exp(-lam t) over [a, a+d] relative to exp(-lam t_ref), inverted."""
    lam = math.log(2) / half_life
    mean = (math.exp(-lam * a) - math.exp(-lam * (a + d))) / (lam * d)
    return math.exp(-lam * t_ref) / mean


@pytest.mark.parametrize("iso_name,half_life", [("C-11", C11_HALF_LIFE_MIN),
                                                ("F18", F18_HALF_LIFE_MIN)])
@pytest.mark.parametrize("t_ref", [0.0, 2.0, 45.0])
def test_decay_factors_equal_closed_form_to_1e_9(iso_name, half_life, t_ref):
    t = FrameTiming.from_schedule([(6, 10), (4, 60), (5, 300), (3, 600)], unit="s")
    got = t.decay_factors(iso_name, ref_time_min=t_ref)
    expect = [_closed_form_factor(a, d, t_ref, half_life)
              for a, d in zip(t.start, t.duration, strict=True)]
    np.testing.assert_allclose(got, expect, rtol=1e-9, atol=0)


def test_decay_factors_equal_numerical_integral_to_1e_9():
    iso = get_isotope("11C")
    lam = math.log(2) / C11_HALF_LIFE_MIN
    t = FrameTiming([0.0, 3.0, 30.0, 60.0], [0.25, 7.0, 30.0, 30.0], unit="min")
    for a, d, f in zip(t.start, t.duration, t.decay_factors(iso), strict=True):
        mean, _ = quad(lambda x: math.exp(-lam * x), a, a + d, epsabs=0, epsrel=1e-13)
        assert f == pytest.approx(d / mean, rel=1e-9)


def test_decay_factor_of_a_short_frame_tends_to_the_mid_frame_value():
    t = FrameTiming([40.0], [1e-4], unit="min")
    lam = math.log(2) / C11_HALF_LIFE_MIN
    assert t.decay_factors("C11")[0] == pytest.approx(math.exp(lam * 40.00005), rel=1e-9)


def test_decay_correct_then_uncorrect_is_identity_for_a_batch():
    t = FrameTiming.from_schedule([(3, 60), (2, 600)], unit="s")
    data = np.random.default_rng(0).uniform(1, 10, size=(4, 2, t.n_frames))
    back = t.decay_uncorrect(t.decay_correct(data, "F-18", 5.0), "F-18", 5.0)
    np.testing.assert_allclose(back, data, rtol=1e-14)


def test_decay_correct_of_decaying_constant_source_recovers_its_activity():
    iso = Isotope("test", 600.0)  # 10 min
    lam = math.log(2) / 10.0
    t = FrameTiming.from_schedule([(5, 120), (3, 600)], unit="s")
    measured = 7.0 * (np.exp(-lam * t.start) - np.exp(-lam * t.end)) / (lam * t.duration)
    np.testing.assert_allclose(t.decay_correct(measured, iso), 7.0, rtol=1e-12)


# -- frame integration ----------------------------------------------------------
def test_frame_means_are_exact_for_piecewise_linear_curves():
    t_fine = np.array([0.0, 1.0, 2.5, 4.0, 10.0])
    y = np.array([0.0, 10.0, 4.0, 4.0, 1.0])
    timing = FrameTiming([0.0, 0.5, 2.0, 5.0], [0.5, 1.5, 3.0, 5.0], unit="min")

    def f(x):
        return np.interp(x, t_fine, y)

    expect = [quad(f, a, b, points=t_fine, epsabs=1e-13)[0] / (b - a)
              for a, b in zip(timing.start, timing.end, strict=True)]
    np.testing.assert_allclose(timing.frame_means(t_fine, y), expect, rtol=1e-12)
    batch = np.stack([y, 2 * y])
    np.testing.assert_allclose(timing.frame_means(t_fine, batch)[1], 2 * np.array(expect))


def test_frame_means_refuse_a_grid_that_does_not_cover_the_frames():
    timing = FrameTiming([0.0], [5.0], unit="min")
    with pytest.raises(TimingError):
        timing.frame_means([0.0, 4.0], [1.0, 1.0])


# -- property tests -------------------------------------------------------------
durations_s = st.lists(st.floats(min_value=0.5, max_value=3600, allow_nan=False), min_size=1,
                       max_size=40)
gaps_s = st.floats(min_value=0.0, max_value=600, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(durs=durations_s, gaps=st.lists(gaps_s, min_size=40, max_size=40),
       first=st.floats(min_value=0, max_value=1e4))
def test_property_valid_schedules_construct_with_consistent_edges(durs, gaps, first):
    starts, t = [], first
    for i, d in enumerate(durs):
        starts.append(t)
        t += d + gaps[i]
    ft = FrameTiming(starts, durs, unit="s")
    assert ft.n_frames == len(durs)
    assert np.all(ft.end > ft.start)
    assert np.all((ft.mid > ft.start) & (ft.mid < ft.end))
    assert np.all(ft.start[1:] >= ft.end[:-1] - TIME_TOL_MIN)
    np.testing.assert_allclose(ft.start_s, starts, rtol=1e-12, atol=1e-9)
    big_gaps = [g for g in gaps[: len(durs) - 1] if g / 60 > TIME_TOL_MIN * 1.01]
    assert len([g for g in ft.gaps() if g[0] >= 0]) == len(big_gaps)
    b = ft.to_bids()
    assert FrameTiming(b["FrameTimesStart"], b["FrameDuration"], unit="s") == ft
    # the frame-mean factor lies between the factors at the frame's edges
    lam = math.log(2) / C11_HALF_LIFE_MIN
    df = ft.decay_factors("C11")
    assert np.all(df >= np.exp(lam * ft.start) * (1 - 1e-12))
    assert np.all(df <= np.exp(lam * ft.end) * (1 + 1e-12))


@settings(max_examples=150, deadline=None)
@given(durs=st.lists(st.floats(min_value=1, max_value=600), min_size=2, max_size=20),
       i=st.integers(min_value=0, max_value=18),
       overlap=st.floats(min_value=0.05, max_value=0.95))
def test_property_any_overlap_beyond_tolerance_is_refused(durs, i, overlap):
    i = i % (len(durs) - 1)
    starts = list(np.concatenate([[0.0], np.cumsum(durs)[:-1]]))
    shift = overlap * durs[i]
    if shift / 60 <= TIME_TOL_MIN * 1.01:
        return
    starts = starts[: i + 1] + [s - shift for s in starts[i + 1:]]
    with pytest.raises(TimingError) as e:
        FrameTiming(starts, durs, unit="s")
    assert "overlaps" in e.value.message
    assert f"frame {i} " in e.value.message


@settings(max_examples=100, deadline=None)
@given(durs=st.lists(st.floats(min_value=-100, max_value=0), min_size=1, max_size=5),
       pos=st.lists(st.floats(min_value=1, max_value=100), min_size=0, max_size=5))
def test_property_non_positive_durations_are_always_refused(durs, pos):
    all_d = pos + durs
    starts = list(np.arange(len(all_d)) * 200.0)
    with pytest.raises(TimingError) as e:
        FrameTiming(starts, all_d, unit="s")
    assert e.value.field == "FrameDuration"


def test_decay_factors_match_a_scanners_published_factors():
    """Siemens Biograph mMR factors of an [11C]AZ10419369 scan, as exported to BIDS
    (bids-standard/bids-examples, pet005, sub-01 ses-baseline, DecayCorrection START).

    The scanner's factors are frame-integrated too: the first frames agree to the
    6 printed digits; later frames drift in proportion to lambda t (0.37 % at
    lambda t = 3.9), as a C-11 half-life about 0.1 % longer than NuDat's would
    make them.
    """
    t = FrameTiming.from_schedule([(12, 10), (6, 20), (6, 60), (8, 120), (13, 300), (3, 600)],
                                  unit="s")
    scanner = {0: 1.00284, 1: 1.00854, 5: 1.03166, 11: 1.06735, 12: 1.07646, 24: 1.45335,
               32: 2.63256, 44: 20.2527, 47: 51.4101}
    got = t.decay_factors("C11")
    lam = math.log(2) / C11_HALF_LIFE_MIN
    for i, f in scanner.items():
        tol = 1e-5 + 1.2e-3 * lam * t.end[i]
        assert got[i] == pytest.approx(f, rel=tol), i
    assert got[1] == pytest.approx(scanner[1], rel=1e-5)
