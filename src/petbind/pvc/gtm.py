"""Region-level partial-volume correction: the geometric transfer matrix (GTM).

With ``F`` and ``R`` of :mod:`petbind.pvc.spread`, the mean of the observed
image over region ``i`` is ``y_i = sum_j G_ij x_j`` with the transfer matrix

    G_ij = (F^T R)_ij / volume_i

(the fraction of label ``j``'s activity, blurred, that region ``i``
measures; Rousset et al. 1998). The corrected activities solve ``G x = y``
for every frame at once (``y`` is labels x frames). ``G_ii`` is the region's
*recovery coefficient* (the fraction of a uniform region's own activity that
its mean keeps), and the condition number of ``G`` says how much the
correction amplifies noise.

The *symmetric* variant (PETSurfer's ``mri_gtmpvc``; Greve et al. 2016)
fits the voxel values by least squares instead, ``(R^T R) x = R^T Y``, which
uses every voxel of the image (the spill-out tails too) rather than region
means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from petbind.errors import DataError
from petbind.pvc.spread import RegionSpread


@dataclass(frozen=True)
class GTMResult:
    """Partial-volume-corrected label activities.

    Attributes
    ----------
    values : ndarray, shape (L, T)
        Corrected activity of each label (the spread's columns) per frame.
    observed : ndarray, shape (L, T)
        The uncorrected ``F``-weighted region means.
    matrix : ndarray, shape (L, L)
        The transfer matrix ``G`` (``R^T R`` for the symmetric variant).
    condition : float
        2-norm condition number of the system solved.
    recovery : ndarray, shape (L,)
        ``G_ii`` of the (Rousset) transfer matrix, per label.
    symmetric : bool
    """

    values: NDArray[np.float64]
    observed: NDArray[np.float64]
    matrix: NDArray[np.float64]
    condition: float
    recovery: NDArray[np.float64]
    symmetric: bool = False


def transfer_matrix(spread: RegionSpread) -> NDArray[np.float64]:
    """``G = (F^T R) / volume`` (labels x labels): row i, the spill of each label into region i."""
    g = (spread.fractions.T @ spread.rsf).toarray()
    return g / spread.volumes[:, None]


def as_voxels(image: NDArray, spread: RegionSpread) -> NDArray:
    """A 4D (or 3D) image as ``(V, T)`` voxels in the spread's C order."""
    a = np.asarray(image)
    if a.ndim == 3:
        a = a[..., None]
    if a.shape[:3] != spread.shape:
        raise DataError(f"image shape {a.shape[:3]} differs from the atlas' PET grid "
                        f"{spread.shape}", field="shape",
                        fix="use the atlas of this image's grid")
    return a.reshape(spread.n_voxels, a.shape[3])


def gtm(image: NDArray, spread: RegionSpread, *, symmetric: bool = False) -> GTMResult:
    """Geometric-transfer-matrix correction of every frame at once.

    Parameters
    ----------
    image : ndarray, shape (X, Y, Z, T) or (X, Y, Z)
        Activity (any unit; the result has the same unit).
    spread : RegionSpread
        Of the atlas on the image's grid (:func:`petbind.pvc.spread.region_spread`).
    symmetric : bool
        Solve the least-squares (symmetric) GTM ``(R^T R) x = R^T Y`` instead
        of Rousset's ``G x = y``.

    Returns
    -------
    GTMResult

    References
    ----------
    Rousset OG, Ma Y, Evans AC. J Nucl Med 1998; 39:904-911.
    Greve DN et al. Different partial volume correction methods lead to
    different conclusions: an 18F-FDG-PET study of aging. NeuroImage 2016;
    132:334-343 (the symmetric GTM of PETSurfer).
    """
    y_vox = as_voxels(image, spread)
    observed = spread.region_means(y_vox)
    g = transfer_matrix(spread)
    if symmetric:
        a = (spread.rsf.T @ spread.rsf).toarray()
        b = np.asarray(spread.rsf.T @ y_vox, dtype=np.float64)
    else:
        a, b = g, observed
    cond = float(np.linalg.cond(a))
    if not np.isfinite(cond) or cond > 1e12:
        raise DataError(f"the transfer matrix is singular (condition number {cond:.3g}): two "
                        "labels cannot be told apart at this resolution", field="index",
                        fix="merge labels that overlap or lie within the PSF of each other, "
                        "or check the PSF")
    x = np.linalg.solve(a, b)
    return GTMResult(values=x, observed=observed, matrix=a, condition=cond,
                     recovery=np.diag(g).copy(), symmetric=symmetric)
