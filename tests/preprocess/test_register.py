"""Tests of petbind.preprocess.register: geometry, rigid/affine/SyN recovery, ITK files."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from petbind.errors import DataError, FileFormatError
from petbind.preprocess.register import (
    compose,
    load_transform,
    matrix_from_sitk,
    register_linear,
    register_nonlinear,
    rigid_matrix,
    rigid_params,
    save_transform,
    to_sitk,
)

from .preprocess_phantom import (
    INDEX,
    NAMES,
    T1_VALUE,
    apply,
    fractions,
    grid_affine,
    labels_at,
    rigid,
    rot,
)

T1_CONTRAST = np.array([0.0] + [T1_VALUE[n] for n in NAMES])
FLIP = np.array([-1.0, -1.0, 1.0])


def t1_image(shape, affine, inverse_map=None):
    return np.tensordot(T1_CONTRAST, fractions(shape, affine, inverse_map, sub=2), axes=1)


def warp(points, amp=1.5):
    """A smooth non-linear displacement (mm) of template points."""
    x, y, z = points.T
    u = np.stack([np.sin(y / 12.0), np.sin(z / 10.0 + 0.5), np.sin(x / 14.0 - 0.3)], 1)
    return points + amp * u


def transform_points(tx, pts_ras):
    """Apply an ITK transform to RAS points (loop over a few hundred test points)."""
    return np.array([np.asarray(tx.TransformPoint(tuple(p * FLIP))) * FLIP for p in pts_ras])


def brain_points(n=300, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.uniform([-25, -30, -18], [25, 30, 18], size=(4 * n, 3))
    return p[labels_at(p) > 0][:n]


def test_rigid_matrix_matches_independent_rotation_and_inverts():
    params = np.array([1.5, -2.0, 0.7, 10.0, -20.0, 35.0])
    center = np.array([3.0, -4.0, 5.0])
    m = rigid_matrix(params, center)
    np.testing.assert_allclose(m[:3, :3], rot(params[3:]), atol=1e-12)
    # the centre moves by the translation only
    np.testing.assert_allclose(m[:3, :3] @ center + m[:3, 3], center + params[:3], atol=1e-12)
    np.testing.assert_allclose(rigid_params(m, center), params, atol=1e-10)


def test_sitk_image_maps_voxels_to_the_nifti_world_points():
    affine = np.array([[0.0, -2.0, 0.0, 30.0], [1.5, 0.0, 0.0, -20.0],
                       [0.0, 0.0, 2.5, -10.0], [0, 0, 0, 1]])
    img = to_sitk(np.zeros((5, 6, 7)), affine)
    ijk = np.array([2, 3, 4])
    lps = np.asarray(img.TransformIndexToPhysicalPoint(tuple(int(v) for v in ijk)))
    np.testing.assert_allclose(lps * FLIP, (affine @ np.append(ijk, 1))[:3])


def test_sheared_affine_is_rejected_with_the_field_named():
    affine = np.eye(4)
    affine[0, 1] = 0.5
    with pytest.raises(DataError, match="affine"):
        to_sitk(np.zeros((4, 4, 4)), affine, path="t1w.nii.gz")


@pytest.fixture(scope="module")
def t1_template():
    shape = (36, 42, 32)
    aff = grid_affine(shape, 2.0)
    return t1_image(shape, aff), aff


def test_pet_to_t1w_rigid_recovers_a_known_offset_within_1mm(t1_template):
    # T1w at 1.5 mm in template position; PET (2 mm, 4 mm PSF, activity contrast)
    # of the head moved by a known rigid transform
    t1_shape = (44, 54, 40)
    t1_aff = grid_affine(t1_shape, 1.5)
    t1 = t1_image(t1_shape, t1_aff)
    truth = rigid([4.0, -6.0, 3.0, 6.0, -4.0, 8.0], center=(0.0, 0.0, 0.0))
    pet_shape = (32, 38, 30)
    pet_aff = grid_affine(pet_shape, 2.0)
    pet_aff[:3, 3] += [5.0, -3.0, 2.0]  # a different field of view, too
    activity = np.array([0.0, 1.0, 0.4, 1.5, 3, 3, 3.5, 3.5, 2.2, 0.8])
    pet = gaussian_filter(np.tensordot(
        activity, fractions(pet_shape, pet_aff, lambda p: apply(np.linalg.inv(truth), p)),
        axes=1), 4.0 / 2.3548 / 2.0)
    reg = register_linear(t1, t1_aff, pet, pet_aff, kind="rigid", metric="mattes")
    pts = brain_points()
    err = np.linalg.norm(apply(reg.matrix, pts) - apply(truth, pts), axis=1)
    assert err.max() < 1.0


def test_t1w_to_template_affine_plus_syn_recovers_native_position_within_1mm(t1_template,
                                                                             tmp_path):
    template, tpl_aff = t1_template
    # the subject's T1w: the template's brain warped non-linearly and placed at a
    # known rigid offset: T1w point y shows the template at W(M^-1 y)
    m = rigid([-5.0, 4.0, 6.0, -7.0, 5.0, 10.0])
    t1_shape = (40, 46, 36)
    t1_aff = grid_affine(t1_shape, 2.0)
    minv = np.linalg.inv(m)
    t1 = t1_image(t1_shape, t1_aff, lambda p: warp(apply(minv, p)))
    lin = register_linear(template, tpl_aff, t1, t1_aff, kind="affine", metric="mattes")
    syn = register_nonlinear(template, tpl_aff, t1, t1_aff, lin.matrix, level_iters=(20, 10))
    # truth: template point x = W(q) lies at T1w point M q
    q = brain_points()
    x, y_true = warp(q), apply(m, q)
    err_syn = np.linalg.norm(transform_points(syn.forward, x) - y_true, axis=1)
    err_aff = np.linalg.norm(apply(lin.matrix, x) - y_true, axis=1)
    assert np.median(err_syn) < 1.0 and np.percentile(err_syn, 90) < 1.5
    assert np.median(err_syn) < np.median(err_aff)
    # the inverse maps T1w points back onto template points
    err_inv = np.linalg.norm(transform_points(syn.inverse, y_true) - x, axis=1)
    assert np.median(err_inv) < 1.0
    # the saved .h5 composite resamples exactly like dipy's own mapping
    path = save_transform(tmp_path / "from-T1w_to-template_mode-image_xfm.h5", syn.forward)
    back = load_transform(path)
    ref = to_sitk(template, tpl_aff)
    ours = sitk.GetArrayFromImage(sitk.Resample(to_sitk(t1, t1_aff), ref, back,
                                                sitk.sitkLinear, 0.0)).transpose(2, 1, 0)
    dipy_w = syn.mapping.transform(t1.astype(np.float64))
    inner = template > 0.3
    assert np.abs(ours - dipy_w)[inner].mean() < 0.01 * t1.max()


def test_linear_transform_files_round_trip_and_compose(tmp_path):
    a = rigid([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], center=(1.0, 1.0, 1.0))
    b = rigid([-3.0, 0.5, 1.0, 0.0, -8.0, 2.0])
    p = save_transform(tmp_path / "xfm.tfm", a)
    np.testing.assert_allclose(matrix_from_sitk(load_transform(p)), a, atol=1e-9)
    # compose(a, b) applies a first: x -> b(a(x))
    np.testing.assert_allclose(matrix_from_sitk(compose(a, b)), b @ a, atol=1e-9)


def test_missing_or_corrupt_transform_file_names_the_file(tmp_path):
    with pytest.raises(FileFormatError, match=r"nope\.h5"):
        load_transform(tmp_path / "nope.h5")
    bad = tmp_path / "bad.tfm"
    bad.write_text("not a transform\n")
    with pytest.raises(FileFormatError, match=r"bad\.tfm"):
        load_transform(bad)


def test_labels_of_the_phantom_are_distinct():
    assert len(set(INDEX.values())) == len(NAMES)
