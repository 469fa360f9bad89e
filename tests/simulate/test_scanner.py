"""Scanner effects: partial-volume weights, noise SD, rigid motion."""

from __future__ import annotations

import math

import numpy as np
import pytest

from petbind.errors import DataError
from petbind.simulate.scanner import (
    apply_rigid_motion,
    block_mean,
    blurred_indicators,
    majority_labels,
    move_rigid,
    moved_object_frames,
    noise_sd,
    partial_volume_weights,
    pet_grid,
    random_motion,
    rigid_matrix,
)
from petbind.timing import FrameTiming


def blob_labels(shape=(40, 40, 40)):
    lab = np.zeros(shape, dtype=np.int16)
    lab[10:20, 12:22, 15:25] = 1
    lab[22:26, 22:26, 22:26] = 2
    return lab


def test_blur_and_block_average_conserve_each_label_volume():
    lab = blob_labels()
    w = partial_volume_weights(lab, 2, fwhm_mm=3.0, voxel_mm=1.0, factor=2)
    assert w.shape == (20, 20, 20, 2)
    # each PET voxel holds 8 phantom voxels: sum of weights x 8 = label voxel count
    assert w[..., 0].sum() * 8 == pytest.approx(1000, rel=1e-4)
    assert w[..., 1].sum() * 8 == pytest.approx(64, rel=1e-4)
    assert w.sum(axis=-1).max() <= 1.0 + 1e-6


def test_gaussian_blur_has_the_configured_fwhm():
    # a thin slab blurred along x: the profile's FWHM is the PSF's
    lab = np.zeros((101, 3, 3), dtype=np.int16)
    lab[50] = 1
    w = partial_volume_weights(lab, 1, fwhm_mm=6.0, voxel_mm=0.5, factor=1)[:, 1, 1, 0]
    half = w.max() / 2
    above = np.flatnonzero(w >= half)
    # linear interpolation of the two half-maximum crossings
    lo, hi = above[0], above[-1]
    x_lo = lo - (w[lo] - half) / (w[lo] - w[lo - 1])
    x_hi = hi + (w[hi] - half) / (w[hi] - w[hi + 1])
    assert (x_hi - x_lo) * 0.5 == pytest.approx(6.0, rel=0.02)


def test_pet_grid_affine_puts_voxel_centres_at_block_centres():
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    aff[:3, 3] = [-10, -20, -30]
    shape, pet_aff = pet_grid((21, 40, 30), aff, 2)
    assert shape == (10, 20, 15)
    # PET voxel (0,0,0) is the mean of phantom voxels 0 and 1 on each axis
    np.testing.assert_allclose(pet_aff @ [0, 0, 0, 1], [-9.5, -19.5, -29.5, 1])
    np.testing.assert_allclose(pet_aff[:3, :3], 2 * np.eye(3))


def test_block_mean_and_majority_labels_on_a_known_pattern():
    lab = np.zeros((4, 4, 4), dtype=np.int16)
    lab[:2, :2, :2] = 1
    lab[0, 0, 0] = 2  # 1 of 8 voxels: the block is still label 1
    lab[2:, 2:, 2:] = 2
    lab[2, 2, 2] = 0
    got = majority_labels(lab, 2, 2)
    assert got[0, 0, 0] == 1
    assert got[1, 1, 1] == 2
    assert got[0, 1, 0] == 0
    assert block_mean((lab == 1).astype(float), 2)[0, 0, 0] == pytest.approx(7 / 8)


def test_noise_sd_follows_counting_statistics():
    timing = FrameTiming([0, 60, 600], [60, 120, 600], unit="s")
    lam = math.log(2) / 20.0
    true = np.array([[4.0, 9.0, 1.0]])
    sd = noise_sd(true, timing, lam, level=0.1, peak=16.0)
    mid = np.array([0.5, 2.0, 15.0])
    dur = np.array([1.0, 2.0, 10.0])
    want = 0.1 * np.sqrt(16.0 * true[0] * np.exp(lam * mid) / dur)
    np.testing.assert_allclose(sd[0], want, rtol=1e-12)
    assert noise_sd(np.array([[-1.0, 0.0, 1.0]]), timing, lam, 0.1, peak=1.0)[0, 0] == 0.0


