"""Which voxels can be fitted (parametric/core.py ``_usable_voxels``), block by block."""

from __future__ import annotations

import numpy as np
import pytest

from petbind.parametric import chunks, core, k2prime
from petbind.timing import FrameTiming


@pytest.mark.parametrize("block", [7, 1000, 10**6])
def test_blocks_give_the_whole_array_formula(monkeypatch, block):
    monkeypatch.setattr(chunks, "COLUMN_BLOCK", block)
    rng = np.random.default_rng(4)
    curves = rng.standard_normal((29, 5003)).astype(np.float32)
    curves[:, :100] = np.abs(curves[:, :100]) * 1e-30  # tiny positive sums
    curves[3, 200:210] = np.nan
    curves[28, 300:305] = np.inf
    curves[:, 400:420] = -np.abs(curves[:, 400:420])
    curves[:, 500:510] = 0.0
    d = rng.uniform(10, 600, 29)
    finite, signal = core._usable_voxels(curves, d)
    # the formula the command used on the whole array (independent of the blocks)
    expected_finite = np.all(np.isfinite(curves), axis=0)
    with np.errstate(invalid="ignore"):
        expected_signal = np.einsum("t,tv->v", d, curves, dtype=np.float64) > 0
    np.testing.assert_array_equal(finite, expected_finite)
    np.testing.assert_array_equal(signal, expected_signal)
    assert not finite[200:210].any() and not finite[300:305].any()
    assert not signal[400:420].any() and not signal[500:510].any() and signal[:100].all()


@pytest.mark.parametrize("block", [7, 1000, 10**6])
def test_the_late_ratio_by_blocks_is_the_whole_array_formula(monkeypatch, block):
    monkeypatch.setattr(chunks, "COLUMN_BLOCK", block)
    rng = np.random.default_rng(5)
    timing = FrameTiming.from_schedule([(6, 10), (3, 20), (2, 30), (4, 60), (4, 120),
                                        (5, 300), (5, 600)], unit="s")
    curves = rng.uniform(0.1, 20, (timing.n_frames, 4099)).astype(np.float32)
    curves[5, 17] = np.nan
    ref = rng.uniform(1, 10, timing.n_frames)
    late = timing.mid >= 0.5 * timing.end[-1]
    w = timing.duration * late
    expected = np.einsum("t,tv->v", w, curves, dtype=np.float64) / float(np.dot(w, ref))
    got = k2prime._late_ratio(curves, ref, timing)
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got[17]) == np.isnan(expected[17])
