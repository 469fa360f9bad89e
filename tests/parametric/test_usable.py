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


def _timing() -> FrameTiming:
    return FrameTiming.from_schedule([(6, 10), (3, 20), (2, 30), (4, 60), (4, 120),
                                      (5, 300), (5, 600)], unit="s")


@pytest.mark.parametrize(("block", "group"), [(7, 1), (1000, 4), (10**6, 4), (1000, 7)])
@pytest.mark.parametrize("late", [True, False])
@pytest.mark.parametrize("idle", ["none", "some", "all"])
def test_the_checks_streamed_frame_by_frame_are_the_batch_checks(monkeypatch, block, group,
                                                                 late, idle):
    # core._StreamedChecks (fed one gathered row at a time, as _gather does, with idle
    # steps between the rows: none, a few, or until nothing is queued) gives the voxels
    # of _usable_voxels and the numerators of k2prime._late_ratio bit for bit
    monkeypatch.setattr(core, "STREAM_BLOCK", block)
    monkeypatch.setattr(core, "STREAM_GROUP", group)
    monkeypatch.setattr(chunks, "COLUMN_BLOCK", 1500)  # the rest, in blocks on 2 CPUs
    monkeypatch.setattr("petbind.compute.usable_cpus", lambda: 2)
    steps = np.random.default_rng(1).integers(0, 4, 100)
    timing = _timing()
    rng = np.random.default_rng(9)
    n = 5003
    curves = rng.standard_normal((timing.n_frames, n)).astype(np.float32) * 20
    curves[:, :100] = np.abs(curves[:, :100]) * 1e-30
    curves[3, 200:210] = np.nan
    curves[28, 300:305] = -np.inf
    curves[:, 400:420] = -np.abs(curves[:, 400:420])
    curves[:, 500:510] = 0.0
    s = core._StreamedChecks(n, timing, late=late)
    for t in range(timing.n_frames):
        s(t, np.ascontiguousarray(curves[t]))
        if idle == "some":
            for _ in range(steps[t]):
                s.idle()
        elif idle == "all":
            while s.idle():
                pass
    if idle == "all":
        assert not s.idle()  # nothing left
    finite, signal = s.usable()
    expected_finite = np.all(np.isfinite(curves), axis=0)
    with np.errstate(invalid="ignore"):
        expected_signal = np.einsum("t,tv->v", timing.duration, curves,
                                    dtype=np.float64) > 0
    np.testing.assert_array_equal(finite, expected_finite)
    np.testing.assert_array_equal(signal, expected_signal)
    if not late:
        assert s.late_sums is None
        return
    ref = rng.uniform(1, 10, timing.n_frames)
    w = timing.duration * (timing.mid >= 0.5 * timing.end[-1])
    with np.errstate(invalid="ignore"):
        expected = np.einsum("t,tv->v", w, curves, dtype=np.float64) / float(np.dot(w, ref))
    got = k2prime._late_ratio_of_sums(s.late_sums, ref, timing)
    # equal wherever a voxel is finite in every frame; the others are never selected
    # (estimate_k2prime's ``usable``); einsum also adds 0 x NaN for the early frames
    np.testing.assert_array_equal(got[finite], expected[finite])
    np.testing.assert_array_equal(got[finite], k2prime._late_ratio(curves, ref, timing)[finite])
    assert not np.isfinite(got[300:305]).any()


def test_the_checks_refuse_frames_out_of_order_or_missing():
    s = core._StreamedChecks(4, _timing(), late=False)
    s(0, np.ones(4, np.float32))
    with pytest.raises(AssertionError):
        s(2, np.ones(4, np.float32))
    with pytest.raises(AssertionError):
        s.usable()


@pytest.mark.parametrize("k2", ["auto", "pooled", 0.1])
def test_maps_with_the_streamed_checks_equal_the_batch_checks(tmp_path, monkeypatch, k2):
    # the whole parametric_maps from a .nii.gz with a given mask: streamed (default)
    # and batch (_usable_voxels and _late_ratio after the gather) give identical maps
    import gzip
    import json

    import nibabel as nib

    from petbind.io.images import load
    from petbind.parametric import parametric_maps

    rng = np.random.default_rng(11)
    timing = _timing()
    shape = (10, 9, 8)
    # SRTM curves (R1 = 1, k2' = 0.1/min, BP_ND 0.5-3.5) on a fine grid, then frame means
    dt = 1.0 / 12.0  # 5 s: every frame holds whole steps
    tf = np.arange(0.0, timing.end[-1], dt) + dt / 2
    cr = 10 * tf * np.exp(-tf / 8)

    def frame_means(c):
        idx = np.minimum((tf[:, None] >= timing.start) & (tf[:, None] < timing.end), 1)
        return (c @ idx) / idx.sum(axis=0)

    bp = 0.5 + 3 * rng.random(shape)
    k2a = 0.1 / (1 + bp.reshape(-1))
    conv = np.stack([np.convolve(cr, np.exp(-k * tf))[:tf.size] * dt for k in k2a])
    ct = cr + (0.1 - k2a)[:, None] * conv
    ref_c = frame_means(cr)
    data = frame_means(ct).reshape(shape + (-1,))
    data = (data * (1 + 0.02 * rng.standard_normal(data.shape))).astype(np.float32)
    data[2, 2, 2, 7] = np.nan                 # not finite in one frame
    data[3, 3, 3] = -np.abs(data[3, 3, 3])    # no signal
    refm = np.zeros(shape, bool)
    refm[:, :, 0] = True
    data[refm] = ref_c.astype(np.float32)
    mask = np.ones(shape, bool)
    mask[:, :, 0] = False
    p = tmp_path / "sub-01_pet.nii.gz"
    p.write_bytes(gzip.compress(nib.Nifti1Image(data, np.eye(4)).to_bytes(), mtime=0))
    (tmp_path / "sub-01_pet.json").write_text(json.dumps({
        "Units": "kBq/mL", "TracerRadionuclide": "C11", "TimeZero": "10:00:00",
        "ScanStart": 0, "InjectionStart": 0,
        "FrameTimesStart": list(timing.start * 60), "FrameDuration": list(timing.duration * 60),
        "ImageDecayCorrected": True, "ImageDecayCorrectionTime": 0}))

    def run():
        return parametric_maps(load(p), model="mrtm2", ref_curve=refm, mask=mask,
                               k2prime=k2, scheduler="sync")

    calls = []
    real = core._StreamedChecks
    monkeypatch.setattr(core, "_StreamedChecks",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    streamed = run()
    monkeypatch.setattr(core, "_StreamedChecks", lambda *a, **k: None)  # the batch path
    batch = run()
    assert calls == [1]
    assert streamed.counts == batch.counts
    assert streamed.counts["n_nonfinite"] == 1 and streamed.counts["n_no_signal"] == 1
    assert streamed.k2prime == batch.k2prime
    for name, m in batch.maps.items():
        np.testing.assert_array_equal(streamed.maps[name], m)
    np.testing.assert_array_equal(streamed.valid, batch.valid)