def test_rigid_matrix_rotates_about_the_centre_then_translates():
    m = rigid_matrix([1.0, 2.0, 3.0, 0.0, 0.0, 90.0], centre_mm=[10.0, 0.0, 0.0])
    # (11, 0, 0) is 1 mm from the centre along x; 90 deg about z sends it to (10, 1, 0)
    np.testing.assert_allclose(m @ [11.0, 0.0, 0.0, 1.0], [11.0, 3.0, 3.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(rigid_matrix(np.zeros(6), [5, 5, 5]), np.eye(4))


def test_apply_rigid_motion_shifts_by_whole_voxels_exactly():
    vol = np.zeros((20, 20, 20, 3), dtype=np.float32)
    vol[5:9, 6:10, 7:11, :] = 1.0
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    params = np.zeros((3, 6))
    params[1, 0] = 4.0   # +4 mm in x = +2 voxels
    params[2, 2] = -2.0  # -2 mm in z = -1 voxel
    out = apply_rigid_motion(vol, affine, params)
    np.testing.assert_array_equal(out[..., 0], vol[..., 0])
    np.testing.assert_allclose(out[..., 1], np.roll(vol[..., 1], 2, axis=0), atol=1e-6)
    np.testing.assert_allclose(out[..., 2], np.roll(vol[..., 2], -1, axis=2), atol=1e-6)


def test_apply_rigid_motion_rotation_moves_the_centroid_where_the_matrix_says():
    vol = np.zeros((41, 41, 11, 1), dtype=np.float32)
    vol[28:32, 19:23, 4:7, 0] = 1.0
    affine = np.eye(4)
    affine[:3, 3] = [-20.0, -20.0, -5.0]
    params = np.array([[0, 0, 0, 0, 0, 30.0]])
    out = apply_rigid_motion(vol, affine, params, centre_mm=[0.0, 0.0, 0.0])

    def centroid(v):
        idx = np.argwhere(v > 0)
        w = v[v > 0]
        ijk = (idx * w[:, None]).sum(0) / w.sum()
        return (affine @ np.append(ijk, 1.0))[:3]

    before = centroid(vol[..., 0])
    want = (rigid_matrix(params[0], [0, 0, 0]) @ np.append(before, 1.0))[:3]
    np.testing.assert_allclose(centroid(out[..., 0]), want, atol=0.1)
    assert out.sum() == pytest.approx(vol.sum(), rel=0.02)


def test_apply_rigid_motion_refuses_parameters_of_the_wrong_shape():
    with pytest.raises(DataError, match="motion parameters"):
        apply_rigid_motion(np.zeros((4, 4, 4, 3)), np.eye(4), np.zeros((2, 6)))


def test_random_motion_is_still_before_start_and_bounded_after():
    timing = FrameTiming.from_schedule([(6, 10), (3, 20), (4, 60), (5, 300), (5, 600)])
    m = random_motion(timing, 1.5, 2.0, np.random.default_rng(0), start_min=2.0)
    still = timing.start < 2.0
    assert np.all(m[still] == 0)
    assert np.any(m[~still] != 0)
    assert np.abs(m[:, :3]).max() <= 1.5
    assert np.abs(m[:, 3:]).max() <= 2.0


def test_motion_convention_matches_the_preprocessing_module():
    reg = pytest.importorskip("petbind.preprocess.register")
    params = np.array([1.5, -0.7, 2.0, 3.0, -4.0, 5.0])
    centre = np.array([1.0, -12.0, 4.0])
    np.testing.assert_allclose(rigid_matrix(params, centre), reg.rigid_matrix(params, centre),
                               atol=1e-12)


def _whole_grid_weights(labels, n_labels, fwhm_mm, factor, moved=None):
    """Reference: blur each indicator on the whole grid, optionally move it, block-average."""
    from scipy import ndimage

    sigma = fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    cols = []
    for lab in range(1, n_labels + 1):
        ind = (labels == lab).astype(np.float32)
        if sigma > 0:
            ind = ndimage.gaussian_filter(ind, sigma, mode="constant", truncate=3.5)
        if moved is not None:
            ind = moved(ind)
        cols.append(block_mean(ind, factor))
    return np.stack(cols, axis=-1)


@pytest.mark.parametrize(("fwhm", "factor", "crop"), [(2.8, 2, 0), (0.0, 2, 1), (1.5, 3, 2)])
def test_per_label_boxes_give_the_whole_grid_weights_bit_for_bit(fwhm, factor, crop):
    lab = blob_labels((41, 37, 44))[crop:, :, crop:]
    lab[0:3, 30:37, 40:] = 3  # a label touching the grid edges
    got = partial_volume_weights(lab, 4, fwhm_mm=fwhm, voxel_mm=1.0, factor=factor)
    want = _whole_grid_weights(lab, 4, fwhm, factor)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got[..., :3], want[..., :3])
    assert not got[..., 3].any()  # label 4 absent: no weight


def test_moved_weights_equal_blurred_indicators_sampled_at_the_inverse_motion():
    """Independent route: map_coordinates at T^-1 of every output voxel centre."""
    from scipy import ndimage

    lab = blob_labels((40, 40, 40))
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-20.0, -18.0, -21.0]
    t = rigid_matrix([1.7, -2.2, 0.6, 4.0, -3.0, 6.0], [0.0, 1.0, -2.0])
    ijk = np.indices(lab.shape).reshape(3, -1)
    world = affine[:3, :3] @ ijk + affine[:3, 3:4]
    back = np.linalg.inv(t)[:3, :3] @ world + np.linalg.inv(t)[:3, 3:4]
    src = np.linalg.inv(affine)[:3, :3] @ back + np.linalg.inv(affine)[:3, 3:4]

    def sample(v):
        return ndimage.map_coordinates(v, src, order=1, mode="constant").reshape(v.shape)

    got = partial_volume_weights(lab, 2, fwhm_mm=2.5, voxel_mm=1.0, factor=2, matrix=t,
                                 affine=affine)
    want = _whole_grid_weights(lab, 2, 2.5, 2, moved=sample)
    np.testing.assert_allclose(got, want, atol=2e-6)
    # a rigid motion keeps each label's volume (1000 and 64 voxels, 8 per PET voxel)
    assert got[..., 0].sum() * 8 == pytest.approx(1000, rel=2e-3)
    assert got[..., 1].sum() * 8 == pytest.approx(64, rel=2e-3)


