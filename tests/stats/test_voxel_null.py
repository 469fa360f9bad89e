"""The sign-flip core: scipy's t without p-values, bit for bit; flips as engine tasks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from petbind.compute import open_engine
from petbind.errors import DataError
from petbind.stats import voxel_null
from petbind.stats.voxel_null import (
    flip_null,
    flip_null_tasks,
    merge_flip_null,
    t_statistic,
)


def _scipy_t(x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return stats.ttest_1samp(x, 0.0, axis=-2).statistic


def _edge_cases(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 8) columns: zero, constant 0.1 (mean inexact), 1e-300, 1e300 (squares
    overflow), one non-zero value, +-1 alternating, tiny noise on a big offset, 0/0."""
    cols = np.empty((n, 8))
    cols[:, 0] = 0.0
    cols[:, 1] = 0.1
    cols[:, 2] = 1e-300
    cols[:, 3] = 1e300 * rng.standard_normal(n)
    cols[:, 4] = 0.0
    cols[0, 4] = 2.5
    cols[:, 5] = np.resize([1.0, -1.0], n)
    cols[:, 6] = 1e8 + 1e-6 * rng.standard_normal(n)
    cols[:, 7] = -0.0
    return cols


@pytest.mark.parametrize("n", [2, 3, 5, 8, 9, 16, 17, 40])
def test_t_statistic_is_scipys_ttest_1samp_bit_for_bit(n):
    """Random flipped data (1 and 7 flips) with edge-case voxels; scipy's statistic
    (which also computes the p-values) is the reference; NaN and inf where scipy has them."""
    rng = np.random.default_rng(n)
    d = np.concatenate([rng.standard_normal((n, 300)) * rng.uniform(1e-3, 1e3, 300) + 0.2,
                        _edge_cases(rng, n)], axis=1)
    for n_flips in (1, 7):
        flips = np.vstack([np.ones(n), rng.choice([-1.0, 1.0], size=(n_flips - 1, n))])
        x = flips[:, :, None] * d[None, :, :]
        ref = _scipy_t(x)
        got = t_statistic(x)
        np.testing.assert_array_equal(got, ref)
        assert got.dtype == np.float64 and got.shape == (n_flips, d.shape[1])
        scratch = x.copy()
        np.testing.assert_array_equal(t_statistic(scratch, overwrite=True), ref)
    # the edge cases do reach the special values (the comparison above covers them)
    t0 = got[0, 300:]
    assert np.isnan(t0[0]) and np.isnan(t0[7]) and np.isfinite(t0[3])


def test_t_statistic_of_2d_data_and_by_hand():
    """Plain (n, V) input; t = mean / (sd / sqrt(n)) written out for one voxel."""
    rng = np.random.default_rng(5)
    d = rng.standard_normal((6, 4))
    np.testing.assert_array_equal(t_statistic(d), _scipy_t(d))
    x = d[:, 2]
    m = x.sum() / 6
    sd = np.sqrt(((x - m) ** 2).sum() / 5)
    assert t_statistic(d)[2] == pytest.approx(m / (sd / np.sqrt(6)), rel=1e-13)


def test_nan_voxels_are_nan_and_flip_null_refuses_non_finite_data():
    """With a NaN anywhere scipy works voxel by voxel (other sums, about 1e-14 apart):
    NaN voxels agree, the rest to 1e-13; flip_null never sees such data."""
    rng = np.random.default_rng(9)
    d = rng.standard_normal((16, 50))
    d[3, 7] = np.nan
    got, ref = t_statistic(d), _scipy_t(d)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    assert np.isnan(got[7]) and np.isnan(got).sum() == 1
    np.testing.assert_allclose(got, ref, rtol=1e-13)
    with pytest.raises(DataError):
        flip_null(d, np.ones((1, 16)), np.ones((5, 10, 1), bool), 2.0)


def _case(n: int = 9, shape: tuple[int, int, int] = (7, 6, 5), seed: int = 4):
    rng = np.random.default_rng(seed)
    mask = np.ones(shape, bool)
    mask[0, :, 0] = False
    d = rng.standard_normal((n, int(mask.sum())))
    d[:, :40] += 1.5                        # clusters under the identity
    flips = np.vstack([np.ones(n), rng.choice([-1.0, 1.0], size=(60, n))])
    return d, flips, mask


class _Workers:
    """An in-process engine that reports ``n`` workers (the task split of a cluster)."""

    def __init__(self, engine, n):
        self._engine, self.n_workers = engine, n

    def scatter(self, obj):
        return self._engine.scatter(obj)

    def run(self, tasks, on_done=None):
        return self._engine.run(tasks, on_done)


@pytest.mark.parametrize("n_workers", [1, 2, 3, 100])
@pytest.mark.parametrize("block_bytes", [None, 1, 9 * 200 * 8 * 7])
def test_flips_as_engine_tasks_equal_the_serial_flips_bit_for_bit(n_workers, block_bytes):
    """Ranges of whole blocks (1 flip, 7 flips with an uneven last block, all at once),
    4 tasks per worker or one per block: same t, maxima and cluster sizes as in-process."""
    d, flips, mask = _case()
    serial = flip_null(d, flips, mask, 2.3, block_bytes)
    with open_engine("sync") as engine:
        eng = _Workers(engine, n_workers)
        tasks = flip_null_tasks(d, flips, mask, 2.3, eng, block_bytes=block_bytes)
        results = eng.run(tasks)
        null = merge_flip_null([results[t.key] for t in tasks])
        assert flip_null(d, flips, mask, 2.3, block_bytes, engine=eng).max_abs_t.tobytes() \
            == serial.max_abs_t.tobytes()
    block = voxel_null._flip_block_size(
        *d.shape, voxel_null.TASK_BLOCK_BYTES if block_bytes is None else block_bytes)
    n_blocks = -(-flips.shape[0] // block)
    assert len(tasks) == min(n_blocks, voxel_null.TASKS_PER_WORKER * n_workers)
    assert sum(t.args[1].shape[0] for t in tasks) == flips.shape[0]
    assert all(t.args[1].shape[0] % block == 0 for t in tasks[:-1])
    np.testing.assert_array_equal(null.t_obs, serial.t_obs)
    np.testing.assert_array_equal(null.max_abs_t, serial.max_abs_t)
    np.testing.assert_array_equal(null.max_cluster, serial.max_cluster)
    assert serial.max_cluster[0] >= 20 and null.max_abs_t.shape == (61,)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("n_flips", [1, 3])
def test_t_statistic_overwrites_flipped_data_of_either_order_in_place(order, n_flips):
    """The flipped data of values in Fortran order (as the study stage's) is laid out
    neither C nor F for several flips; overwrite=True still uses it as scratch (no second
    array of its size) and gives scipy's t bit for bit."""
    import tracemalloc

    rng = np.random.default_rng(1)
    d = np.asarray(rng.standard_normal((40, 4000)), order=order)
    flips = np.vstack([np.ones(40), rng.choice([-1.0, 1.0], size=(n_flips - 1, 40))])
    x = flips[:, :, None] * d[None]
    ref = _scipy_t(x)
    tracemalloc.start()
    got = t_statistic(x, overwrite=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(got, ref)
    assert peak < x.nbytes / 2              # a copy would be x.nbytes
