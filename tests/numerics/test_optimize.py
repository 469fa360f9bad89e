"""Tests of the batched Levenberg-Marquardt solver."""

import numpy as np

from petbind.numerics.optimize import levenberg_marquardt

T = np.linspace(0.0, 10.0, 30)


def _mono_exp(p, idx):
    return p[..., 0:1] * np.exp(-p[..., 1:2] * T)


def test_lm_recovers_many_exponentials_in_one_call():
    rng = np.random.default_rng(1)
    amp = rng.uniform(1, 5, 500)
    rate = rng.uniform(0.1, 2, 500)
    y = amp[:, None] * np.exp(-rate[:, None] * T)
    res = levenberg_marquardt(_mono_exp, y, [1.0, 0.5], lower=[0, 0], upper=[10, 5])
    assert res.converged.all()
    np.testing.assert_allclose(res.params[:, 0], amp, rtol=1e-8)
    np.testing.assert_allclose(res.params[:, 1], rate, rtol=1e-8)


def test_lm_batch_equals_fits_one_at_a_time():
    y = np.stack([3.0 * np.exp(-0.4 * T), 1.5 * np.exp(-1.2 * T) + 0.01 * np.sin(T)])
    both = levenberg_marquardt(_mono_exp, y, [1.0, 0.5])
    for i in range(2):
        one = levenberg_marquardt(_mono_exp, y[i:i + 1], [1.0, 0.5])
        np.testing.assert_allclose(one.params[0], both.params[i], rtol=1e-7)


def test_lm_keeps_parameters_inside_bounds():
    y = 3.0 * np.exp(-0.4 * T)[None]
    res = levenberg_marquardt(_mono_exp, y, [1.0, 0.5], lower=[0, 0.6], upper=[10, 5])
    assert res.params[0, 1] == 0.6


def test_lm_standard_errors_match_the_scatter_of_noisy_estimates():
    rng = np.random.default_rng(2)
    n = 2000
    y = 3.0 * np.exp(-0.4 * T) + rng.normal(0, 0.05, (n, T.size))
    res = levenberg_marquardt(_mono_exp, y, [1.0, 0.5], lower=[0, 0], upper=[10, 5])
    z = (res.params[:, 1] - 0.4) / res.se[:, 1]
    assert 0.9 < np.std(z) < 1.1


def test_lm_uses_weights_to_ignore_frames():
    y = 3.0 * np.exp(-0.4 * T)[None].copy()
    y[0, -5:] = 100.0
    w = np.ones(T.size)
    w[-5:] = 0.0
    res = levenberg_marquardt(_mono_exp, y, [1.0, 0.5], weights=w)
    np.testing.assert_allclose(res.params[0], [3.0, 0.4], rtol=1e-8)


# -- analytic Jacobian with columns shared by the batch (the SRTM form) ---------
S = np.sin(T) + 2.0  # a regressor shared by every curve, like SRTM's reference curve


def _exp_plus_shared(p, idx):
    return p[..., 0:1] * np.exp(-p[..., 1:2] * T) + p[..., 2:3] * S


def _exp_plus_shared_jac(p, idx):
    e = np.exp(-p[:, 1:2] * T)
    return p[:, 0:1] * e + p[:, 2:3] * S, [e, -p[:, 0:1] * T * e, S]


def test_lm_with_analytic_shared_columns_recovers_truth_and_matches_finite_differences():
    rng = np.random.default_rng(3)
    n = 300
    truth = np.stack([rng.uniform(1, 5, n), rng.uniform(0.1, 2, n), rng.uniform(0.2, 1, n)], 1)
    y = truth[:, 0:1] * np.exp(-truth[:, 1:2] * T) + truth[:, 2:3] * S
    kw = dict(lower=[0, 0, -5], upper=[10, 5, 5])
    analytic = levenberg_marquardt(_exp_plus_shared_jac, y, [1.0, 0.5, 0.0], jacobian=True,
                                   **kw)
    assert analytic.converged.all()
    np.testing.assert_allclose(analytic.params, truth, rtol=1e-8)
    fd = levenberg_marquardt(_exp_plus_shared, y, [1.0, 0.5, 0.0], **kw)
    np.testing.assert_allclose(analytic.params, fd.params, rtol=1e-7)
    np.testing.assert_allclose(analytic.fitted, y, rtol=1e-8, atol=1e-10)


def test_lm_without_final_step_skips_fitted_and_covariance():
    y = 3.0 * np.exp(-0.4 * T)[None] + 0.5 * S
    res = levenberg_marquardt(_exp_plus_shared_jac, y, [1.0, 0.5, 0.0], jacobian=True,
                              final=False)
    assert res.fitted is None and res.cov is None
    assert np.isnan(res.se).all()
    np.testing.assert_allclose(res.params[0], [3.0, 0.4, 0.5], rtol=1e-8)


def test_lm_fit_of_a_curve_does_not_depend_on_its_batch():
    rng = np.random.default_rng(4)
    y = 3.0 * np.exp(-0.4 * T) + rng.normal(0, 0.05, (7, T.size))
    whole = levenberg_marquardt(_mono_exp, y, [1.0, 0.5], lower=[0, 0], upper=[10, 5])
    for i in range(0, 7, 3):
        part = levenberg_marquardt(_mono_exp, y[i:i + 3], [1.0, 0.5], lower=[0, 0],
                                   upper=[10, 5])
        np.testing.assert_array_equal(part.params, whole.params[i:i + 3])
