"""Block means of voxel grids (src/petbind/numerics/grid.py) against each block's mean."""

import numpy as np
import pytest

from petbind.numerics.grid import block_mean, block_sum


@pytest.mark.parametrize("factor", [2, 3])
def test_block_mean_is_the_mean_of_each_block(factor):
    """Against the mean of each block taken one by one; a trailing axis is kept and the
    voxels past the last whole block are dropped."""
    rng = np.random.default_rng(3)
    vol = rng.random((7, 8, 10, 2)).astype(np.float32)
    got = block_mean(vol, factor)
    n = [s // factor for s in vol.shape[:3]]
    assert got.shape == (*n, 2) and got.dtype == np.float32
    for i, j, k in np.ndindex(*n):
        block = vol[i * factor:(i + 1) * factor, j * factor:(j + 1) * factor,
                    k * factor:(k + 1) * factor]
        np.testing.assert_allclose(got[i, j, k], block.mean(axis=(0, 1, 2)), rtol=1e-6)
    ints = block_mean((vol[..., 0] > 0.5).astype(np.int16), factor)
    assert ints.dtype == np.float64


def test_block_mean_along_chosen_axes_and_factor_one():
    rng = np.random.default_rng(4)
    vol = rng.random((6, 4, 9))
    got = block_mean(vol, 3, axes=(2,))
    np.testing.assert_allclose(got, vol.reshape(6, 4, 3, 3).mean(axis=3), rtol=1e-12)
    assert block_mean(vol, 1) is vol


def test_block_sum_counts_a_mask_per_axis_factors():
    """Different factors per axis, counted in uint8: each block's count of true voxels."""
    rng = np.random.default_rng(5)
    mask = rng.random((6, 9, 8)) > 0.4
    got = block_sum(mask.view(np.uint8), (2, 3, 4))
    assert got.shape == (3, 3, 2) and got.dtype == np.uint8
    want = mask.reshape(3, 2, 3, 3, 2, 4).sum(axis=(1, 3, 5))
    np.testing.assert_array_equal(got, want)
