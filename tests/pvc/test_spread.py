"""Region-spread functions against their definition: each label blurred on the whole grid."""

import numpy as np
import pytest
from scipy import ndimage

from petbind.pvc.psf import PSF
from petbind.pvc.spread import BACKGROUND, region_spread, voxel_kernel

from .conftest import FWHM_PER_SIGMA, make_phantom


def _dense(matrix, shape):
    return [np.asarray(matrix[:, j].todense()).reshape(shape) for j in range(matrix.shape[1])]


def _edge_phantom():
    """The conftest phantom on a 2 x 2.5 x 3 mm grid, with one label cut by the grid's edge."""
    lab, names, _, _ = make_phantom(1)
    lab = lab.copy()
    lab[:3, 5:9, 4:8] = 8  # touches x = 0: its blur leaves the field of view
    names = {**names, 8: "scalp_edge"}
    pet = np.diag([2.0, 2.5, 3.0, 1.0])
    pet[:3, 3] = [-20.0, -30.0, -10.0]
    return lab, names, pet


@pytest.mark.parametrize("fwhm", [(3.4, 3.4, 3.4), (3.0, 5.5, 0.0)])
def test_oversampled_spread_is_the_blur_of_the_split_voxels(fwhm):
    """Split every PET voxel into 3^3, blur the whole grid, average back: Rousset's RSF."""
    lab, names, pet = _edge_phantom()
    sp = region_spread(lab, names, PSF(fwhm), pet_shape=lab.shape, pet_affine=pet, oversample=3)
    assert sp.oversampled == 3 and sp.factor == 3
    o = 3
    split = np.repeat(np.repeat(np.repeat(lab, o, axis=0), o, axis=1), o, axis=2)
    vox = np.array([2.0, 2.5, 3.0]) / o
    sigma = np.asarray(fwhm) / FWHM_PER_SIGMA / vox
    rsf = _dense(sp.rsf, lab.shape)
    frac = _dense(sp.fractions, lab.shape)
    for j, k in enumerate(sp.labels):
        ind = ~np.isin(split, sorted(names)) if k == 0 else split == k
        blur = ndimage.gaussian_filter(ind.astype(float), sigma, mode="constant", truncate=4.0)
        want = blur.reshape(lab.shape[0], o, lab.shape[1], o, lab.shape[2], o).mean(
            axis=(1, 3, 5))
        np.testing.assert_allclose(rsf[j], want, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(frac[j], (lab == k) if k else ~np.isin(lab, sorted(names)))
    assert sp.regions[-1] == BACKGROUND
    # the label cut by the grid's edge loses what its blur carries out of the field of view
    edge = rsf[sp.labels.index(8)]
    assert edge.sum() < (lab == 8).sum() - 1.0


@pytest.mark.parametrize("factor", [2, 3])
def test_fine_atlas_spread_is_the_blur_at_atlas_resolution_averaged(factor):
    lab, names, fine, pet = make_phantom(factor)
    shape = (22, 24, 20)
    psf = PSF((3.4, 2.0, 5.0))
    sp = region_spread(lab, names, psf, pet_shape=shape, pet_affine=pet, labels_affine=fine)
    assert sp.factor == factor and sp.oversampled == 1
    sigma = np.asarray(psf.fwhm_mm) / FWHM_PER_SIGMA / (2.0 / factor)
    rsf = _dense(sp.rsf, shape)
    frac = _dense(sp.fractions, shape)
    f = factor
    for j, k in enumerate(sp.labels):
        ind = (~np.isin(lab, sorted(names)) if k == 0 else lab == k).astype(float)
        blur = ndimage.gaussian_filter(ind, sigma, mode="constant", truncate=4.0)
        mean = blur.reshape(shape[0], f, shape[1], f, shape[2], f).mean(axis=(1, 3, 5))
        np.testing.assert_allclose(rsf[j], mean, rtol=0, atol=1e-12)
        cover = ind.reshape(shape[0], f, shape[1], f, shape[2], f).mean(axis=(1, 3, 5))
        np.testing.assert_allclose(frac[j], cover, rtol=0, atol=1e-12)


def test_voxel_kernel_is_the_split_blur_of_one_voxel():
    for sigma, split in [(2.3, 4), (0.4, 4), (5.0, 1), (1.7, 3)]:
        k = voxel_kernel(sigma, split)
        assert k.size % 2 == 1
        np.testing.assert_allclose(k, k[::-1], atol=1e-15)
        np.testing.assert_allclose(k.sum(), 1.0, atol=1e-12)  # the blur keeps the activity
        # one voxel's sub-voxels, blurred on a long line, averaged back
        n = 41
        line = np.zeros(n * split)
        line[(n // 2) * split:(n // 2 + 1) * split] = 1.0
        want = ndimage.gaussian_filter1d(line, sigma, mode="constant", truncate=4.0)
        want = want.reshape(n, split).mean(axis=1)
        h = k.size // 2
        np.testing.assert_allclose(k, want[n // 2 - h:n // 2 + h + 1], atol=1e-15)
        assert np.all(np.delete(want, np.arange(n // 2 - h, n // 2 + h + 1)) == 0.0)
    np.testing.assert_array_equal(voxel_kernel(0.0, 4), [1.0])


def test_auto_oversample_does_not_shrink_for_large_grids():
    """The factor follows the voxel size only (the split voxels are never built)."""
    from petbind.pvc.spread import auto_oversample

    assert auto_oversample(np.diag([2.0, 2.0, 2.0, 1.0])) == 4
    assert auto_oversample(np.diag([1.0, 1.0, 1.2, 1.0])) == 3
    assert auto_oversample(np.diag([0.4, 0.4, 0.4, 1.0])) == 1
    assert auto_oversample(np.diag([4.0, 4.0, 4.0, 1.0])) == 4


def test_sparse_label_numbers_absent_and_unlisted_labels():
    """FreeSurfer-like label numbers (up to 2035), one beyond 32 bits (searched on its
    own, not by find_objects), a listed label absent from the image and an image label
    not listed (it joins the background): against the definition."""
    lab, names, fine, pet = make_phantom(2)
    big = {1: 1002, 2: 2035, 3: 17, 4: 18, 5: 11, 6: 50, 7: 3_000_000_000}  # int64 label
    relabel = np.zeros(lab.max() + 1, dtype=np.int64)
    for k, v in big.items():
        relabel[k] = v
    lab2 = relabel[lab]
    names2 = {big[k]: r for k, r in names.items() if k != 6}  # 50 not listed
    names2[999] = "absent"
    shape = (22, 24, 20)
    sp = region_spread(lab2, names2, PSF((3.4, 3.4, 3.4)), pet_shape=shape, pet_affine=pet,
                       labels_affine=fine)
    assert 999 not in sp.labels and 50 not in sp.labels
    assert list(sp.labels) == sorted(k for k in names2 if k != 999) + [0]
    sigma = 3.4 / FWHM_PER_SIGMA / 1.0
    rsf = _dense(sp.rsf, shape)
    listed = sorted(k for k in names2 if k != 999)
    for j, k in enumerate(sp.labels):
        ind = (~np.isin(lab2, listed) if k == 0 else lab2 == k).astype(float)
        blur = ndimage.gaussian_filter(ind, sigma, mode="constant", truncate=4.0)
        want = blur.reshape(shape[0], 2, shape[1], 2, shape[2], 2).mean(axis=(1, 3, 5))
        np.testing.assert_allclose(rsf[j], want, rtol=0, atol=1e-12)
