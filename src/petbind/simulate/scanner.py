"""Scanner effects: PET voxel grid, Gaussian resolution, counts-based noise, head motion.

The image of a scan is linear in the region curves, so the simulator builds,
once per phantom, a *partial-volume weight matrix* ``W`` (PET voxels x labels):
the label's indicator at phantom resolution, blurred by the point-spread
function and averaged over each PET voxel. The noise-free image of a scan is
then ``W @ TAC`` (labels x frames) in one matrix product.

Noise follows counting statistics. A frame of duration ``d`` starting at
``a`` records counts proportional to ``C exp(-lam t) d``; after decay
correction to injection the variance of a voxel value is proportional to
``C exp(lam t_mid) / d`` (e.g. Logan et al., Nucl Med Biol 2001; 28:883-893
for the same weighting). The simulator uses::

    sd_ij = level * sqrt(C_peak * C_ij * exp(lam t_mid,j) / d_j)

with ``d_j`` in minutes, so ``level`` is the relative noise SD of a voxel at
the scan's peak activity in a 1-minute frame at injection time.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.errors import DataError
from petbind.timing import FrameTiming

#: FWHM / sigma of a Gaussian (2 sqrt(2 ln 2), about 2.355).
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def pet_grid(shape: tuple[int, ...], affine: NDArray, factor: int
             ) -> tuple[tuple[int, int, int], NDArray]:
    """Shape and affine of a grid whose voxels are ``factor^3`` blocks of the phantom.

    The phantom is cropped at the high end to a multiple of ``factor``; the
    centre of PET voxel ``i`` lies at phantom voxel ``factor i + (factor - 1) / 2``.
    """
    out_shape = tuple(int(n // factor) for n in shape[:3])
    scale = np.diag([factor, factor, factor, 1.0]).astype(float)
    scale[:3, 3] = (factor - 1) / 2.0
    return out_shape, affine @ scale  # type: ignore[return-value]


def block_mean(volume: NDArray, factor: int) -> NDArray:
    """Average non-overlapping ``factor^3`` blocks of the first three axes."""
    if factor == 1:
        return volume
    nx, ny, nz = (n // factor for n in volume.shape[:3])
    v = volume[: nx * factor, : ny * factor, : nz * factor]
    v = v.reshape(nx, factor, ny, factor, nz, factor, *volume.shape[3:])
    return v.mean(axis=(1, 3, 5))


def partial_volume_weights(labels: NDArray, n_labels: int, fwhm_mm: float,
                           voxel_mm: float, factor: int) -> NDArray[np.float32]:
    """Blurred, block-averaged label indicators: the weight of each label in each PET voxel.

    Parameters
    ----------
    labels : ndarray of int, shape (X, Y, Z)
        Phantom labels (0 = background, 1..n_labels).
    n_labels : int
        Highest label index.
    fwhm_mm : float
        Scanner resolution (Gaussian FWHM, mm); 0 for no blur.
    voxel_mm : float
        Phantom voxel size (mm).
    factor : int
        PET voxel edge in phantom voxels.

    Returns
    -------
    ndarray of float32, shape (x, y, z, n_labels)
        Weights; a voxel's weights sum to at most 1 (activity outside the
        brain is zero).
    """
    from scipy import ndimage

    sigma = fwhm_mm / FWHM_PER_SIGMA / voxel_mm
    cols = []
    for lab in range(1, n_labels + 1):
        ind = (labels == lab).astype(np.float32)
        if sigma > 0:
            ind = ndimage.gaussian_filter(ind, sigma, mode="constant", truncate=3.5)
        cols.append(block_mean(ind, factor))
    return np.stack(cols, axis=-1).astype(np.float32)


def majority_labels(labels: NDArray, n_labels: int, factor: int) -> NDArray[np.int16]:
    """Label of each PET voxel: the label (or background) covering most of its block."""
    if factor == 1:
        return labels.astype(np.int16)
    frac = np.stack([block_mean((labels == lab).astype(np.float32), factor)
                     for lab in range(n_labels + 1)], axis=-1)
    return np.argmax(frac, axis=-1).astype(np.int16)


def noise_sd(true: ArrayLike, timing: FrameTiming, decay_constant_per_min: float,
             level: float, peak: float | None = None) -> NDArray:
    """Counts-based noise SD per voxel and frame (decay-corrected units).

    Parameters
    ----------
    true : array_like, shape (..., n_frames)
        Noise-free decay-corrected activity (kBq/mL).
    timing : FrameTiming
        Frames.
    decay_constant_per_min : float
        lambda of the radionuclide (1/min).
    level : float
        Relative SD at ``peak`` activity in a 1-minute frame at injection.
    peak : float, optional
        Reference activity ``C_peak``; default the maximum of ``true``.

    Returns
    -------
    ndarray, same shape as ``true``
        ``level sqrt(C_peak max(C, 0) exp(lam t_mid) / d)``, in the precision
        of ``true`` (float32 images stay float32).
    """
    true = np.asarray(true)
    if not np.issubdtype(true.dtype, np.floating):
        true = true.astype(float)
    c_peak = float(np.max(true)) if peak is None else float(peak)
    scale = (level * level * c_peak * np.exp(decay_constant_per_min * timing.mid)
             / timing.duration).astype(true.dtype)
    return np.sqrt(np.maximum(true, 0) * scale)


def rigid_matrix(params: ArrayLike, centre_mm: ArrayLike) -> NDArray:
    """4x4 world (mm) transform of a rigid head motion.

    Parameters
    ----------
    params : array_like, shape (6,)
        ``(trans_x, trans_y, trans_z)`` in mm, then ``(rot_x, rot_y, rot_z)``
        in degrees; rotations about the world axes through ``centre_mm``,
        applied in the order x, then y, then z (``R = Rz Ry Rx``).
    centre_mm : array_like, shape (3,)
        Centre of rotation in world mm.

    Returns
    -------
    ndarray, shape (4, 4)
        ``T`` with ``x_moved = T x`` (homogeneous world coordinates).
    """
    p = np.asarray(params, dtype=float)
    ax, ay, az = np.deg2rad(p[3:6])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    r = rz @ ry @ rx
    c = np.asarray(centre_mm, dtype=float)
    out = np.eye(4)
    out[:3, :3] = r
    out[:3, 3] = c - r @ c + p[:3]
    return out


def apply_rigid_motion(volume4d: ArrayLike, affine: ArrayLike, params: ArrayLike,
                       centre_mm: ArrayLike | None = None, order: int = 1) -> NDArray:
    """Move the head in each frame of a 4-D image by a rigid transform.

    Parameters
    ----------
    volume4d : array_like, shape (X, Y, Z, T)
        Image (any units).
    affine : array_like, shape (4, 4)
        Voxel to world (mm).
    params : array_like, shape (T, 6)
        Per frame: translations (mm) and rotations (degrees) as in
        :func:`rigid_matrix`. A row of zeros leaves the frame unchanged.
    centre_mm : array_like, shape (3,), optional
        Centre of rotation in world mm; default the centre of the field of view.
    order : int
        Spline order of the resampling (1 = trilinear).

    Returns
    -------
    ndarray of float32, shape (X, Y, Z, T)
        ``out(x) = in(T^-1 x)`` frame by frame: the object moved by ``T``.
        Voxels that come from outside the field of view are 0.
    """
    from scipy import ndimage

    vol = np.asarray(volume4d)
    a = np.asarray(affine, dtype=float)
    p = np.atleast_2d(np.asarray(params, dtype=float))
    if vol.ndim != 4 or p.shape != (vol.shape[3], 6):
        raise DataError(f"motion parameters {p.shape} do not match image {vol.shape}",
                        field="params", fix="give one row of 6 parameters per frame")
    if centre_mm is None:
        centre_mm = (a @ np.append((np.array(vol.shape[:3]) - 1) / 2.0, 1.0))[:3]
    a_inv = np.linalg.inv(a)
    out = np.empty(vol.shape, dtype=np.float32)
    for f in range(vol.shape[3]):
        if not np.any(p[f]):
            out[..., f] = vol[..., f]
            continue
        m = a_inv @ np.linalg.inv(rigid_matrix(p[f], centre_mm)) @ a
        out[..., f] = ndimage.affine_transform(vol[..., f].astype(np.float32), m[:3, :3],
                                               offset=m[:3, 3], order=order, mode="constant")
    return out


def random_motion(timing: FrameTiming, max_translation_mm: float, max_rotation_deg: float,
                  rng: np.random.Generator, start_min: float = 2.0) -> NDArray:
    """Slow drift plus small jumps of an awake animal's head, per frame.

    Frames starting before ``start_min`` do not move (the bolus passes while
    the animal is settled). After that the pose is a random walk with steps
    scaled by the square root of the elapsed time, clipped to the maxima.

    Returns
    -------
    ndarray, shape (n_frames, 6)
        Translations (mm) and rotations (degrees) per frame.
    """
    n = timing.n_frames
    moving = timing.start >= start_min
    dt = np.diff(np.concatenate([[0.0], timing.mid]))
    steps = rng.standard_normal((n, 6)) * np.sqrt(dt)[:, None] / np.sqrt(90.0)
    steps[:, :3] *= max_translation_mm
    steps[:, 3:] *= max_rotation_deg
    steps[~moving] = 0.0
    walk = np.cumsum(steps, axis=0)
    lim = np.array([max_translation_mm] * 3 + [max_rotation_deg] * 3)
    return np.clip(walk, -lim, lim)
