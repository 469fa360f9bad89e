"""Voxel-level partial-volume correction: RBV, iterative Yang and Müller-Gärtner.

All three take the image as ``(V, T)`` voxels and the atlas's
:class:`~petbind.pvc.spread.RegionSpread` (``F``: label fractions per voxel,
``R``: label spread functions), and correct every frame at once. Blurring is
linear, so the blurred piecewise-constant synthetic image of label values
``x`` (labels x frames) is ``R @ x``: no per-frame blur.

- **RBV** (region-based voxel-wise; Thomas et al. 2011): the GTM label values
  ``x`` paint the synthetic image ``S = H x`` (each PET voxel takes the value
  of the label covering most of it, ``H`` of
  :meth:`~petbind.pvc.spread.RegionSpread.majority`); each voxel is multiplied
  by ``S / (R x)``, the ratio of the synthetic image to its blurred self
  (``R`` partial-volume aware when the atlas is finer than the PET grid). A
  corrected voxel thus estimates the activity of its own majority tissue.
  Assumes activity uniform within each label (the GTM's assumption) only to
  derive the correction factor; the voxel pattern within a region is kept.
- **Iterative Yang** (Erlandsson et al. 2012): the same correction factor, but
  the label values start as the uncorrected region means and are re-estimated
  as the means of the corrected image over each label's majority voxels,
  ``n_iter`` times; no matrix inversion.
- **Müller-Gärtner** (Müller-Gärtner et al. 1992), grey matter only: the
  white-matter, CSF and background labels' blurred contributions (with their
  GTM activities) are subtracted and the rest divided by the blurred
  grey-matter fraction. Assumes the non-grey classes uniform; grey-to-grey
  spill between grey-matter regions of different activity is *not* corrected.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

from petbind.pvc.spread import BACKGROUND, RegionSpread


def _ratio(num: NDArray, den: NDArray, floor: float) -> NDArray:
    """``num / den`` where ``|den| > floor``, 1 elsewhere (no correction outside the signal)."""
    out = np.ones_like(num)
    ok = np.abs(den) > floor
    np.divide(num, den, out=out, where=ok)
    return out


def _floor(blurred: NDArray, rel: float = 1e-6) -> float:
    m = float(np.max(np.abs(blurred))) if blurred.size else 0.0
    return rel * m if m > 0 else np.finfo(float).tiny


def rbv(voxels: NDArray, spread: RegionSpread, values: NDArray) -> NDArray[np.float64]:
    """Region-based voxel-wise correction (Thomas et al. 2011).

    Parameters
    ----------
    voxels : ndarray, shape (V, T)
        Observed image.
    spread : RegionSpread
    values : ndarray, shape (L, T)
        Label activities, normally :func:`petbind.pvc.gtm.gtm` ``values``.

    Returns
    -------
    ndarray, shape (V, T)
        ``Y * (H x) / (R x)``; voxels where ``R x`` is negligible are left as observed.

    References
    ----------
    Thomas BA et al. The importance of appropriate partial volume correction
    for PET quantification in Alzheimer's disease. Eur J Nucl Med Mol Imaging
    2011; 38:1104-1119.
    """
    synth = np.asarray(spread.majority() @ values)
    blurred = np.asarray(spread.rsf @ values)
    return np.asarray(voxels, dtype=np.float64) * _ratio(synth, blurred, _floor(blurred))


def iterative_yang(voxels: NDArray, spread: RegionSpread, n_iter: int = 10
                   ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Iterative Yang correction (Erlandsson et al. 2012).

    Parameters
    ----------
    voxels : ndarray, shape (V, T)
    spread : RegionSpread
    n_iter : int
        Iterations (label values start at the observed region means).

    Returns
    -------
    corrected : ndarray, shape (V, T)
    values : ndarray, shape (L, T)
        The final label estimates.

    References
    ----------
    Erlandsson K, Buvat I, Pretorius PH, Thomas BA, Hutton BF. A review of
    partial volume correction techniques for emission tomography and their
    applications in neurology, cardiology and oncology. Phys Med Biol 2012;
    57:R119-R159 (section 4.2.3).
    """
    y = np.asarray(voxels, dtype=np.float64)
    x = spread.majority_means(y)
    x = np.where(np.isfinite(x), x, spread.region_means(y))
    corrected = y
    for _ in range(max(int(n_iter), 1)):
        corrected = rbv(y, spread, x)
        new = spread.majority_means(corrected)
        x = np.where(np.isfinite(new), new, x)
    return corrected, x


def muller_gartner(voxels: NDArray, spread: RegionSpread, values: NDArray, *,
                   non_grey: Iterable[str] = ("white_matter", "csf"),
                   min_grey: float = 0.1) -> NDArray[np.float64]:
    """Müller-Gärtner grey-matter correction.

    Parameters
    ----------
    voxels : ndarray, shape (V, T)
    spread : RegionSpread
    values : ndarray, shape (L, T)
        Label activities (GTM); only the non-grey labels' are used.
    non_grey : iterable of str
        Regions that are not grey matter (the background always is not).
    min_grey : float
        Voxels whose blurred grey-matter fraction is below this are left as
        observed (the division would amplify noise without bound).

    Returns
    -------
    ndarray, shape (V, T)
        ``(Y - R_ng x_ng) / R_gm`` in voxels with grey matter (``F_gm > 0``) and
        ``R_gm >= min_grey``; observed values elsewhere.

    References
    ----------
    Müller-Gärtner HW et al. Measurement of radiotracer concentration in brain
    gray matter using positron emission tomography: MRI-based correction for
    partial volume effects. J Cereb Blood Flow Metab 1992; 12:571-583.
    """
    y = np.asarray(voxels, dtype=np.float64)
    ng = set(non_grey) | {BACKGROUND}
    ngc = spread.columns_of(ng)
    gmc = np.setdiff1d(np.arange(len(spread.regions)), ngc)
    spill = np.asarray(spread.rsf[:, ngc] @ np.asarray(values)[ngc]) if ngc.size else 0.0
    r_gm = np.asarray(spread.rsf[:, gmc].sum(axis=1)).ravel()
    f_gm = np.asarray(spread.fractions[:, gmc].sum(axis=1)).ravel()
    use = (f_gm > 0) & (r_gm >= min_grey)
    out = y.copy()
    out[use] = (y[use] - np.asarray(spill)[use] if ngc.size else y[use]) / r_gm[use, None]
    return out
