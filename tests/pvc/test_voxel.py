"""RBV, iterative Yang and Müller-Gärtner on noise-free piecewise-constant phantoms."""

import numpy as np
import pytest

from petbind.pvc.gtm import gtm
from petbind.pvc.psf import PSF
from petbind.pvc.spread import region_spread
from petbind.pvc.voxel import iterative_yang, muller_gartner, rbv

from .conftest import blurred_image, make_phantom, true_curves

FWHM = 3.0


def _setup(fwhm_model=FWHM, factor=1, curves=None):
    lab, names, fine, pet = make_phantom(factor)
    curves = curves or true_curves(background=0.5)
    img = blurred_image(lab, curves, FWHM, 2.0 / factor, factor)
    sp = region_spread(lab, names, PSF((fwhm_model,) * 3), pet_shape=img.shape,
                       pet_affine=pet, labels_affine=fine, oversample=1)
    y = img.reshape(-1, img.shape[3])
    return lab, curves, sp, y


def _means(sp, corrected):
    """Label means of a corrected image over the (PET-grid) label masks."""
    return sp.majority_means(corrected)


def _rbv(sp, y):
    return rbv(y, sp, gtm(y.reshape(*sp.shape, -1), sp).values)


def _iy(sp, y):
    return iterative_yang(y, sp, n_iter=30)[0]


@pytest.mark.parametrize("method", [_rbv, _iy])
def test_regional_means_within_3_percent(method):
    _, curves, sp, y = _setup()
    means = _means(sp, method(sp, y))
    observed = sp.region_means(y)
    for j, k in enumerate(sp.labels):
        np.testing.assert_allclose(means[j], curves[k], rtol=0.03)
    nacc = sp.labels.index(3)
    assert np.all(observed[nacc] < 0.85 * curves[3])  # there was something to correct


def test_rbv_exact_with_exact_gtm():
    _, curves, sp, y = _setup()
    corrected = _rbv(sp, y)
    synth = np.asarray(sp.majority() @ np.stack([curves[k] for k in sp.labels]))
    inside = np.asarray(sp.fractions.max(axis=1).toarray()).ravel() == 1.0
    np.testing.assert_allclose(corrected[inside], synth[inside], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("method", [_rbv, _iy])
def test_wrong_psf_moves_small_hot_region_the_expected_way(method):
    """A PSF assumed too narrow under-corrects a hot small region; too wide over-corrects."""
    out = {}
    for scale in (0.7, 1.0, 1.3):
        _, curves, sp, y = _setup(FWHM * scale)
        out[scale] = _means(sp, method(sp, y))[sp.labels.index(3)]
    truth = curves[3]
    assert np.all(out[0.7] < 0.97 * truth)
    assert np.all(out[1.3] > 1.03 * truth)
    assert np.all(out[0.7] < out[1.0]) and np.all(out[1.0] < out[1.3])


def test_muller_gartner_exact_for_uniform_grey_matter():
    """One grey-matter activity over every grey label: MG is exact there."""
    c = true_curves(background=0.5)
    for k in (1, 3, 4, 5, 6):
        c[k] = c[1]
    _, curves, sp, y = _setup(curves=c)
    x = gtm(y.reshape(*sp.shape, -1), sp).values
    out = muller_gartner(y, sp, x, min_grey=0.3)
    grey = sp.columns_of({"cortex", "NAcc", "VP", "caudate"})
    f_gm = np.asarray(sp.fractions[:, grey].sum(axis=1)).ravel()
    r_gm = np.asarray(sp.rsf[:, grey].sum(axis=1)).ravel()
    use = (f_gm > 0) & (r_gm >= 0.3)
    assert use.sum() > 100
    np.testing.assert_allclose(out[use], np.broadcast_to(curves[1], out[use].shape),
                               rtol=1e-6)
    np.testing.assert_array_equal(out[~use], y[~use])
