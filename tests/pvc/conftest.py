"""Piecewise-constant phantoms with their blurred images, built independently of petbind.pvc."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def ellipsoid(shape, centre, semi):
    """Boolean ellipsoid on a voxel grid (centre and semi-axes in voxels)."""
    g = np.indices(shape, dtype=float)
    r = sum(((g[i] - centre[i]) / semi[i]) ** 2 for i in range(3))
    return r <= 1.0


def make_phantom(factor: int = 1):
    """Labels on a grid ``factor`` times finer than a 2 mm PET grid of 22 x 24 x 20.

    Regions: 1 big "cortex" shell-like block, 2 "white_matter", 3 small hot
    "NAcc" (a few PET voxels), 4 "VP" (small, beside NAcc), 5/6 "caudate" left
    and right, 7 "csf"; 0 outside. Returns labels, names, fine affine, PET affine.
    """
    f = factor
    shape = (22 * f, 24 * f, 20 * f)
    lab = np.zeros(shape, dtype=np.int16)
    c = np.array(shape) / 2.0 - 0.5
    lab[ellipsoid(shape, c, np.array([9, 10, 8]) * f)] = 1
    lab[ellipsoid(shape, c, np.array([7, 8, 6]) * f)] = 2
    lab[ellipsoid(shape, c + np.array([-3, 3, 0]) * f, np.array([1.3, 1.6, 1.3]) * f)] = 3
    lab[ellipsoid(shape, c + np.array([-3, -0.5, -0.5]) * f, np.array([1.2, 1.5, 1.1]) * f)] = 4
    lab[ellipsoid(shape, c + np.array([3.5, 2, 2]) * f, np.array([1.8, 3, 2]) * f)] = 5
    lab[ellipsoid(shape, c + np.array([-0.5, 2, 3]) * f, np.array([1.5, 2.5, 1.5]) * f)] = 6
    lab[ellipsoid(shape, c + np.array([0, -4, 1]) * f, np.array([1.2, 2, 2]) * f)] = 7
    names = {1: "cortex", 2: "white_matter", 3: "NAcc", 4: "VP", 5: "caudate", 6: "caudate",
             7: "csf"}
    fine = np.diag([2.0 / f, 2.0 / f, 2.0 / f, 1.0])
    fine[:3, 3] = [-20.0, -30.0, -10.0]
    pet = fine @ np.diag([f, f, f, 1.0])
    pet[:3, 3] = fine[:3, 3] + (f - 1) / 2.0 * 2.0 / f
    return lab, names, fine, pet


def true_curves(n_frames: int = 6, background: float = 0.0):
    """Activity per label (index 0 = outside) and frame: distinct, time-varying."""
    t = np.linspace(1.0, 60.0, n_frames)
    base = {0: background * np.ones_like(t), 1: 10 * np.exp(-t / 40), 2: 4 * np.exp(-t / 60),
            3: 30 * np.exp(-t / 90), 4: 22 * np.exp(-t / 80), 5: 18 * np.exp(-t / 70),
            6: 16 * np.exp(-t / 70), 7: 1.0 + 0 * t}
    return base


def blurred_image(labels, curves, fwhm_mm, voxel_mm, factor=1, truncate=4.0):
    """The scanner: the true image frame by frame, Gaussian-blurred, block-averaged."""
    sigma = fwhm_mm / FWHM_PER_SIGMA / voxel_mm
    n_t = len(next(iter(curves.values())))
    frames = []
    for k in range(n_t):
        truth = np.zeros(labels.shape)
        for lab, c in curves.items():
            truth[labels == lab] = c[k]
        b = ndimage.gaussian_filter(truth, sigma, mode="constant", truncate=truncate)
        if factor > 1:
            nx, ny, nz = (n // factor for n in b.shape)
            b = b.reshape(nx, factor, ny, factor, nz, factor).mean(axis=(1, 3, 5))
        frames.append(b)
    return np.stack(frames, axis=-1)


@pytest.fixture
def phantom():
    return make_phantom(1)
