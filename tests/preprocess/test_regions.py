"""Tests of petbind.preprocess.regions: atlas I/O, resampling, region curves, GM, maps."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from petbind.errors import DataError, MetadataError
from petbind.preprocess.regions import (
    Atlas,
    atlas_supersample,
    atlas_to_pet,
    grey_matter_mask,
    load_atlas,
    region_tacs,
    to_template,
)
from petbind.timing import FrameTiming


def two_box_atlas():
    """A 1 mm atlas: label 1 in voxels x = 0..9 (x < 9.5 mm), label 2 in x = 10..19."""
    lab = np.zeros((20, 20, 20), np.int32)
    lab[:10] = 1
    lab[10:] = 2
    table = pd.DataFrame({"index": [1, 2], "name": ["a_L", "a_R"], "region": ["a", "a"]})
    return Atlas(lab, np.eye(4), table)


def test_fraction_resampling_gives_exact_partial_volumes_on_a_coarse_grid():
    atlas = two_box_atlas()
    # 3 mm PET voxels, centres at 1, 4, 7, 10, ...; label 1 ends at x = 9.5 mm. With
    # 2 sub-samples per axis the voxel at x = 10 is sampled at 9.25 (label 1) and
    # 10.75 (label 2): half and half
    aff = np.diag([3.0, 3.0, 3.0, 1.0])
    aff[:3, 3] = 1.0
    labels, frac = atlas_to_pet(atlas, (6, 6, 6), aff, None, method="fraction", supersample=2)
    assert frac.shape == (2, 6, 6, 6)
    assert labels[2, 2, 2] == 1 and labels[4, 2, 2] == 2
    np.testing.assert_allclose(frac[0, 2, 2, 2], 1.0)
    np.testing.assert_allclose(frac[:, 3, 2, 2], [0.5, 0.5])
    np.testing.assert_allclose(frac[1, 4, 2, 2], 1.0)
    nearest, none = atlas_to_pet(atlas, (6, 6, 6), aff, None, method="nearest")
    assert none is None and nearest[2, 2, 2] == 1 and nearest[4, 2, 2] == 2


def test_label_numbers_far_apart_or_negative_give_the_same_partial_volumes():
    """A label numbered 2e9 (a look-up table that long would need 16 GB) and a negative
    one (it would index such a table from its end): the shares of labels 1 and 2."""
    aff = np.diag([3.0, 3.0, 3.0, 1.0])
    aff[:3, 3] = 1.0
    plain = two_box_atlas()
    _, want = atlas_to_pet(plain, (6, 6, 6), aff, None, method="fraction", supersample=2)
    odd = np.where(plain.labels == 1, 2_000_000_000, np.where(plain.labels == 2, -5, 0))
    table = plain.table.assign(index=[2_000_000_000, -5])
    labels, got = atlas_to_pet(Atlas(odd, np.eye(4), table), (6, 6, 6), aff, None,
                               method="fraction", supersample=2)
    np.testing.assert_array_equal(got, want)
    assert labels[2, 2, 2] == 2_000_000_000 and labels[4, 2, 2] == -5


def test_default_sub_samples_sit_at_the_atlas_resolution_off_its_voxel_boundaries():
    def aff(v):
        return np.diag([v, v, v, 1.0])

    assert atlas_supersample(aff(2.0), aff(1.0)) == (2, 2, 2)
    assert atlas_supersample(aff(3.0), aff(1.0)) == (3, 3, 3)
    assert atlas_supersample(aff(2.0), aff(2.0)) == (3, 3, 3)
    assert atlas_supersample(np.diag([2.0, 2.0, 4.0, 1.0]), aff(1.0)) == (2, 2, 4)
    # 2 mm PET voxels over the 1 mm atlas, aligned (PET voxel i covers atlas voxels 2i,
    # 2i+1; label 1 ends between atlas voxels 9 and 10 = inside PET voxel 4 at x 9.5 mm is
    # not a boundary case) -- shift label 1's end to atlas voxel 8: PET voxel 4 (atlas
    # voxels 8, 9) is exactly half label 1, half label 2. The default gives 0.5 / 0.5;
    # 3 x 3 x 3 puts its middle sub-sample on the boundary at x = 8.5 mm and gives 1/3 : 2/3
    atlas = two_box_atlas()
    atlas.labels[9] = 2
    pet = aff(2.0)
    pet[:3, 3] = 0.5
    _, frac = atlas_to_pet(atlas, (10, 10, 10), pet, None)
    np.testing.assert_allclose(frac[:, 4, 5, 5], [0.5, 0.5])
    np.testing.assert_allclose(frac[:, 3, 5, 5], [1.0, 0.0])
    _, frac3 = atlas_to_pet(atlas, (10, 10, 10), pet, None, supersample=3)
    assert not np.allclose(frac3[:, 4, 5, 5], [0.5, 0.5])


def test_region_tacs_pool_labels_by_region_with_fraction_weights():
    atlas = two_box_atlas()
    timing = FrameTiming([0.0, 1.0], [1.0, 1.0], unit="min")
    data = np.zeros((4, 1, 1, 2), np.float32)
    data[:, 0, 0, 0] = [1.0, 2.0, 3.0, 4.0]
    data[:, 0, 0, 1] = 10.0
    frac = np.zeros((2, 4, 1, 1), np.float32)
    frac[0, :, 0, 0] = [1.0, 0.5, 0.0, 0.0]
    frac[1, :, 0, 0] = [0.0, 0.5, 0.5, 0.0]
    labels = np.array([1, 1, 2, 0]).reshape(4, 1, 1)
    tacs = region_tacs(data, timing, atlas, labels, frac)
    assert tacs.regions == ["a"]
    # weights 1, 1, 0.5, 0 -> (1 + 2 + 1.5) / 2.5
    np.testing.assert_allclose(tacs.values[0], [4.5 / 2.5, 10.0])


def test_grey_matter_restriction_drops_white_matter_voxels_from_grey_regions():
    table = pd.DataFrame({"index": [1, 2], "name": ["cortex", "white_matter"],
                          "region": ["cortex", "white_matter"]})
    atlas = Atlas(np.zeros((3, 1, 1), np.int32), np.eye(4), table)
    labels = np.array([1, 1, 2]).reshape(3, 1, 1)
    data = np.array([1.0, 5.0, 7.0], np.float32).reshape(3, 1, 1, 1)
    gm = np.array([1.0, 0.0, 0.0]).reshape(3, 1, 1)
    timing = FrameTiming([0.0], [1.0], unit="min")
    tacs = region_tacs(data, timing, atlas, labels, grey_matter=gm)
    np.testing.assert_allclose(tacs.values[:, 0], [1.0, 7.0])  # WM region not restricted


def test_grey_matter_mask_picks_the_middle_intensity_class():
    rng = np.random.default_rng(0)
    img = np.zeros((30, 10, 10))
    img[:10], img[10:20], img[20:] = 0.3, 0.6, 1.0  # CSF-like, GM, WM
    img += 0.02 * rng.standard_normal(img.shape)
    gm = grey_matter_mask(img, np.ones(img.shape, bool))
    assert gm[10:20].mean() > 0.99 and gm[:10].mean() < 0.01 and gm[20:].mean() < 0.01


def test_to_template_moves_a_map_by_a_known_shift_and_keeps_nan_regions_nan():
    pet_aff = np.diag([2.0, 2.0, 2.0, 1.0])
    m = np.zeros((20, 20, 20), np.float32)
    m[8:12, 8:12, 8:12] = 1.0
    m[0:3] = np.nan
    tpl_aff = np.diag([2.0, 2.0, 2.0, 1.0])
    shift = np.eye(4)
    shift[0, 3] = 4.0  # template point x lies at PET point x + 4 mm
    out = to_template(m, pet_aff, (20, 20, 20), tpl_aff, shift)
    np.testing.assert_allclose(out[6:10, 8:12, 8:12], 1.0, atol=1e-5)
    assert out[11, 10, 10] == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(out[0, 10, 10])  # PET x = 4 mm (voxel 2) was NaN
    assert np.isnan(out[19, 10, 10])  # outside the PET field of view


def test_load_atlas_without_label_table_names_the_missing_tsv(tmp_path):
    p = tmp_path / "tpl-x_dseg.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.int16), np.eye(4)), str(p))
    with pytest.raises(MetadataError, match=r"tpl-x_dseg\.tsv"):
        load_atlas(p)


def test_load_atlas_rejects_labels_missing_from_the_table(tmp_path):
    p = tmp_path / "a_dseg.nii.gz"
    lab = np.zeros((4, 4, 4), np.int16)
    lab[0], lab[1] = 1, 7
    nib.save(nib.Nifti1Image(lab, np.eye(4)), str(p))
    pd.DataFrame({"index": [1], "name": ["x"]}).to_csv(tmp_path / "a_dseg.tsv", sep="\t",
                                                     index=False)
    with pytest.raises(MetadataError, match=r"\[7\]"):
        load_atlas(p)


def test_region_without_voxels_in_pet_space_is_an_error():
    atlas = two_box_atlas()
    timing = FrameTiming([0.0], [1.0], unit="min")
    with pytest.raises(DataError, match="no voxels"):
        region_tacs(np.ones((2, 2, 2, 1)), timing, atlas, np.zeros((2, 2, 2), int))
