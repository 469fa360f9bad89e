"""The study stage's voxel maps: kept at the mask's voxels, float32 only when exact."""

from __future__ import annotations

import numpy as np

from petbind.study.group_stage import _compact


def test_maps_stored_as_float32_are_held_as_float32_and_give_back_the_same_float64():
    rng = np.random.default_rng(0)
    stored = rng.standard_normal(1000).astype(np.float32)     # what a float32 map holds
    read = stored.astype(np.float64)                          # what read_volume returns
    read[5] = np.nan                                          # invalid voxels
    held = _compact(read)
    assert held.dtype == np.float32
    np.testing.assert_array_equal(held.astype(np.float64), read)


def test_values_float32_cannot_hold_stay_float64():
    read = np.array([0.1, 2.0, np.nan])                       # 0.1 is not a float32
    held = _compact(read)
    assert held.dtype == np.float64 and held is read