def test_moved_frames_are_the_moved_object_seen_by_the_scanner():
    """Each moved frame equals the moved weights (per label, independent of the frame
    route) times the label curves: the object moves, then is blurred and voxelised."""
    lab = blob_labels((40, 40, 40))
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-20.0, -18.0, -21.0]
    tacs = np.array([[1.0, 2.0, 3.0], [5.0, 0.5, 4.0]])  # 2 labels x 3 frames
    poses = np.stack([rigid_matrix([1.7, -2.2, 0.6, 4.0, -3.0, 6.0], [0.0, 1.0, -2.0]),
                      np.eye(4),
                      rigid_matrix([-0.4, 0.3, 1.1, -1.0, 2.0, 0.5], [0.0, 0.0, 0.0])])
    sigma = 2.5 / 2.3548200450309493
    got = moved_object_frames(blurred_indicators(lab, 2, sigma), lab.shape, affine, 2, tacs,
                              poses)
    assert got.shape == (20, 20, 20, 3) and got.dtype == np.float32
    for f in range(3):
        w = partial_volume_weights(lab, 2, fwhm_mm=2.5, voxel_mm=1.0, factor=2,
                                   matrix=poses[f], affine=affine)
        np.testing.assert_allclose(got[..., f], w @ tacs[:, f], atol=2e-5)
    # the still frame is exactly the unmoved image W @ TAC
    w0 = partial_volume_weights(lab, 2, fwhm_mm=2.5, voxel_mm=1.0, factor=2)
    np.testing.assert_allclose(got[..., 1], w0 @ tacs[:, 1], atol=2e-6)


