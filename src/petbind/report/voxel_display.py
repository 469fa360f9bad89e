"""How the report shows voxel maps: robust colour limits and masking of % change maps.

A % change map ``100 (BP_drug - BP_base) / BP_base`` is dominated by voxels
whose baseline BP_ND is near zero (brain edge, white matter, CSF): a small
difference over a tiny denominator gives hundreds of percent, and a colour
scale fitted to them leaves the real effect (and the truth map beside it)
pale. So the report

1. shows % change only where the mean baseline BP_ND reaches
   :data:`MIN_BASELINE_BP` (other voxels are left blank and counted in the
   note); the statistics themselves (t maps, clusters) are not changed;
2. scales the colours symmetrically to ``max(|p1|, |p99|)``, the larger
   magnitude of the 1st and 99th percentiles of the shown voxels, so a
   handful of extreme voxels saturate instead of setting the scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Voxels with a mean baseline BP_ND below this are not shown in % change maps.
MIN_BASELINE_BP = 0.2
#: Percentiles whose larger magnitude sets the symmetric colour limit.
PERCENTILES = (1.0, 99.0)


@dataclass
class EffectDisplay:
    """A % change map ready to draw.

    Attributes
    ----------
    shown : ndarray
        The map, 0 outside the shown voxels.
    keep : ndarray of bool
        Voxels shown.
    vmin, vmax : float
        Colour limits (``-lim``, ``+lim``).
    p1, p99 : float
        The percentiles of the shown values the limit comes from.
    n_masked : int
        Voxels of the analysis mask hidden for low baseline BP_ND.
    """

    shown: NDArray
    keep: NDArray
    vmin: float
    vmax: float
    p1: float
    p99: float
    n_masked: int

    def note(self) -> str:
        """One sentence for the report."""
        hidden = (f" {self.n_masked} voxels of the mask with mean baseline BP_ND below "
                  f"{MIN_BASELINE_BP:g} are blank (a % change of a near-zero baseline is "
                  "noise)." if self.n_masked else "")
        return (f"Colour scale +-{self.vmax:.3g} %: the larger magnitude of the 1st and "
                f"99th percentiles ({self.p1:.3g}, {self.p99:.3g}) of the shown voxels."
                + hidden)


def effect_display(effect: NDArray, mask: NDArray, baseline_bp: NDArray | None
                   ) -> EffectDisplay:
    """Mask low-baseline voxels and choose robust symmetric colour limits.

    Parameters
    ----------
    effect : ndarray, shape (X, Y, Z)
        Mean per-subject % change.
    mask : ndarray of bool
        Analysis mask.
    baseline_bp : ndarray or None
        Mean baseline BP_ND on the same grid (None: no masking).
    """
    keep = np.asarray(mask, bool) & np.isfinite(effect)
    n_masked = 0
    if baseline_bp is not None and baseline_bp.shape == effect.shape:
        low = keep & ~(np.nan_to_num(baseline_bp) >= MIN_BASELINE_BP)
        if (keep & ~low).sum() >= 10:  # never hide (almost) everything
            n_masked = int(low.sum())
            keep = keep & ~low
    vals = effect[keep]
    if vals.size:
        p1, p99 = (float(x) for x in np.percentile(vals, PERCENTILES))
    else:
        p1, p99 = -1.0, 1.0
    lim = max(abs(p1), abs(p99))
    if not np.isfinite(lim) or lim <= 0:
        lim = 1.0
    return EffectDisplay(shown=np.where(keep, effect, 0.0), keep=keep, vmin=-lim, vmax=lim,
                         p1=p1, p99=p99, n_masked=n_masked)


def largest_cluster_peak(clusters: Any, shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """Voxel indices of the peak of the largest cluster (the slices the figures show).

    None (slices through the mask's centre) when there is no cluster table or
    cluster, or the peak lies outside ``shape``.
    """
    if clusters is None or len(clusters) == 0 or not {"peak_i", "peak_j", "peak_k",
                                                      "size_voxels"} <= set(clusters.columns):
        return None
    row = clusters.loc[clusters["size_voxels"].astype(float).idxmax()]
    ijk = tuple(int(row[c]) for c in ("peak_i", "peak_j", "peak_k"))
    if any(not 0 <= v < n for v, n in zip(ijk, shape[:3], strict=True)):
        return None
    return ijk  # type: ignore[return-value]


def voxel_methods_text(map_fwhm_mm: Any, pet_fwhm_mm: Any) -> str:
    """The Methods sentence on the voxel statistics, naming both smoothings (or their absence).

    Parameters
    ----------
    map_fwhm_mm : float or None
        ``statistics.voxel.smoothing_fwhm_mm``: Gaussian FWHM (mm) of the contrast maps.
    pet_fwhm_mm : float or None
        ``parametric.pet_fwhm_mm``: Gaussian FWHM (mm) of every PET frame inside the
        brain mask before the voxel fits.
    """
    def mm(v: Any) -> float:
        try:
            return float(v)
        except (TypeError, ValueError):
            return 0.0

    pet, maps = mm(pet_fwhm_mm), mm(map_fwhm_mm)
    fits = (f"Before the voxel fits every PET frame was smoothed with a {pet:g} mm FWHM "
            "Gaussian, normalised inside the brain mask (white matter and CSF, when excluded "
            "from the mask, neither gave nor received activity). " if pet > 0 else
            "The 4-D PET images were not smoothed before the voxel fits. ")
    return (fits + "Voxelwise, per-subject contrast maps of BP_ND"
            + (f" (smoothed with a {maps:g} mm FWHM Gaussian inside the analysis mask)"
               if maps > 0 else " (not smoothed)")
            + " were tested with paired t maps; family-wise error was controlled by sign-flip "
            "permutation of the subjects' contrast maps (maximum |t| and maximum cluster "
            "size).")
