"""Tests of petbind.preprocess.motion on analytic phantoms with known motion."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from petbind.errors import DataError
from petbind.preprocess.motion import (
    apply_motion,
    estimate_motion,
    framewise_displacement,
    registration_blocks,
    write_motion_tsv,
)
from petbind.timing import FrameTiming

from .preprocess_phantom import (
    INDEX,
    fractions,
    frame_schedule,
    grid_affine,
    logan_ref_dvr,
    make_dynamic,
    region_curves,
    shared_once,
)

SHAPE = (36, 46, 32)
AFFINE = grid_affine(SHAPE, 2.0)
CENTER = AFFINE[:3, :3] @ ((np.array(SHAPE) - 1) / 2.0) + AFFINE[:3, 3]

# Head positions (trans mm, rot deg) of the moving frames. Frames 10-17 (the
# default reference window, 9-56 min) stay still; the early blocks of pooled
# short frames and the late 10-min frames move by up to 4 mm and 4 degrees.
MOVES = {
    (0, 1, 2, 3, 4): [2.0, -3.0, 1.0, 3.0, -2.0, 1.0],
    (5, 6): [-3.0, 2.0, -1.0, -2.0, 3.0, -1.0],
    (7, 8): [1.0, 1.0, 3.0, 1.0, -3.0, 2.0],
    (18,): [3.0, -2.0, 2.0, -3.0, 2.0, 3.0],
    (19, 20): [-4.0, 3.0, -1.0, 3.0, -3.0, -2.0],
    (21,): [1.0, -4.0, 3.0, -2.0, 4.0, 1.0],
}


def true_motion(n_frames):
    p = np.zeros((n_frames, 6))
    for frames, v in MOVES.items():
        p[list(frames)] = v
    return p


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    return shared_once(tmp_path_factory, "motion-scans", _build_scans)


def _build_scans(_folder):
    start, dur = frame_schedule()
    truth = true_motion(start.size)
    moved, *_ = make_dynamic(SHAPE, AFFINE, truth, CENTER, seed=3)
    # noise-free twins: the BP comparison then measures the effect of motion and
    # of its correction, not that of a different noise draw
    clean_moved, *_ = make_dynamic(SHAPE, AFFINE, truth, CENTER, noise=0.0)
    clean_still, *_ = make_dynamic(SHAPE, AFFINE, np.zeros_like(truth), CENTER, noise=0.0)
    timing = FrameTiming(start, dur, unit="min")
    motion = estimate_motion(moved, AFFINE, timing)  # estimated from the noisy scan
    return {"moved": moved, "clean_moved": clean_moved, "clean_still": clean_still,
            "truth": truth, "timing": timing, "motion": motion}


def test_estimate_motion_recovers_known_motion_within_half_mm_and_half_degree(scans):
    err = scans["motion"].params - scans["truth"]
    assert np.abs(err[:, :3]).max() < 0.5
    assert np.abs(err[:, 3:]).max() < 0.5


def test_estimate_motion_pools_short_early_frames_and_flags_jumps(scans):
    m = scans["motion"]
    # 4 x 15 s + 1 x 60 s make the first 2-min block; frames of a block share a transform
    assert np.all(m.block[:5] == 0) and m.block[5] == 1
    assert np.allclose(m.params[0], m.params[4])
    # the still frames 11..17 have no displacement; the jumps at 5, 18, 19 are flagged
    assert not m.flagged[11:18].any()
    assert m.flagged[[5, 7, 9, 18, 19, 21]].all()


def test_region_bp_after_correction_matches_motion_free_and_is_worse_without(scans):
    start, dur = frame_schedule()
    # true labels in PET space: majority label of each voxel
    labels = np.argmax(fractions(SHAPE, AFFINE, sub=2), axis=0)
    corrected = apply_motion(scans["clean_moved"], AFFINE, scans["motion"])

    def bp(data):
        tacs = np.stack([data[labels == k].mean(axis=0) for k in range(labels.max() + 1)])
        dvr = logan_ref_dvr(tacs, tacs[INDEX["cerebellum"]], start, dur)
        return dvr - 1.0

    regions = [INDEX[n] for n in ("caudate_L", "caudate_R", "putamen_L", "putamen_R",
                                  "thalamus", "frontal_cortex")]
    ref, fixed, raw = bp(scans["clean_still"]), bp(corrected), bp(scans["clean_moved"])
    rel_fixed = np.abs(fixed[regions] / ref[regions] - 1.0)
    rel_raw = np.abs(raw[regions] / ref[regions] - 1.0)
    assert rel_fixed.max() < 0.02
    assert rel_raw.max() > 0.05  # clearly worse without correction
    assert rel_raw.mean() > 3 * rel_fixed.mean()


def test_framewise_displacement_follows_power_2012():
    params = np.array([[0, 0, 0, 0, 0, 0], [1, -2, 0.5, 0, 0, 0], [1, -2, 0.5, 1.0, 0, -2.0]])
    fd = framewise_displacement(params, radius_mm=50.0)
    assert fd[0] == 0.0
    assert fd[1] == pytest.approx(3.5)
    assert fd[2] == pytest.approx(50.0 * np.pi / 180.0 * 3.0)


def test_registration_blocks_pool_frames_to_minimum_duration():
    dur = np.array([0.25] * 4 + [1.0] * 4 + [5.0] * 2 + [0.5])
    blocks = registration_blocks(dur, 2.0)
    # 4 x 0.25 + 1 = 2 min; 1 + 1 = 2 min; 1 + 5; 5 + 0.5 (trailing short frame joins)
    assert blocks.tolist() == [0, 0, 0, 0, 0, 1, 1, 2, 2, 3, 3]


def test_motion_tsv_has_parameters_in_mm_and_degrees_with_sidecar(scans, tmp_path):
    out = tmp_path / "sub-01_desc-motion_timeseries.tsv"
    write_motion_tsv(out, scans["motion"], scans["timing"])
    df = pd.read_csv(out, sep="\t")
    assert list(df.columns) == ["frame", "frame_start", "frame_duration", "trans_x", "trans_y",
                                "trans_z", "rot_x", "rot_y", "rot_z",
                                "framewise_displacement", "flagged", "block"]
    assert df["frame_start"].iloc[4] == pytest.approx(60.0)  # seconds
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["trans_x"]["Units"] == "mm" and side["rot_x"]["Units"] == "deg"


def test_estimate_motion_rejects_a_3d_image_naming_the_file():
    timing = FrameTiming([0.0], [10.0], unit="min")
    with pytest.raises(DataError, match=r"scan_pet\.nii\.gz.*4-D"):
        estimate_motion(np.zeros((8, 8, 8)), np.eye(4), timing, source="scan_pet.nii.gz")


def test_estimate_motion_rejects_frame_count_mismatch():
    timing = FrameTiming([0.0, 1.0, 2.0], [1.0, 1.0, 1.0], unit="min")
    with pytest.raises(DataError, match="FrameDuration"):
        estimate_motion(np.zeros((8, 8, 8, 2)), np.eye(4), timing, source="x.nii.gz")


def test_correct_motion_realigns_a_dynamic_image_and_keeps_timing(scans):
    from petbind.image import DynamicImage
    from petbind.preprocess.motion import correct_motion

    start, dur = frame_schedule()
    timing = FrameTiming(start, dur, unit="min")
    img = DynamicImage(scans["clean_moved"], AFFINE, timing, {"TracerName": "x"}, "scan.nii")
    corrected, motion = correct_motion(img, passes=1)
    assert corrected.timing == timing and corrected.metadata["TracerName"] == "x"
    assert np.abs(motion.params - scans["truth"]).max() < 0.5
    # realigned late frames match the motion-free scan far better than the moved ones
    late = slice(18, 22)
    still = scans["clean_still"][..., late]
    before = np.abs(scans["clean_moved"][..., late] - still).mean()
    after = np.abs(corrected.get_data()[..., late] - still).mean()
    assert after < 0.2 * before


def test_parameters_follow_the_simulators_motion_convention():
    # frames moved by petbind.simulate.scanner (the study simulator) come back
    # with the same six numbers: both use R = Rz Ry Rx about the grid centre
    from petbind.simulate.scanner import apply_rigid_motion

    shape = (32, 36, 28)
    aff = grid_affine(shape, 2.0)
    start, dur = frame_schedule()
    curves, _ = region_curves(start, dur)
    late = 20  # a late frame: binding contrast
    still = np.tensordot(curves[:, late], fractions(shape, aff, sub=2), axes=1)
    params = np.array([[0, 0, 0, 0, 0, 0], [2.0, -1.0, 1.5, 2.0, -3.0, 1.0],
                       [-1.5, 2.5, -1.0, -2.5, 1.5, 3.0]], dtype=float)
    moved = apply_rigid_motion(np.repeat(still[..., None], 3, axis=3), aff, params, order=3)
    timing = FrameTiming([0.0, 5.0, 10.0], [5.0, 5.0, 5.0], unit="min")
    est = estimate_motion(moved, aff, timing, reference_window=(0.0, 5.0), passes=1)
    np.testing.assert_allclose(est.params, params, atol=0.3)
