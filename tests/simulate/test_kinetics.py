"""Simulator kinetics against closed forms and an independent ODE solution."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from petbind.simulate.kinetics import (
    BloodModel,
    ExpInput,
    fine_grid,
    pet_frame_means,
    tissue_curves,
)
from petbind.timing import FrameTiming

# bi-exponential input Cp = A1 exp(-a1 t) + A2 exp(-a2 t)
A = (40.0, 3.0)
RATES = (1.5, 0.05)
T = np.linspace(0.0, 90.0, 1801)


def one_tcm_biexp(t, K1, k2):
    """Closed form of K1 exp(-k2 t) (*) sum_i A_i exp(-a_i t) (k2 != a_i)."""
    return K1 * sum(Ai * (np.exp(-ai * t) - np.exp(-k2 * t)) / (k2 - ai)
                    for Ai, ai in zip(A, RATES, strict=True))


def one_tcm_biexp_integral(t, K1, k2):
    """Closed-form integral from 0 to t of :func:`one_tcm_biexp`."""
    return K1 * sum(Ai / (k2 - ai) * (-np.expm1(-ai * t) / ai + np.expm1(-k2 * t) / k2)
                    for Ai, ai in zip(A, RATES, strict=True))


@pytest.mark.parametrize(("K1", "k2"), [(0.4, 0.1), (0.2, 0.06), (0.5, 0.8), (0.3, 3.0)])
def test_one_tissue_matches_closed_form_with_biexponential_input(K1, k2):
    cp = ExpInput.exponentials(A, RATES)
    got = tissue_curves(cp, T, [K1], [k2])[0]
    want = one_tcm_biexp(T, K1, k2)
    np.testing.assert_allclose(got[1:], want[1:], rtol=1e-6)
    assert got[0] == 0.0


def test_one_tissue_with_rate_equal_to_input_rate_uses_the_limit():
    # k2 == a2: the convolution term A2 exp(-a t) (*) exp(-a t) = A2 t exp(-a t)
    cp = ExpInput.exponentials(A, RATES)
    K1, k2 = 0.3, RATES[1]
    want = K1 * (A[0] * (np.exp(-RATES[0] * T) - np.exp(-k2 * T)) / (k2 - RATES[0])
                 + A[1] * T * np.exp(-k2 * T))
    got = tissue_curves(cp, T, [K1], [k2])[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)
    # and a rate a hair away from it stays continuous
    near = tissue_curves(cp, T, [K1], [k2 * (1 + 1e-9)])[0]
    np.testing.assert_allclose(near, want, rtol=1e-6, atol=1e-12)


def test_feng_input_starts_at_zero_and_matches_its_formula():
    a1, a2, a3, l1, l2, l3 = 400.0, 4.0, 1.2, 4.0, 0.35, 0.02
    cp = ExpInput.feng(a1, a2, a3, l1, l2, l3)
    want = ((a1 * T - a2 - a3) * np.exp(-l1 * T) + a2 * np.exp(-l2 * T)
            + a3 * np.exp(-l3 * T))
    np.testing.assert_allclose(cp(T), want, rtol=1e-12, atol=1e-12)
    assert cp(0.0) == pytest.approx(0.0, abs=1e-12)


def _ode_2tcm(cp, K1, k2, k3, k4, t):
    def rhs(tt, y):
        c1, c2 = y
        return [K1 * cp(tt) - (k2 + k3) * c1 + k4 * c2, k3 * c1 - k4 * c2]

    sol = solve_ivp(rhs, (0.0, t[-1]), [0.0, 0.0], t_eval=t, method="DOP853",
                    rtol=1e-10, atol=1e-12, max_step=0.1)
    return sol.y.sum(axis=0)


@pytest.mark.parametrize(("K1", "k2", "k3", "k4"),
                         [(0.4, 0.1, 0.144, 0.12), (0.36, 0.054, 0.125, 0.05),
                          (0.2, 0.05, 0.02, 0.04)])
def test_two_tissue_matches_ode_solution_with_feng_input(K1, k2, k3, k4):
    cp = ExpInput.feng(400.0, 4.0, 1.2, 4.0, 0.35, 0.02)
    t = np.linspace(0.0, 90.0, 181)
    got = tissue_curves(cp, t, [K1], [k2], [k3], [k4])[0]
    want = _ode_2tcm(cp, K1, k2, k3, k4, t)
    np.testing.assert_allclose(got[1:], want[1:], rtol=1e-6)


def test_two_tissue_with_zero_k3_is_the_one_tissue_model():
    cp = ExpInput.exponentials(A, RATES)
    got = tissue_curves(cp, T, [0.4, 0.4], [0.1, 0.1], [0.0, 0.0], [0.1, 0.05])
    want = one_tcm_biexp(T, 0.4, 0.1)
    np.testing.assert_allclose(got[0, 1:], want[1:], rtol=1e-6)
    np.testing.assert_allclose(got[1, 1:], want[1:], rtol=1e-6)


def test_frame_means_equal_closed_form_frame_integrals():
    timing = FrameTiming.from_schedule([(6, 10), (3, 20), (2, 30), (4, 60), (4, 120),
                                        (5, 300), (5, 600)], unit="s")
    cp = ExpInput.exponentials(A, RATES)
    K1, k2 = np.array([0.4, 0.25]), np.array([0.1, 0.5])
    got = pet_frame_means(cp, BloodModel(), timing, K1, k2, 0.0, 1.0, vb=0.0)
    for r in range(2):
        integ = one_tcm_biexp_integral(np.concatenate([timing.start, timing.end]), K1[r],
                                       k2[r])
        want = (integ[timing.n_frames:] - integ[:timing.n_frames]) / timing.duration
        # trapezoid on a 0.5 s grid (0.05 s over the bolus)
        np.testing.assert_allclose(got[r], want, rtol=1e-5)


def test_blood_volume_mixes_tissue_and_whole_blood():
    timing = FrameTiming.from_durations([60.0] * 10, unit="s")
    cp = ExpInput.exponentials(A, RATES)
    blood = BloodModel(parent_fraction_inf=0.25, metabolism_rate=0.1, blood_plasma_ratio=0.8)
    vb = 0.05
    got = pet_frame_means(cp, blood, timing, [0.4], [0.1], 0.0, 1.0, vb=vb)[0]
    t = fine_grid(timing, 1.0 / 600.0)
    whole = 0.8 * cp(t) / (0.25 + 0.75 * np.exp(-0.1 * t))
    y = (1 - vb) * one_tcm_biexp(t, 0.4, 0.1) + vb * whole
    want = np.array([np.trapezoid(y[(t >= a) & (t <= b)], t[(t >= a) & (t <= b)]) / (b - a)
                     for a, b in zip(timing.start, timing.end, strict=True)])
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_fine_grid_contains_every_frame_edge():
    timing = FrameTiming([0.0, 7.3, 20.0], [7.3, 12.7, 33.3], unit="s")
    g = fine_grid(timing, 0.1)
    for e in np.concatenate([timing.start, timing.end]):
        assert np.min(np.abs(g - e)) < 1e-12
    assert np.all(np.diff(g) <= 0.1 + 1e-12)
