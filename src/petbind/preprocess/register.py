"""Rigid, affine and non-linear registration of PET and anatomical images.

Conventions
-----------
* Images are ``(data, affine)`` pairs in NIfTI conventions: ``data`` indexed
  ``[i, j, k]``, ``affine`` the 4x4 voxel-to-world matrix in RAS millimetres.
* A transform *maps points* of the fixed (reference) space to points of the
  moving space, as ITK does. Resampling the moving image onto the fixed grid
  therefore uses the transform as it is. In RAS we hold linear transforms as
  4x4 matrices (``fixed_point_ras -> moving_point_ras``).
* Files follow ITK (points in LPS): ``.tfm`` text files for linear transforms,
  ``.h5`` for composite transforms with displacement fields. They can be read
  by ANTs (``antsApplyTransforms``), SimpleITK, ITK-SNAP and fMRIPrep, whose
  naming we copy: ``from-A_to-B_mode-image_xfm.h5`` resamples an image of
  space ``A`` into space ``B`` (its points map ``B -> A``).

Engines: SimpleITK (ITK ``ImageRegistrationMethod``) for rigid and affine
registration and for all resampling; dipy's symmetric diffeomorphic
registration (SyN, Avants et al. 2008) for the non-linear step.

References
----------
Avants BB, Epstein CL, Grossman M, Gee JC (2008). Symmetric diffeomorphic
image registration with cross-correlation. Med Image Anal 12:26-41.
Mattes D, Haynor DR, Vesselle H, Lewellen TK, Eubank W (2003). PET-CT image
registration in the chest using free-form deformations. IEEE TMI 22:120-128.
Lowekamp BC, Chen DT, Ibanez L, Blezek D (2013). The design of SimpleITK.
Front Neuroinform 7:45.

Long module: the one registration API of preprocess/ (grid and SimpleITK /
dipy conversions, rigid and affine registration, SyN, composition and
transform files); its parts share the grid-geometry conversions, and the
next split is those conversions into a module of their own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk
from numpy.typing import ArrayLike, NDArray

from petbind.errors import DataError, FileFormatError
from petbind.io.atomic import atomic_path
from petbind.numerics.grid import block_mean

#: RAS <-> LPS flip (its own inverse).
FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])

Interpolation = Literal["linear", "nearest", "bspline", "bspline5"]
_INTERP = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor,
           "bspline": sitk.sitkBSpline, "bspline5": sitk.sitkBSpline5}


# --------------------------------------------------------------------------
# images and transforms between NIfTI (RAS) and ITK (LPS)
# --------------------------------------------------------------------------

def grid_geometry(affine: ArrayLike, *, path: str | os.PathLike | None = None,
                  ) -> tuple[NDArray, NDArray, NDArray]:
    """Spacing, direction and origin (ITK, LPS) of a NIfTI affine.

    Parameters
    ----------
    affine : array_like, shape (4, 4)
        Voxel-to-world (RAS, mm) matrix.
    path : str, optional
        File the affine came from, named in errors.

    Returns
    -------
    spacing : ndarray (3,), mm
    direction : ndarray (3, 3), orthonormal columns (LPS)
    origin : ndarray (3,), mm (LPS)

    Raises
    ------
    DataError
        The affine is singular or sheared (ITK images need orthogonal axes).
    """
    a = np.asarray(affine, dtype=float)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise DataError(f"affine must be a finite 4x4 matrix, got shape {a.shape}",
                        path=path, field="affine", fix="check the NIfTI sform/qform")
    lps = FLIP @ a
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise DataError("affine has a zero voxel size", path=path, field="affine",
                        fix="set a valid sform/qform (pixdim) in the NIfTI header")
    direction = lps[:3, :3] / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise DataError("affine is sheared (axes not orthogonal); registration needs "
                        "orthogonal voxel axes", path=path, field="affine",
                        fix="reslice the image to an orthogonal grid first")
    return spacing, direction, lps[:3, 3].copy()


def to_sitk(data: ArrayLike, affine: ArrayLike, *, path: str | os.PathLike | None = None,
            dtype: type = np.float32) -> sitk.Image:
    """A 3-D array + NIfTI affine as a SimpleITK image (LPS geometry).

    Parameters
    ----------
    data : array_like, shape (X, Y, Z)
    affine : array_like, shape (4, 4), RAS mm
    path : str, optional
        Named in errors.
    dtype : numpy dtype
        Pixel type of the result (float32 for intensities, int for labels).
    """
    arr = np.asarray(data)
    if arr.ndim != 3:
        raise DataError(f"expected a 3-D image, got shape {arr.shape}", path=path,
                        field="data", fix="pass one frame (or a mean image)")
    spacing, direction, origin = grid_geometry(affine, path=path)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0), dtype=dtype))
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetDirection(tuple(float(d) for d in direction.ravel()))
    img.SetOrigin(tuple(float(o) for o in origin))
    return img


def from_sitk(img: sitk.Image) -> tuple[NDArray, NDArray]:
    """A SimpleITK image as ``(data (X, Y, Z), affine (RAS))``."""
    data = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(img.GetDirection()).reshape(3, 3) * np.asarray(img.GetSpacing())
    lps[:3, 3] = img.GetOrigin()
    return data, FLIP @ lps


def reference_image(shape: Sequence[int], affine: ArrayLike) -> sitk.Image:
    """An empty SimpleITK image defining a resampling grid."""
    return to_sitk(np.zeros(tuple(int(s) for s in shape[:3]), np.uint8), affine, dtype=np.uint8)


def matrix_from_sitk(transform: sitk.Transform) -> NDArray:
    """4x4 RAS matrix of a linear ITK transform (fixed -> moving points).

    Works for every ``MatrixOffsetTransformBase`` (Euler, versor, similarity,
    affine) and for composites of them.
    """
    if transform.GetName() == "CompositeTransform":
        comp = sitk.CompositeTransform(transform)
        m = np.eye(4)
        for i in range(comp.GetNumberOfTransforms()):  # the last added is applied first
            m = m @ matrix_from_sitk(comp.GetNthTransform(i))
        return m
    if transform.GetName() == "IdentityTransform":
        return np.eye(4)
    dim = transform.GetDimension()
    try:
        aff = sitk.AffineTransform(dim)
        aff.SetMatrix(transform.GetMatrix())
        aff.SetTranslation(transform.GetTranslation())
        aff.SetCenter(transform.GetCenter())
    except (AttributeError, RuntimeError) as exc:
        raise DataError(f"transform {transform.GetName()} is not linear",
                        field="transform", fix="use a rigid or affine transform") from exc
    a = np.asarray(aff.GetMatrix()).reshape(3, 3)
    c = np.asarray(aff.GetCenter())
    t = np.asarray(aff.GetTranslation())
    m = np.eye(4)
    m[:3, :3] = a
    m[:3, 3] = t + c - a @ c
    return FLIP @ m @ FLIP


def sitk_from_matrix(matrix: ArrayLike) -> sitk.AffineTransform:
    """ITK affine transform from a 4x4 RAS matrix (fixed -> moving points)."""
    m = FLIP @ np.asarray(matrix, dtype=float) @ FLIP
    tx = sitk.AffineTransform(3)
    tx.SetMatrix(tuple(float(v) for v in m[:3, :3].ravel()))
    tx.SetTranslation(tuple(float(v) for v in m[:3, 3]))
    return tx


def rigid_matrix(params: ArrayLike, center: ArrayLike = (0.0, 0.0, 0.0)) -> NDArray:
    """4x4 RAS matrix of rigid parameters about ``center``.

    Parameters
    ----------
    params : array_like, shape (..., 6)
        ``trans_x, trans_y, trans_z`` (mm, RAS) and ``rot_x, rot_y, rot_z``
        (degrees, right-handed about the RAS axes, applied x, then y, then z:
        ``R = Rz @ Ry @ Rx``).
    center : array_like (3,), mm
        Centre of rotation (RAS).

    Returns
    -------
    ndarray, shape (..., 4, 4)
        ``x -> R (x - c) + c + t``.
    """
    p = np.asarray(params, dtype=float)
    ax, ay, az = np.deg2rad(p[..., 3]), np.deg2rad(p[..., 4]), np.deg2rad(p[..., 5])
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    r = np.empty(p.shape[:-1] + (3, 3))
    r[..., 0, 0] = cy * cz
    r[..., 0, 1] = sx * sy * cz - cx * sz
    r[..., 0, 2] = cx * sy * cz + sx * sz
    r[..., 1, 0] = cy * sz
    r[..., 1, 1] = sx * sy * sz + cx * cz
    r[..., 1, 2] = cx * sy * sz - sx * cz
    r[..., 2, 0] = -sy
    r[..., 2, 1] = sx * cy
    r[..., 2, 2] = cx * cy
    c = np.asarray(center, dtype=float)
    m = np.zeros(p.shape[:-1] + (4, 4))
    m[..., :3, :3] = r
    m[..., :3, 3] = p[..., :3] + c - np.einsum("...ij,j->...i", r, c)
    m[..., 3, 3] = 1.0
    return m


def rigid_params(matrix: ArrayLike, center: ArrayLike = (0.0, 0.0, 0.0)) -> NDArray:
    """Inverse of :func:`rigid_matrix`: ``(..., 6)`` translations (mm) and rotations (deg).

    The rotation part of ``matrix`` is assumed orthonormal (a rigid transform);
    angles follow ``R = Rz @ Ry @ Rx`` with ``rot_y`` in [-90, 90] degrees.
    """
    m = np.asarray(matrix, dtype=float)
    r = m[..., :3, :3]
    ry = np.arcsin(np.clip(-r[..., 2, 0], -1.0, 1.0))
    rx = np.arctan2(r[..., 2, 1], r[..., 2, 2])
    rz = np.arctan2(r[..., 1, 0], r[..., 0, 0])
    c = np.asarray(center, dtype=float)
    t = m[..., :3, 3] - c + np.einsum("...ij,j->...i", r, c)
    return np.concatenate([t, np.rad2deg(np.stack([rx, ry, rz], axis=-1))], axis=-1)


def image_center(shape: Sequence[int], affine: ArrayLike) -> NDArray:
    """World (RAS, mm) position of the centre of a voxel grid."""
    ijk = (np.asarray(shape[:3], dtype=float) - 1.0) / 2.0
    return (np.asarray(affine, dtype=float) @ np.append(ijk, 1.0))[:3]


# --------------------------------------------------------------------------
# resampling
# --------------------------------------------------------------------------

def resample(data: ArrayLike, affine: ArrayLike, ref_shape: Sequence[int],
             ref_affine: ArrayLike, transform: sitk.Transform | ArrayLike | None = None,
             *, interpolation: Interpolation = "linear", fill: float = 0.0) -> NDArray:
    """Resample an image onto a reference grid through a point transform.

    Parameters
    ----------
    data : array_like, shape (X, Y, Z)
        Image to resample (the *moving* image).
    affine : array_like (4, 4)
        Its voxel-to-world matrix (RAS mm).
    ref_shape, ref_affine
        Output grid.
    transform : sitk.Transform or 4x4 RAS matrix or None
        Maps output-space points to input-space points (identity if None).
    interpolation : {"linear", "nearest", "bspline", "bspline5"}
        ``nearest`` for label images; ``bspline`` is cubic, ``bspline5``
        quintic B-spline.
    fill : float
        Value outside the input field of view.

    Returns
    -------
    ndarray, shape ref_shape[:3]
        float32 for ``linear``/``bspline``; the input dtype for ``nearest``.
    """
    arr = np.asarray(data)
    nearest = interpolation == "nearest"
    img = to_sitk(arr, affine, dtype=(np.int32 if nearest and arr.dtype.kind in "iub"
                                       else np.float32))
    if transform is None:
        tx: sitk.Transform = sitk.Transform(3, sitk.sitkIdentity)
    elif isinstance(transform, sitk.Transform):
        tx = transform
    else:
        tx = sitk_from_matrix(transform)
    out = sitk.Resample(img, reference_image(ref_shape, ref_affine), tx, _INTERP[interpolation],
                        fill)
    res = sitk.GetArrayFromImage(out).transpose(2, 1, 0)
    return res.astype(arr.dtype) if nearest else res


# --------------------------------------------------------------------------
# linear registration (SimpleITK)
# --------------------------------------------------------------------------

@dataclass
class LinearRegistration:
    """The result of a rigid or affine registration.

    Attributes
    ----------
    matrix : ndarray (4, 4)
        RAS point map fixed -> moving (use it to resample moving onto fixed).
    transform : sitk.Transform
        The same transform for ITK (LPS).
    kind : str
        ``rigid`` or ``affine``.
    metric : float
        Final metric value (lower is better for ITK metrics).
    settings : dict
        Every setting used.
    """

    matrix: NDArray
    transform: sitk.Transform
    kind: str
    metric: float
    settings: dict[str, Any] = field(default_factory=dict)


def register_linear(
    fixed: ArrayLike, fixed_affine: ArrayLike, moving: ArrayLike, moving_affine: ArrayLike,
    *,
    kind: Literal["rigid", "affine"] = "rigid",
    metric: Literal["mattes", "correlation", "meansquares"] = "mattes",
    initial: ArrayLike | Literal["geometry", "moments"] | None = "moments",
    center: ArrayLike | None = None,
    shrink: Sequence[int] = (4, 2, 1),
    smooth_mm: Sequence[float] = (4.0, 2.0, 0.0),
    iterations: int = 100,
    sampling: float = 0.2,
    bins: int = 32,
    fixed_mask: ArrayLike | None = None,
    seed: int = 0,
    min_step: float = 1e-4,
    gradient_filter: bool = True,
) -> LinearRegistration:
    """Rigid or affine registration of ``moving`` to ``fixed`` (multi-resolution).

    Parameters
    ----------
    fixed, moving : array_like (X, Y, Z)
        Images; ``fixed`` defines the reference space.
    fixed_affine, moving_affine : array_like (4, 4)
        Voxel-to-world matrices (RAS mm).
    kind : {"rigid", "affine"}
        Six (Euler 3-D) or twelve parameters. Affine runs a rigid stage first.
    metric : {"mattes", "correlation", "meansquares"}
        Mattes mutual information (Mattes et al. 2003; across modalities and
        for PET frames whose contrast changes over time), normalised
        correlation, or mean squares (same contrast).
    initial : 4x4 RAS matrix, "geometry", "moments" or None
        Starting transform: a matrix, the alignment of grid centres, of
        intensity centres of mass (``moments``), or the identity.
    center : array_like (3,), RAS mm, optional
        Centre of rotation (default: centre of the fixed grid). Parameters
        are reported about this centre.
    shrink, smooth_mm : sequences
        Pyramid: shrink factor and Gaussian sigma (mm) of each level.
    iterations : int
        Maximum optimiser iterations per level.
    sampling : float
        Fraction of fixed voxels sampled for the metric, on a regular grid
        (randomly perturbed by ``seed``); purely random sampling made the
        result vary by a few tenths of a degree between seeds.
    bins : int
        Histogram bins for Mattes mutual information.
    fixed_mask : array_like of bool, optional
        Restrict the metric to these fixed voxels.
    seed : int
        Seed of the metric sampler (same inputs and seed give the same result).
    min_step : float
        The gradient descent stops when its step falls below this (its
        parameters are scaled to a physical shift, so about mm).
    gradient_filter : bool
        ITK's whole-image gradient filters of both images at every level
        (True), or gradients only at the metric's sample points (False:
        faster when the metric samples a few thousand points, e.g. in a mask).

    Returns
    -------
    LinearRegistration
    """
    fixed_img = to_sitk(fixed, fixed_affine)
    moving_img = to_sitk(moving, moving_affine)
    fixed_shape = np.shape(fixed)
    c = image_center(fixed_shape, fixed_affine) if center is None else np.asarray(center, float)
    c_lps = (FLIP[:3, :3] @ c).tolist()

    if initial is None:
        init_m = np.eye(4)
    elif isinstance(initial, str):
        if initial not in ("geometry", "moments"):
            raise DataError(f"unknown initialisation {initial!r}", field="initial",
                            fix="use 'geometry', 'moments', a 4x4 matrix or None")
        flag = (sitk.CenteredTransformInitializerFilter.MOMENTS if initial == "moments"
                else sitk.CenteredTransformInitializerFilter.GEOMETRY)
        fixed_pos = sitk.Cast(sitk.Threshold(fixed_img, 0.0, 1e30, 0.0), sitk.sitkFloat32)
        moving_pos = sitk.Cast(sitk.Threshold(moving_img, 0.0, 1e30, 0.0), sitk.sitkFloat32)
        init_tx = sitk.CenteredTransformInitializer(fixed_pos, moving_pos,
                                                    sitk.Euler3DTransform(), flag)
        init_m = matrix_from_sitk(init_tx)
    else:
        init_m = np.asarray(initial, dtype=float)

    mask_img = None
    if fixed_mask is not None:
        mask_img = to_sitk(np.asarray(fixed_mask).astype(np.uint8), fixed_affine, dtype=np.uint8)

    settings = {"kind": kind, "metric": metric, "shrink": list(shrink),
                "smooth_mm": list(smooth_mm), "iterations": iterations, "sampling": sampling,
                "bins": bins, "seed": seed, "center_ras_mm": c.tolist(),
                "min_step": min_step, "gradient_filter": gradient_filter}

    def run(tx: sitk.Transform, scales_rot: bool) -> tuple[sitk.Transform, float]:
        reg = sitk.ImageRegistrationMethod()
        if metric == "mattes":
            reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
        elif metric == "correlation":
            reg.SetMetricAsCorrelation()
        elif metric == "meansquares":
            reg.SetMetricAsMeanSquares()
        else:
            raise DataError(f"unknown metric {metric!r}", field="metric",
                            fix="use 'mattes', 'correlation' or 'meansquares'")
        if sampling < 1.0:
            reg.SetMetricSamplingStrategy(reg.REGULAR)
            # ITK takes seed 0 as "wall clock"; shift so every seed is reproducible
            reg.SetMetricSamplingPercentage(sampling, seed + 1)
        if mask_img is not None:
            reg.SetMetricFixedMask(mask_img)
        reg.SetInterpolator(sitk.sitkLinear)
        if not gradient_filter:
            reg.SetMetricUseFixedImageGradientFilter(False)
            reg.SetMetricUseMovingImageGradientFilter(False)
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=1.0, minStep=min_step, numberOfIterations=iterations,
            relaxationFactor=0.6, gradientMagnitudeTolerance=1e-8)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel(list(shrink))
        reg.SetSmoothingSigmasPerLevel(list(smooth_mm))
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        reg.SetInitialTransform(tx, inPlace=True)
        reg.Execute(fixed_img, moving_img)
        return tx, float(reg.GetMetricValue())

    # rigid stage: Euler about c, started from init_m
    euler = sitk.Euler3DTransform()
    euler.SetCenter(c_lps)
    init_lps = FLIP @ init_m @ FLIP
    try:
        euler.SetMatrix(tuple(float(v) for v in init_lps[:3, :3].ravel()), 1e-4)
    except RuntimeError:
        pass  # a non-orthogonal initial matrix: keep the rotation at identity
    a = np.asarray(euler.GetMatrix()).reshape(3, 3)
    cl = np.asarray(c_lps)
    euler.SetTranslation(tuple(float(v) for v in init_lps[:3, 3] + a @ cl - cl))
    tx, value = run(euler, True)
    if kind == "affine":
        aff = sitk.AffineTransform(3)
        aff.SetCenter(c_lps)
        aff.SetMatrix(tx.GetMatrix())
        aff.SetTranslation(tx.GetTranslation())
        tx, value = run(aff, False)
    elif kind != "rigid":
        raise DataError(f"unknown registration kind {kind!r}", field="kind",
                        fix="use 'rigid' or 'affine'")
    return LinearRegistration(matrix=matrix_from_sitk(tx), transform=tx, kind=kind,
                              metric=value, settings=settings)


# --------------------------------------------------------------------------
# non-linear registration (dipy SyN) as ITK displacement fields
# --------------------------------------------------------------------------

@dataclass
class NonlinearRegistration:
    """Affine + diffeomorphic registration, as ITK composite transforms.

    Attributes
    ----------
    forward : sitk.CompositeTransform
        Fixed-space points -> moving-space points (resamples moving onto fixed).
    inverse : sitk.CompositeTransform
        Moving-space points -> fixed-space points (resamples fixed onto moving).
    affine : ndarray (4, 4)
        The linear part (RAS, fixed -> moving).
    mapping : dipy.align.imwarp.DiffeomorphicMap
        dipy's own result (for ``mapping.transform``).
    settings : dict
    """

    forward: sitk.Transform
    inverse: sitk.Transform
    affine: NDArray
    mapping: Any = None
    settings: dict[str, Any] = field(default_factory=dict)


def _field_transform(field_ras: NDArray, grid_affine: NDArray) -> sitk.Transform:
    """ITK displacement-field transform from a RAS displacement field (X, Y, Z, 3) in mm."""
    lps = field_ras.astype(np.float64) * np.array([-1.0, -1.0, 1.0])
    img = sitk.GetImageFromArray(np.ascontiguousarray(lps.transpose(2, 1, 0, 3)), isVector=True)
    ref = reference_image(field_ras.shape[:3], grid_affine)
    img.CopyInformation(ref)
    return sitk.DisplacementFieldTransform(img)


def _dipy_to_itk(mapping: Any) -> tuple[sitk.Transform, sitk.Transform]:
    """ITK composites (forward, inverse) of a dipy ``DiffeomorphicMap``.

    dipy stores a prealignment ``P`` and two fields ``F``, ``B`` on one grid.
    Its forward point map is ``x -> P x + F(P x)`` and its backward map
    ``y -> P^-1 (y + B(y))``; a map flagged ``is_inverse`` (what
    ``SymmetricDiffeomorphicRegistration.optimize`` returns) swaps the two.
    ITK composites apply the last added transform first.
    """
    disp_affine = np.asarray(mapping.disp_grid2world, dtype=float)
    p = np.eye(4) if mapping.prealign is None else np.asarray(mapping.prealign, dtype=float)
    f_field = _field_transform(np.asarray(mapping.forward), disp_affine)
    b_field = _field_transform(np.asarray(mapping.backward), disp_affine)
    fwd = sitk.CompositeTransform(3)  # x -> P x + F(P x)
    fwd.AddTransform(f_field)
    fwd.AddTransform(sitk_from_matrix(p))
    bwd = sitk.CompositeTransform(3)  # y -> P^-1 (y + B(y))
    bwd.AddTransform(sitk_from_matrix(np.linalg.inv(p)))
    bwd.AddTransform(b_field)
    return (bwd, fwd) if mapping.is_inverse else (fwd, bwd)


def register_nonlinear(
    fixed: ArrayLike, fixed_affine: ArrayLike, moving: ArrayLike, moving_affine: ArrayLike,
    prealign: ArrayLike,
    *,
    level_iters: Sequence[int] = (20, 10, 5),
    cc_radius: int = 2,
    sigma_diff: float = 2.0,
    grid_factor: int = 1,
) -> NonlinearRegistration:
    """Symmetric diffeomorphic (SyN) registration after a linear prealignment.

    Parameters
    ----------
    fixed, moving : array_like (X, Y, Z)
        Typically the template (fixed) and the subject's T1w (moving).
    fixed_affine, moving_affine : array_like (4, 4)
        Voxel-to-world (RAS mm).
    prealign : array_like (4, 4)
        Linear RAS point map fixed -> moving (from :func:`register_linear`).
    level_iters : sequence of int
        Iterations per pyramid level, coarse to fine (few for speed).
    cc_radius : int
        Neighbourhood radius (voxels) of the local cross-correlation metric.
    sigma_diff : float
        Gaussian smoothing (voxels) of the update field.
    grid_factor : int
        Run SyN on both images block-averaged by this factor per axis (2: a
        1 mm template and T1w at 2 mm), so the finest level and the
        displacement fields are on that coarser grid (8 times fewer voxels
        for 2). The fields are smooth (``sigma_diff``), so for atlas mapping
        into a 2 mm PET the coarse grid loses little (docs/preprocessing.md).

    Returns
    -------
    NonlinearRegistration
        ``forward`` maps fixed points to moving points, ``inverse`` the
        reverse; each is an ITK composite of an affine and a displacement
        field on the fixed grid (see :func:`_dipy_to_itk`).
    """
    from dipy.align.imwarp import SymmetricDiffeomorphicRegistration
    from dipy.align.metrics import CCMetric

    fa = np.asarray(fixed_affine, dtype=float)
    p = np.asarray(prealign, dtype=float)
    sdr = SymmetricDiffeomorphicRegistration(CCMetric(3, sigma_diff=sigma_diff,
                                                      radius=cc_radius),
                                             level_iters=list(level_iters))
    ma = np.asarray(moving_affine, dtype=float)
    fix, fa = block_average(np.asarray(fixed, dtype=np.float64), fa, grid_factor)
    mov, ma = block_average(np.asarray(moving, dtype=np.float64), ma, grid_factor)
    mapping = sdr.optimize(fix, mov, static_grid2world=fa, moving_grid2world=ma, prealign=p)
    forward, inverse = _dipy_to_itk(mapping)
    return NonlinearRegistration(
        forward=forward, inverse=inverse, affine=p, mapping=mapping,
        settings={"engine": "dipy SyN", "metric": "CC", "level_iters": list(level_iters),
                  "cc_radius": cc_radius, "sigma_diff": sigma_diff,
                  "grid_factor": grid_factor})


def block_average(data: NDArray, affine: ArrayLike, factor: int) -> tuple[NDArray, NDArray]:
    """Average non-overlapping ``factor^3`` blocks; the grid keeps its field of view.

    Parameters
    ----------
    data : ndarray (X, Y, Z)
    affine : array_like (4, 4)
        Voxel-to-world (RAS mm).
    factor : int
        Block edge in voxels (1: unchanged). The image is cropped at the high
        end to a multiple of ``factor``.

    Returns
    -------
    data : ndarray (X // f, Y // f, Z // f)
    affine : ndarray (4, 4)
        Voxel ``i`` of the result is centred on voxels ``f i .. f i + f - 1``.
    """
    f = int(factor)
    a = np.asarray(affine, dtype=float)
    if f <= 1:
        return data, a
    scale = np.diag([f, f, f, 1.0])
    scale[:3, 3] = (f - 1) / 2.0
    return block_mean(data, f), a @ scale


def compose(*transforms: sitk.Transform | ArrayLike) -> sitk.CompositeTransform:
    """Compose point transforms, **first applied first**.

    ``compose(a, b)`` maps ``x -> b(a(x))``. Each item is an ITK transform or
    a 4x4 RAS matrix. For resampling an image of space C onto space A through
    B, pass ``compose(A->B, B->C)``.
    """
    comp = sitk.CompositeTransform(3)
    for t in reversed(transforms):
        comp.AddTransform(t if isinstance(t, sitk.Transform) else sitk_from_matrix(t))
    return comp


# --------------------------------------------------------------------------
# transform files
# --------------------------------------------------------------------------

def save_transform(path: str | os.PathLike, transform: sitk.Transform | ArrayLike) -> Path:
    """Write a transform atomically in ITK format (``.tfm``, ``.txt``, ``.mat`` or ``.h5``).

    Linear transforms can use any of the suffixes; transforms that contain a
    displacement field need ``.h5``.
    """
    target = Path(path)
    tx = transform if isinstance(transform, sitk.Transform) else sitk_from_matrix(transform)
    if not str(target).endswith((".tfm", ".txt", ".mat", ".h5")):
        raise FileFormatError("unknown transform file type", path=target, field="suffix",
                              fix="name the file .tfm, .txt, .mat or .h5")
    with atomic_path(target) as tmp:
        sitk.WriteTransform(tx, str(tmp))
    return target


def load_transform(path: str | os.PathLike) -> sitk.Transform:
    """Read an ITK transform file written by :func:`save_transform`, ANTs or ITK tools."""
    from petbind.io.transforms import read_transform

    return read_transform(path)
