"""GTM against the independent scanner of conftest.py and a slow explicit GTM."""

import numpy as np
import pytest
from scipy import ndimage

from petbind.pvc.gtm import gtm
from petbind.pvc.psf import PSF
from petbind.pvc.spread import BACKGROUND, region_spread

from .conftest import FWHM_PER_SIGMA, blurred_image, make_phantom, true_curves


def _spread(labels, names, fine, pet, shape, fwhm):
    """Spread functions blurred on the atlas grid (no oversampling: the conftest scanner)."""
    return region_spread(labels, names, PSF((fwhm,) * 3), pet_shape=shape, pet_affine=pet,
                         labels_affine=fine, oversample=1)


@pytest.mark.parametrize("factor", [1, 2])
@pytest.mark.parametrize("background", [0.0, 2.5])
def test_gtm_exact_on_piecewise_constant_phantom(factor, background):
    lab, names, fine, pet = make_phantom(factor)
    curves = true_curves(background=background)
    img = blurred_image(lab, curves, 3.0, 2.0 / factor, factor)
    sp = _spread(lab, names, fine, pet, img.shape, 3.0)
    res = gtm(img, sp)
    for j, k in enumerate(sp.labels):
        np.testing.assert_allclose(res.values[j], curves[k], rtol=1e-6, atol=1e-9)
    # the small hot region loses much of its signal before correction
    nacc = sp.labels.index(3)
    assert res.observed[nacc, 0] < 0.8 * curves[3][0]
    assert 0 < res.recovery[nacc] < 0.7 and res.condition > 1
    sym = gtm(img, sp, symmetric=True)
    for j, k in enumerate(sp.labels):
        np.testing.assert_allclose(sym.values[j], curves[k], rtol=1e-6, atol=1e-9)


def test_gtm_matches_slow_explicit_implementation():
    """Each label's blurred indicator as a whole image, G by explicit means (Rousset 1998)."""
    lab, names, fine, pet = make_phantom(1)
    rng = np.random.default_rng(4)
    img = blurred_image(lab, true_curves(n_frames=4, background=1.0), 3.4, 2.0)
    img = img + rng.normal(0, 0.3, img.shape)  # noise: not a fixed point of either
    sp = _spread(lab, names, fine, pet, img.shape, 3.4)
    fast = gtm(img, sp)

    sigma = 3.4 / FWHM_PER_SIGMA / 2.0
    keys = sorted(names)
    masks = [lab == k for k in keys] + [~np.isin(lab, keys)]
    rsf = [ndimage.gaussian_filter(m.astype(float), sigma, mode="constant", truncate=4.0)
           for m in masks]
    n = len(masks)
    g = np.empty((n, n))
    y = np.empty((n, img.shape[3]))
    for i in range(n):
        for j in range(n):
            g[i, j] = rsf[j][masks[i]].mean()
        for t in range(img.shape[3]):
            y[i, t] = img[..., t][masks[i]].mean()
    slow = np.linalg.solve(g, y)
    assert sp.regions[-1] == BACKGROUND
    np.testing.assert_allclose(fast.matrix, g, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fast.values, slow, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fast.condition, np.linalg.cond(g), rtol=1e-6)


def test_pool_weights_labels_by_volume():
    lab, names, fine, pet = make_phantom(1)
    sp = _spread(lab, names, fine, pet, lab.shape, 3.0)
    vals = np.arange(len(sp.labels), dtype=float)[:, None] * np.ones((1, 2))
    regions, pooled = sp.pool(vals)
    assert BACKGROUND not in regions and regions.count("caudate") == 1
    i5, i6 = sp.labels.index(5), sp.labels.index(6)
    v5, v6 = (lab == 5).sum(), (lab == 6).sum()
    expect = (i5 * v5 + i6 * v6) / (v5 + v6)
    assert pooled[regions.index("caudate"), 0] == pytest.approx(expect)


def test_gtm_with_a_wrong_psf_under_or_over_corrects_a_small_hot_region():
    lab, names, fine, pet = make_phantom(2)
    curves = true_curves(background=0.5)
    img = blurred_image(lab, curves, 3.0, 1.0, 2)
    got = {}
    for scale in (0.7, 1.0, 1.3):
        sp = _spread(lab, names, fine, pet, img.shape, 3.0 * scale)
        got[scale] = gtm(img, sp).values[sp.labels.index(3)]
    assert np.all(got[0.7] < 0.97 * curves[3]) and np.all(got[1.3] > 1.03 * curves[3])
    np.testing.assert_allclose(got[1.0], curves[3], rtol=1e-6)


@pytest.mark.parametrize("oversample", [None, 4])
def test_pet_grid_atlas_is_oversampled_to_model_the_voxelised_object(oversample):
    """A scanner that blurs the voxelised object finely and averages over each voxel."""
    lab, names, _, pet = make_phantom(1)
    fine = np.repeat(np.repeat(np.repeat(lab, 4, axis=0), 4, axis=1), 4, axis=2)
    curves = true_curves(background=1.0)
    img = blurred_image(fine, curves, 3.0, 0.5, 4)
    sp = region_spread(lab, names, PSF((3.0,) * 3), pet_shape=img.shape, pet_affine=pet,
                       oversample=oversample)
    assert sp.oversampled == 4 and sp.factor == 4  # 2 mm voxels -> 0.5 mm by default
    res = gtm(img, sp)
    for j, k in enumerate(sp.labels):
        np.testing.assert_allclose(res.values[j], curves[k], rtol=1e-6, atol=1e-9)
    # without oversampling the same atlas under-corrects the small hot region
    plain = gtm(img, _spread(lab, names, pet, pet, img.shape, 3.0))
    nacc = sp.labels.index(3)
    assert np.all(plain.values[nacc] < 0.97 * curves[3])