def test_simulated_motion_loses_no_more_than_realigning_a_sharp_object_does():
    """Undoing the known motion of a simulated frame (cubic B-spline) gives back the
    still frame up to the realignment's own interpolation; the old route, resampling
    the voxelised frame trilinearly, smoothed it on top, irrecoverably."""
    from petbind.preprocess.register import resample

    lab = blob_labels((40, 40, 40))
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-20.0, -20.0, -20.0]
    pet_shape, pet_aff = pet_grid(lab.shape, affine, 2)
    centre = pet_aff[:3, :3] @ ((np.array(pet_shape) - 1) / 2.0) + pet_aff[:3, 3]
    t = rigid_matrix([0.7, -0.9, 0.5, 1.0, -1.5, 1.2], centre)
    sigma = 2.8 / 2.3548200450309493
    tac = np.array([[1.0], [0.0]])
    still = (partial_volume_weights(lab, 2, fwhm_mm=2.8, voxel_mm=1.0, factor=2) @ tac)[..., 0]
    new = moved_object_frames(blurred_indicators(lab, 2, sigma), lab.shape, affine, 2, tac,
                              t[None])[..., 0]
    old = apply_rigid_motion(still[..., None], pet_aff, [[0.7, -0.9, 0.5, 1.0, -1.5, 1.2]])
    back_new = resample(new, pet_aff, pet_shape, pet_aff, t, interpolation="bspline")
    back_old = resample(old[..., 0], pet_aff, pet_shape, pet_aff, t, interpolation="bspline")
    core = still > 0.5 * still.max()
    loss_new = 1 - back_new[core].mean() / still[core].mean()
    loss_old = 1 - back_old[core].mean() / still[core].mean()
    # B-spline realignment of 2 mm voxels costs a few per cent of a 10 mm blob's core
    # (measured 2.7 %); resampling twice (motion, then its undoing) costs three times that
    assert abs(loss_new) < 0.035
    assert loss_old > 2 * abs(loss_new) and loss_old > 0.06


def test_move_rigid_puts_the_object_at_matrix_times_its_position():
    vol = np.zeros((30, 30, 30), dtype=np.int16)
    vol[10:13, 8:11, 14:17] = 7
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-30.0, -30.0, -30.0]
    # +4 mm in x and -2 mm in z: exactly +2 and -1 voxels, labels kept as integers
    out = move_rigid(vol, affine, rigid_matrix([4.0, 0, -2.0, 0, 0, 0], [0, 0, 0]), order=0)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, np.roll(np.roll(vol, 2, axis=0), -1, axis=2))
    # 90 degrees about z through the origin: voxel centre (x, y) -> (-y, x)
    one = np.zeros((31, 31, 31), dtype=np.float32)
    aff = np.eye(4)
    aff[:3, 3] = [-15.0, -15.0, -15.0]
    one[15 + 6, 15 + 2, 15 + 1] = 1.0  # world (6, 2, 1)
    rot = move_rigid(one, aff, rigid_matrix([0, 0, 0, 0, 0, 90.0], [0, 0, 0]), order=1)
    assert np.unravel_index(np.argmax(rot), rot.shape) == (15 - 2, 15 + 6, 15 + 1)
    assert rot.max() == pytest.approx(1.0, abs=1e-6)
