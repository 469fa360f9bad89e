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
from petbind.numerics.grid import block_mean
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


def partial_volume_weights(labels: NDArray, n_labels: int, fwhm_mm: float,
                           voxel_mm: float, factor: int, *, matrix: NDArray | None = None,
                           affine: NDArray | None = None) -> NDArray[np.float32]:
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
    matrix, affine : ndarray, shape (4, 4), optional
        Move the object rigidly by ``matrix`` (world mm, as
        :func:`rigid_matrix`) on the grid whose voxel-to-world map is
        ``affine``. Each blurred indicator is moved by trilinear interpolation
        (an isotropic Gaussian commutes with a rigid motion, and the smooth
        blurred indicator interpolates far better than the sharp labels).

    Returns
    -------
    ndarray of float32, shape (x, y, z, n_labels)
        Weights; a voxel's weights sum to at most 1 (activity outside the
        brain is zero).
    """
    sigma = fwhm_mm / FWHM_PER_SIGMA / voxel_mm
    vox = None
    if matrix is not None:
        a = np.eye(4) if affine is None else np.asarray(affine, dtype=float)
        vox = np.linalg.inv(a) @ np.linalg.inv(np.asarray(matrix, dtype=float)) @ a
    return _label_weights(labels, n_labels, sigma, factor, vox)


def _label_weights(labels: NDArray, n_labels: int, sigma: float, factor: int,
                   vox: NDArray | None) -> NDArray[np.float32]:
    """:func:`partial_volume_weights`, each label within its bounding box.

    Each indicator is blurred inside its bounding box widened by the
    Gaussian's support (3.5 sigma, where the kernel is truncated; the blurred
    indicator is exactly 0 beyond it, as on the whole grid), moved when
    ``vox`` is given (output voxel index -> input voxel index, the inverse
    motion) trilinearly into the box its corners reach, and block-averaged in
    boxes aligned to PET voxels: the numbers of the whole-grid computation at
    the cost of each label's size.
    """
    from scipy import ndimage

    shape = np.array(labels.shape[:3])
    pet_shape = shape // factor
    out = np.zeros((*pet_shape, n_labels), dtype=np.float32)
    for lab, lo, hi, sub in blurred_indicators(labels, n_labels, sigma,
                                               factor if vox is None else 1):
        if vox is None:
            top = np.minimum(hi, pet_shape * factor)
            if np.any(top <= lo):
                continue
            b_lo, b_hi = lo // factor, top // factor
            out[b_lo[0]:b_hi[0], b_lo[1]:b_hi[1], b_lo[2]:b_hi[2], lab - 1] = block_mean(
                sub[:top[0] - lo[0], :top[1] - lo[1], :top[2] - lo[2]], factor)
            continue
        fwd = np.linalg.inv(vox)  # input voxel -> output voxel
        corners = np.array([[x, y, z, 1.0] for x in (lo[0] - 1, hi[0]) for y in (lo[1] - 1, hi[1])
                            for z in (lo[2] - 1, hi[2])])
        reached = corners @ fwd.T
        o_lo = np.clip(np.floor(reached[:, :3].min(axis=0)) - 1, 0, None).astype(int)
        o_hi = np.ceil(reached[:, :3].max(axis=0)) + 2
        o_lo = o_lo // factor * factor
        o_hi = np.minimum(-(-o_hi // factor) * factor, pet_shape * factor).astype(int)
        if np.any(o_hi <= o_lo):
            continue  # moved out of the field of view
        offset = vox[:3, :3] @ o_lo + vox[:3, 3] - lo
        moved = ndimage.affine_transform(sub, vox[:3, :3], offset=offset,
                                         output_shape=tuple(int(n) for n in o_hi - o_lo),
                                         order=1, mode="constant")
        b_lo, b_hi = o_lo // factor, o_hi // factor
        out[b_lo[0]:b_hi[0], b_lo[1]:b_hi[1], b_lo[2]:b_hi[2], lab - 1] = block_mean(
            moved, factor)
    return out


def blurred_indicators(labels: NDArray, n_labels: int, sigma: float, align: int = 1
                       ) -> list[tuple[int, NDArray, NDArray, NDArray[np.float32]]]:
    """Each label's indicator blurred by the PSF, inside its bounding box.

    Parameters
    ----------
    labels : ndarray of int, shape (X, Y, Z)
        Phantom labels (0 = background).
    n_labels : int
        Highest label index.
    sigma : float
        Gaussian sigma in phantom voxels (0: no blur).
    align : int
        Round the boxes outwards to multiples of this (the PET factor, so
        that a box block-averages into whole PET voxels).

    Returns
    -------
    list of (label, lo, hi, blurred)
        ``blurred`` (float32) is the label's blurred indicator on
        ``labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]``; the box is the
        label's bounding box widened by the kernel's support (3.5 sigma, where
        it is truncated), so the blurred indicator is exactly 0 outside it.
    """
    from scipy import ndimage

    shape = np.array(labels.shape[:3])
    reach = int(3.5 * sigma + 0.5) + 1 if sigma > 0 else 1
    boxes = []
    for lab in range(1, n_labels + 1):  # a loop over labels
        ind = labels == lab
        if not ind.any():
            continue
        nz = [np.flatnonzero(ind.any(axis=tuple(j for j in range(3) if j != i)))
              for i in range(3)]
        lo = np.maximum([v[0] - reach for v in nz], 0)
        hi = np.minimum([v[-1] + reach + 1 for v in nz], shape)
        if align > 1:
            lo = lo // align * align
            hi = np.minimum(-(-hi // align) * align, shape)
        sub = ind[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].astype(np.float32)
        if sigma > 0:
            sub = ndimage.gaussian_filter(sub, sigma, mode="constant", truncate=3.5)
        boxes.append((lab, lo, hi, sub))
    return boxes


def moved_object_frames(boxes: list[tuple[int, NDArray, NDArray, NDArray[np.float32]]],
                        phantom_shape: tuple[int, ...], phantom_affine: NDArray, factor: int,
                        label_tacs: NDArray, poses: NDArray) -> NDArray[np.float32]:
    """PET frames of an object that moves between frames, moved before the scanner sees it.

    A head that moves during a scan moves *before* the scanner blurs and
    voxelises it: each frame is the moved object, blurred by the PSF and
    averaged into PET voxels. Resampling the already-voxelised frame
    (:func:`apply_rigid_motion`) would add the interpolation's blur on top,
    which no realignment can undo (trilinear on 2 mm voxels lowered NAcc
    BP_ND by 9 % in the chain test). Here, per frame, the blurred label
    indicators (PSF applied on the fine phantom grid, where blur and rigid
    motion commute for an isotropic PSF) are weighted by the label curves,
    moved by the frame's pose on the phantom grid (trilinear at phantom
    resolution, as the native pose's weights are) and block-averaged.

    Parameters
    ----------
    boxes : list
        :func:`blurred_indicators` of the phantom in template pose (``align=1``).
    phantom_shape : tuple of int
        Phantom grid shape (X, Y, Z).
    phantom_affine : ndarray, shape (4, 4)
        Phantom voxel to world (mm).
    factor : int
        PET voxel edge in phantom voxels.
    label_tacs : ndarray, shape (n_labels, n_frames)
        Curve of each label 1..n (kBq/mL).
    poses : ndarray, shape (n_frames, 4, 4)
        World transform of the object in each frame (template point ->
        point seen by the scanner, e.g. ``motion @ native``).

    Returns
    -------
    ndarray of float32, shape (x, y, z, n_frames)
        On the PET grid of :func:`pet_grid`.
    """
    import SimpleITK as sitk

    shape = np.array(phantom_shape[:3])
    pet_shape = shape // factor
    a = np.asarray(phantom_affine, dtype=float)
    a_inv = np.linalg.inv(a)
    tac = np.asarray(label_tacs, dtype=np.float32)
    out = np.empty((*pet_shape, tac.shape[1]), dtype=np.float32)
    lo_all = np.min([b[1] for b in boxes], axis=0)
    hi_all = np.max([b[2] for b in boxes], axis=0)
    # the labels' boxes with one zero voxel around, so that trilinear interpolation
    # falls to 0 beyond the object whatever the boxes' edges hold
    src = np.zeros(tuple(int(n) + 2 for n in hi_all - lo_all), dtype=np.float32)
    top = pet_shape * factor
    # SimpleITK reads a C-ordered (x, y, z) array as an image of size (z, y, x): the
    # resampling runs in reversed index order, so no array is transposed
    grid = sitk.Image([int(n) for n in top[::-1]], sitk.sitkFloat32)
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(grid)
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetDefaultPixelValue(0.0)
    resampler.SetNumberOfThreads(1)
    for f in range(tac.shape[1]):  # a loop over frames
        src[...] = 0.0
        for lab, lo, hi, sub in boxes:  # a loop over labels
            o, e = lo - lo_all + 1, hi - lo_all + 1
            src[o[0]:e[0], o[1]:e[1], o[2]:e[2]] += tac[lab - 1, f] * sub
        # output phantom voxel -> input phantom voxel (inverse pose), then into the box
        vox = a_inv @ np.linalg.inv(np.asarray(poses[f], dtype=float)) @ a
        offset = vox[:3, 3] - lo_all + 1
        resampler.SetTransform(sitk.AffineTransform(vox[2::-1, 2::-1].ravel().tolist(),
                                                    offset[::-1].tolist(), (0.0, 0.0, 0.0)))
        moved = resampler.Execute(sitk.GetImageFromArray(src))
        # a view: valid while ``moved`` lives, which it does until the next frame
        out[..., f] = block_mean(sitk.GetArrayViewFromImage(moved), factor)
    return out


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


def move_rigid(volume: ArrayLike, affine: ArrayLike, matrix: ArrayLike, order: int = 1
               ) -> NDArray:
    """Move the object in a 3-D image by a rigid world transform, on the same grid.

    Parameters
    ----------
    volume : array_like, shape (X, Y, Z)
        Image (any units); integer labels keep their dtype (use ``order=0``).
    affine : array_like, shape (4, 4)
        Voxel to world (mm).
    matrix : array_like, shape (4, 4)
        ``T`` (e.g. :func:`rigid_matrix`): a point of the object at world
        ``x`` lands at ``T x``.
    order : int
        Spline order (0 nearest neighbour, 1 trilinear, 3 cubic).

    Returns
    -------
    ndarray, shape (X, Y, Z)
        ``out(y) = in(T^-1 y)``; float input gives float32. Voxels that come
        from outside the field of view are 0.
    """
    from scipy import ndimage

    vol = np.asarray(volume)
    a = np.asarray(affine, dtype=float)
    m = np.linalg.inv(a) @ np.linalg.inv(np.asarray(matrix, dtype=float)) @ a
    if np.issubdtype(vol.dtype, np.floating):
        vol = vol.astype(np.float32, copy=False)
    return ndimage.affine_transform(vol, m[:3, :3], offset=m[:3, 3], order=order,
                                    mode="constant")


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
    vol = np.asarray(volume4d)
    a = np.asarray(affine, dtype=float)
    p = np.atleast_2d(np.asarray(params, dtype=float))
    if vol.ndim != 4 or p.shape != (vol.shape[3], 6):
        raise DataError(f"motion parameters {p.shape} do not match image {vol.shape}",
                        field="params", fix="give one row of 6 parameters per frame")
    if centre_mm is None:
        centre_mm = (a @ np.append((np.array(vol.shape[:3]) - 1) / 2.0, 1.0))[:3]
    out = np.empty(vol.shape, dtype=np.float32)
    for f in range(vol.shape[3]):
        if not np.any(p[f]):
            out[..., f] = vol[..., f]
            continue
        out[..., f] = move_rigid(vol[..., f], a, rigid_matrix(p[f], centre_mm), order=order)
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
