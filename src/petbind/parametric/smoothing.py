"""Optional 3D Gaussian smoothing of the dynamic PET inside the brain mask, before voxel fits.

Off by default (``pet_fwhm_mm = 0``). When on, every frame is smoothed with a
Gaussian of the given FWHM in mm (converted to voxels with the image's voxel
sizes, so anisotropic voxels get the same width in mm on every axis),
**normalised inside the mask**::

    smoothed = G * (w x frame) / G * w

where ``w`` is 1 on the voxels that are fitted (brain mask, finite in every
frame) and 0 elsewhere. Voxels outside the mask (white matter and CSF when the
pipeline excludes them, background) neither receive nor give activity, and the
mask edge is not dimmed: a constant image stays constant inside the mask. This
is the usual normalised-convolution rule (Knutsson & Westin, CVPR 1993) and the
same as :func:`petbind.stats.voxel.smooth_maps` uses for the contrast maps.

Smoothing trades resolution for noise: voxel BP_ND of noisy curves is biased
(MRTM2 / Logan, Ichise et al. 2003) and noisy, and a few mm of smoothing lowers
both, at the cost of mixing neighbouring tissue (partial volume). The reference
curve is not smoothed (it is a region mean already). Frames are smoothed in
blocks, one ``scipy.ndimage.gaussian_filter`` call per block (vectorised over
frames: sigma 0 along the frame axis), with memory bounded by
:data:`BLOCK_BYTES`.

References
----------
Knutsson H, Westin C-F. Normalized and differential convolution. Proc IEEE
CVPR 1993:515-523.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.errors import DataError

#: FWHM = this x sigma for a Gaussian (2 sqrt(2 ln 2)).
FWHM_PER_SIGMA = float(2.0 * np.sqrt(2.0 * np.log(2.0)))
#: Largest block of frames (float32 volumes, numerator and its filtered copy) smoothed at once.
BLOCK_BYTES = 256 * 2**20
#: Largest FWHM accepted (mm); more would smooth a macaque brain into one blob.
MAX_FWHM_MM = 50.0


def check_fwhm(fwhm_mm: Any, field: str = "pet_fwhm_mm") -> float:
    """A FWHM in mm as a float in [0, :data:`MAX_FWHM_MM`], else a DataError naming ``field``."""
    try:
        value = float(fwhm_mm)
    except (TypeError, ValueError):
        raise DataError(f"the PET smoothing FWHM must be a number of mm, got {fwhm_mm!r}",
                        field=field, fix="e.g. 4 (mm), or 0 for no smoothing") from None
    if not 0.0 <= value <= MAX_FWHM_MM or not np.isfinite(value):
        raise DataError(f"the PET smoothing FWHM {value:g} mm is outside [0, "
                        f"{MAX_FWHM_MM:g}]", field=field,
                        fix="e.g. 4 (mm), or 0 for no smoothing")
    return value


def voxel_sizes(affine: ArrayLike) -> NDArray[np.float64]:
    """Voxel sizes (mm) along the three array axes of an affine (column norms)."""
    a = np.asarray(affine, dtype=np.float64)
    return np.sqrt((a[:3, :3] ** 2).sum(axis=0))


def sigma_voxels(fwhm_mm: float, voxel_mm: Sequence[float]) -> NDArray[np.float64]:
    """Gaussian sigma in voxels along each axis for a FWHM in mm."""
    vox = np.asarray(voxel_mm, dtype=np.float64)
    if vox.shape != (3,) or np.any(~np.isfinite(vox)) or np.any(vox <= 0):
        raise DataError(f"voxel sizes must be three positive numbers (mm), got {vox}",
                        field="affine", fix="check the image's affine (pixdim)")
    return float(fwhm_mm) / FWHM_PER_SIGMA / vox


def smooth_in_mask(frames: ArrayLike, mask: ArrayLike, fwhm_mm: float,
                   voxel_mm: Sequence[float]) -> NDArray[np.float32]:
    """Normalised Gaussian smoothing of one volume or a stack of frames inside a mask.

    Parameters
    ----------
    frames : array_like, shape (X, Y, Z) or (T, X, Y, Z)
        Activity (kBq/mL), frames along the first axis.
    mask : array_like of bool, shape (X, Y, Z)
        Voxels that give and receive activity.
    fwhm_mm : float
        Gaussian FWHM in mm (0: the frames are returned, masked, unsmoothed).
    voxel_mm : sequence of 3 floats
        Voxel sizes in mm along the array axes.

    Returns
    -------
    ndarray of float32, same shape as ``frames``
        ``G * (mask x frame) / G * mask`` inside the mask, 0 outside.
    """
    f = np.asarray(frames, dtype=np.float32)
    m = np.asarray(mask, dtype=bool)
    single = f.ndim == 3
    stack = f[None] if single else f
    if stack.ndim != 4 or stack.shape[1:] != m.shape:
        raise DataError(f"frames of shape {f.shape} do not match the mask {m.shape}",
                        field="mask", fix="give frames on the mask's grid")
    out = np.zeros(stack.shape, dtype=np.float32)
    if m.any():
        vox = np.flatnonzero(m)
        curves = stack.reshape(stack.shape[0], -1)[:, vox].copy()
        smooth_curves(curves, m, check_fwhm(fwhm_mm, "fwhm_mm"), voxel_mm)
        out.reshape(out.shape[0], -1)[:, vox] = curves
    return out[0] if single else out


def smooth_curves(curves_t: NDArray[np.float32], mask: NDArray[np.bool_], fwhm_mm: float,
                  voxel_mm: Sequence[float], usable: NDArray[np.bool_] | None = None
                  ) -> NDArray[np.float32]:
    """Smooth gathered voxel curves in place (normalised Gaussian inside the usable voxels).

    Parameters
    ----------
    curves_t : ndarray of float32, shape (n_frames, V)
        Curves of the ``V`` voxels of ``mask`` (in ``np.flatnonzero(mask)``
        order), as :mod:`petbind.parametric.images` gathers them; changed in place.
    mask : ndarray of bool, shape (X, Y, Z)
        The brain mask the curves come from.
    fwhm_mm : float
        Gaussian FWHM in mm; 0 leaves the curves unchanged.
    voxel_mm : sequence of 3 floats
        Voxel sizes (mm).
    usable : ndarray of bool, shape (V,), optional
        Voxels that take part (default: finite in every frame); the others are
        left as they are and give nothing to their neighbours.

    Returns
    -------
    ndarray
        ``curves_t`` (the same array).
    """
    if fwhm_mm <= 0 or curves_t.size == 0:
        return curves_t
    from scipy.ndimage import gaussian_filter

    sigma = sigma_voxels(fwhm_mm, voxel_mm)
    n_t, n_v = curves_t.shape
    if n_v != int(mask.sum()):
        raise DataError(f"{n_v} curves for a mask of {int(mask.sum())} voxels",
                        field="mask", fix="gather the curves from the same mask")
    ok = (np.all(np.isfinite(curves_t), axis=0) if usable is None
          else np.asarray(usable, dtype=bool))
    flat = np.flatnonzero(mask)[ok]
    shape = mask.shape
    weight = np.zeros(shape, dtype=np.float32)
    weight.reshape(-1)[flat] = 1.0
    den = gaussian_filter(weight, sigma=sigma, mode="constant").reshape(-1)[flat]
    cols = np.flatnonzero(ok)
    per_frame = 2 * int(np.prod(shape)) * 4
    block = max(1, min(n_t, BLOCK_BYTES // max(per_frame, 1)))
    vol = np.zeros((block, *shape), dtype=np.float32)
    for a in range(0, n_t, block):
        b = min(a + block, n_t)
        v = vol[: b - a]
        v.reshape(b - a, -1)[:, flat] = curves_t[a:b, cols]
        num = gaussian_filter(v, sigma=(0.0, *sigma), mode="constant")
        curves_t[a:b, cols] = num.reshape(b - a, -1)[:, flat] / den
        v.reshape(b - a, -1)[:, flat] = 0.0
    return curves_t


def describe(fwhm_mm: float, voxel_mm: Sequence[float] | None = None) -> dict[str, Any]:
    """The smoothing as recorded in the maps' sidecars (``Settings.pet_smoothing``)."""
    if fwhm_mm <= 0:
        return {"fwhm_mm": 0.0, "method": "none"}
    out: dict[str, Any] = {
        "fwhm_mm": float(fwhm_mm), "kernel": "Gaussian, isotropic in mm",
        "method": "every frame, normalised inside the brain mask: G*(mask x frame) / G*mask "
                  "(voxels finite in every frame); reference curve not smoothed"}
    if voxel_mm is not None:
        out["sigma_voxels"] = [round(float(s), 6) for s in sigma_voxels(fwhm_mm, voxel_mm)]
    return out
