"""Tests of petbind.parametric.smoothing: mask-aware Gaussian smoothing of the PET before fits.

Expected numbers are analytic: a constant stays constant under normalised
convolution; a Gaussian kernel of FWHM F applied to a point gives a profile
whose FWHM is F (measured here from the result's second moments and from its
half-maximum crossings); the fitted maps of identical voxel curves do not
change when those curves are smoothed among themselves.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from petbind.errors import DataError
from petbind.image import DynamicImage
from petbind.parametric import parametric_maps, smooth_in_mask, write_maps
from petbind.parametric.smoothing import smooth_curves
from petbind.timing import FrameTiming

SIGMA_PER_FWHM = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
TIMING = FrameTiming.from_schedule([(6, 10), (3, 20), (2, 30), (4, 60), (4, 120), (5, 300),
                                    (5, 600)], unit="s")
CP_A = np.array([40.0, 4.0, -44.0])  # plasma input sum_i A_i exp(-l_i t), kBq/mL
CP_L = np.array([1.2137, 0.04321, 6.037])  # 1/min
K1_REF, K2_REF = 0.4, 0.1


def target_frames(bp: np.ndarray, r1: np.ndarray) -> np.ndarray:
    """Exact frame means of a one-tissue tissue curve: K1 = R1 K1', k2 = R1 k2' / (1 + BP)."""
    k1 = np.asarray(r1, float) * K1_REF
    k2 = np.asarray(r1, float) * K2_REF / (1.0 + np.asarray(bp, float))
    s, e = TIMING.start, TIMING.end

    def frame_mean(rate: np.ndarray) -> np.ndarray:
        r = np.asarray(rate, float)[..., None]
        return (np.exp(-r * s) - np.exp(-r * e)) / (r * (e - s))

    out = sum((a / (k2 - lam))[..., None] * (frame_mean(lam) - frame_mean(k2))
              for a, lam in zip(CP_A, CP_L, strict=True))
    return k1[..., None] * out


def _irregular_mask(shape: tuple[int, int, int]) -> np.ndarray:
    """A ball with a hole and a notch: edges in every direction."""
    c = (np.array(shape) - 1) / 2.0
    g = np.indices(shape).astype(float)
    r = np.sqrt(sum((g[a] - c[a]) ** 2 for a in range(3)))
    mask = r < 0.45 * min(shape)
    mask &= r > 2.0  # a hole in the middle
    mask[: shape[0] // 2, : shape[1] // 3, :] = False  # a notch
    return mask


def test_constant_frames_stay_constant_inside_the_mask_and_zero_outside():
    shape = (21, 17, 15)
    mask = _irregular_mask(shape)
    levels = np.array([0.5, 3.0, 12.0], dtype=np.float32)  # one constant per frame
    frames = np.broadcast_to(levels[:, None, None, None], (3, *shape)).copy()
    frames[:, ~mask] = 1000.0  # outside the mask: must neither leak in nor be kept
    out = smooth_in_mask(frames, mask, fwhm_mm=6.0, voxel_mm=(2.0, 2.0, 2.5))
    for t, level in enumerate(levels):
        np.testing.assert_allclose(out[t][mask], level, rtol=1e-5)
        assert np.all(out[t][~mask] == 0.0)
    # a plain (not normalised) filter would dim the edge: the rule matters here
    from scipy.ndimage import gaussian_filter

    plain = gaussian_filter(np.where(mask, 1.0, 0.0), sigma=6.0 * SIGMA_PER_FWHM / 2.0,
                            mode="constant")
    assert plain[mask].min() < 0.7


def _fwhm_from_moments(profile: np.ndarray, step_mm: float) -> float:
    x = (np.arange(profile.size) - np.argmax(profile)) * step_mm
    w = profile / profile.sum()
    mean = float((w * x).sum())
    return float(np.sqrt((w * (x - mean) ** 2).sum()) / SIGMA_PER_FWHM)


def _fwhm_from_half_max(profile: np.ndarray, step_mm: float) -> float:
    """Width at half maximum, half-max crossings found by linear interpolation."""
    p = profile / profile.max()
    peak = int(np.argmax(p))
    right = peak + int(np.argmax(p[peak:] < 0.5))
    left = peak - int(np.argmax(p[peak::-1] < 0.5))
    xr = right - 1 + (p[right - 1] - 0.5) / (p[right - 1] - p[right])
    xl = left + 1 - (p[left + 1] - 0.5) / (p[left + 1] - p[left])
    return float((xr - xl) * step_mm)


@pytest.mark.parametrize("fwhm", [4.0, 8.0])
def test_a_point_source_spreads_to_the_kernel_fwhm_on_every_axis_in_mm(fwhm):
    voxel = (1.0, 1.5, 2.0)  # anisotropic: the width must be the same in mm on every axis
    shape = (61, 41, 31)
    point = np.zeros(shape, dtype=np.float32)
    centre = (30, 20, 15)
    point[centre] = 1000.0
    mask = np.ones(shape, dtype=bool)  # edges > 4 sigma away
    out = smooth_in_mask(point, mask, fwhm_mm=fwhm, voxel_mm=voxel).astype(float)
    assert out.sum() == pytest.approx(1000.0, rel=1e-4)  # mass kept far from the edge
    for axis, step in enumerate(voxel):
        profile = out.sum(axis=tuple(a for a in range(3) if a != axis))
        assert _fwhm_from_moments(profile, step) == pytest.approx(fwhm, rel=5e-3)
        line = out[tuple(slice(None) if a == axis else centre[a] for a in range(3))]
        assert _fwhm_from_half_max(line, step) == pytest.approx(fwhm, rel=0.05)


def test_zero_fwhm_leaves_curves_alone_and_bad_fwhm_is_refused():
    mask = np.ones((4, 4, 4), dtype=bool)
    curves = np.random.default_rng(0).random((5, 64)).astype(np.float32)
    before = curves.copy()
    smooth_curves(curves, mask, 0.0, (2.0, 2.0, 2.0))
    assert np.array_equal(curves, before)
    with pytest.raises(DataError, match="FWHM"):
        smooth_in_mask(curves[0].reshape(4, 4, 4), mask, fwhm_mm=-1.0, voxel_mm=(2, 2, 2))


def test_non_finite_voxels_are_left_out_of_the_smoothing():
    shape = (9, 9, 9)
    mask = np.ones(shape, dtype=bool)
    frames = np.full((2, *shape), 5.0, dtype=np.float32)
    frames[1, 4, 4, 4] = np.nan  # non-finite in one frame: not fitted, gives nothing
    vox = np.flatnonzero(mask)
    curves = frames.reshape(2, -1)[:, vox].copy()
    smooth_curves(curves, mask, 5.0, (2.0, 2.0, 2.0))
    finite = np.all(np.isfinite(curves), axis=0)
    assert finite.sum() == mask.sum() - 1
    np.testing.assert_allclose(curves[:, finite], 5.0, rtol=1e-5)


def _uniform_image():
    """Identical analytic curves (BP_ND 1.5) in a brain slab; reference slab at z = 0."""
    shape = (9, 8, 7)
    k = np.indices(shape)[2]
    data = target_frames(np.full(shape, 1.5), np.ones(shape)).astype(np.float32)
    ref = (k == 0)
    data[ref] = target_frames(np.zeros(int(ref.sum())), np.ones(int(ref.sum())))
    affine = np.diag([2.0, 2.0, 2.5, 1.0])
    return DynamicImage(data, affine, TIMING, {}, None), ref, (k > 0) & (k < 6)


def test_smoothed_fits_of_identical_curves_are_unchanged_and_the_sidecar_records_it(tmp_path):
    img, ref, mask = _uniform_image()
    plain = parametric_maps(img, model="mrtm2", ref_curve=ref, mask=mask, k2prime=K2_REF,
                            scheduler="sync")
    smooth = parametric_maps(img, model="mrtm2", ref_curve=ref, mask=mask, k2prime=K2_REF,
                             scheduler="sync", pet_fwhm_mm=5.0)
    np.testing.assert_allclose(smooth.bp_nd[mask], 1.5, rtol=1e-3)
    np.testing.assert_allclose(smooth.bp_nd[mask], plain.bp_nd[mask], rtol=1e-4)
    assert plain.settings["pet_smoothing"] == {"fwhm_mm": 0.0, "method": "none"}
    files = write_maps(smooth, tmp_path / "maps", "sub-01_ses-a_trc-X")
    sidecars = [json.loads(p.with_name(p.name.replace(".nii.gz", ".json")).read_text())
                for p in files]
    assert len(sidecars) >= 3
    for side in sidecars:  # every map's sidecar, the mask's too
        rec = side["Settings"]["pet_smoothing"]
        assert rec["fwhm_mm"] == 5.0 and "normalised inside the brain mask" in rec["method"]
        np.testing.assert_allclose(rec["sigma_voxels"],
                                   5.0 * SIGMA_PER_FWHM / np.array([2.0, 2.0, 2.5]), rtol=1e-5)
