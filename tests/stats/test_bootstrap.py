"""Bootstrap intervals of a mean % change: method by n, coverage on simulated data."""

import numpy as np
import pytest

from petbind.stats.bootstrap import BCA_MIN_N, MIN_N, bootstrap_mean_ci, expanded_level


def test_no_interval_below_min_n_and_method_by_n():
    rng = np.random.default_rng(0)
    lo, hi, method = bootstrap_mean_ci(rng.normal(size=4))
    assert np.isnan(lo) and np.isnan(hi) and method == f"none (n < {MIN_N})"
    assert bootstrap_mean_ci(rng.normal(size=MIN_N))[2] == "percentile"
    assert bootstrap_mean_ci(rng.normal(size=BCA_MIN_N))[2] == "BCa"
    # NaN values are left out before counting
    x = np.r_[rng.normal(size=MIN_N), np.nan]
    assert bootstrap_mean_ci(x)[2] == "percentile"


def test_expanded_level_by_hand():
    from scipy.stats import norm, t

    n = 8
    z = np.sqrt(n / (n - 1)) * t.isf(0.025, n - 1)  # 2.528
    assert expanded_level(n) == pytest.approx(1 - 2 * norm.sf(z))
    assert expanded_level(n) == pytest.approx(0.9885, abs=1e-4)
    assert expanded_level(10_000) == pytest.approx(0.95, abs=1e-3)


def test_reproducible_and_contains_the_mean():
    x = np.array([3.0, 12.0, 25.0, 7.0, 19.0, 30.0, 14.0, 9.0, 22.0, 16.0])
    a = bootstrap_mean_ci(x, seed=4)
    assert a == bootstrap_mean_ci(x, seed=4)
    assert a[0] < x.mean() < a[1]


@pytest.mark.slow
@pytest.mark.parametrize("n", [8, 20])
def test_coverage_of_95_percent_interval_within_monte_carlo_error(n):
    """Normal % changes (mean 15, SD 10): the 95 % interval covers 15 in 95 % of samples."""
    rng = np.random.default_rng(100 + n)
    n_sim = 600
    hits = 0
    for i in range(n_sim):
        x = 15 + 10 * rng.standard_normal(n)
        lo, hi, _ = bootstrap_mean_ci(x, n_resamples=1999, seed=i)
        hits += lo <= 15 <= hi
    cover = hits / n_sim
    se = np.sqrt(0.95 * 0.05 / n_sim)
    assert abs(cover - 0.95) <= 3 * se, cover
