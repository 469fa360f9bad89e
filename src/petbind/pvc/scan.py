"""Partial-volume correction of one scan: the methods behind ``petbind pvc`` and ``[pvc]``.

:func:`correct_image` runs one method on a 4D image and an atlas and returns
the corrected region curves (every method), the corrected 4D image (voxel
methods) and what the correction assumed and found (PSF, GTM condition
number, each region's recovery coefficient), ready for a JSON sidecar.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.errors import ConfigError
from petbind.pvc.gtm import as_voxels, gtm, transfer_matrix
from petbind.pvc.psf import PSF
from petbind.pvc.spread import BACKGROUND, RegionSpread, region_spread
from petbind.pvc.voxel import iterative_yang, muller_gartner, rbv

#: Methods: region level ("gtm", "sgtm") and voxel level ("rbv", "iy", "mg").
METHODS = ("gtm", "sgtm", "rbv", "iy", "mg")
#: Methods that give a corrected 4D image.
VOXEL_METHODS = frozenset({"rbv", "iy", "mg"})

_ASSUMES = {
    "gtm": "activity uniform within each atlas label (and in the background outside it); "
           "Gaussian PSF; atlas aligned with the PET image",
    "sgtm": "as gtm, fitted to every voxel by least squares (symmetric GTM)",
    "rbv": "GTM label activities give the correction factor (synthetic image / its blurred "
           "self); the voxel pattern within a label is kept",
    "iy": "as rbv with label activities re-estimated from the corrected image (iterative "
          "Yang), no matrix inversion",
    "mg": "white matter, CSF and background uniform at their GTM activities; grey matter "
          "corrected for their spill-in and its own spill-out only (no grey-to-grey "
          "correction between grey-matter regions)",
}


@dataclass
class PvcResult:
    """One scan's partial-volume correction.

    Attributes
    ----------
    method : str
    regions : list of str
        Atlas regions (labels pooled by region; background left out).
    tacs : ndarray, shape (R, T)
        Corrected region curves (unit of the image).
    image : ndarray, shape (X, Y, Z, T) or None
        Corrected image (voxel methods).
    info : dict
        JSON-ready: method, assumptions, PSF, GTM condition number, recovery
        coefficient and volume of each region, background activity.
    """

    method: str
    regions: list[str]
    tacs: NDArray[np.float64]
    image: NDArray[np.float32] | None
    info: dict[str, Any] = field(default_factory=dict)


def _voxel_values(spread: RegionSpread, image: NDArray, fallback: NDArray) -> NDArray:
    """Label means of a corrected image over majority voxels (``fallback`` for labels without)."""
    m = spread.majority_means(image)
    return np.where(np.isfinite(m), m, fallback)


def region_recovery(spread: RegionSpread) -> tuple[list[str], NDArray[np.float64]]:
    """Recovery coefficient of each region (labels pooled): the pooled GTM's diagonal.

    ``sum_{i,j in r} (F^T R)_ij / sum_{i in r} volume_i``: the fraction of a
    uniform region's activity its own mean keeps.
    """
    ftr = (spread.fractions.T @ spread.rsf).toarray()
    vol = spread.volumes
    names = [r for r in dict.fromkeys(spread.regions) if r != BACKGROUND]
    rec = []
    for r in names:
        idx = spread.columns_of({r})
        rec.append(ftr[np.ix_(idx, idx)].sum() / vol[idx].sum())
    return names, np.asarray(rec)


def correct_image(data: ArrayLike, affine: ArrayLike, labels: ArrayLike,
                  names: Mapping[int, str], psf: PSF, method: str = "gtm", *,
                  labels_affine: ArrayLike | None = None, n_iter: int = 10,
                  non_grey: Sequence[str] = ("white_matter", "csf"),
                  oversample: int | None = None,
                  atlas_path: str | os.PathLike | None = None) -> PvcResult:
    """Partial-volume-correct a 4D image.

    Parameters
    ----------
    data : array_like, shape (X, Y, Z, T)
        Activity (kBq/mL or any unit).
    affine : array_like, shape (4, 4)
        PET voxel-to-world (mm).
    labels : array_like of int
        Atlas on the PET grid or an aligned finer grid (:mod:`petbind.pvc.spread`).
    names : mapping int -> str
        Region of each label (labels of one region are corrected separately and
        pooled by volume).
    psf : PSF
    method : {"gtm", "sgtm", "rbv", "iy", "mg"}
    labels_affine : array_like, optional
        Atlas voxel-to-world (default ``affine``).
    n_iter : int
        Iterations of iterative Yang.
    non_grey : sequence of str
        Regions Müller-Gärtner treats as not grey matter (besides the background).
    oversample : int, optional
        Split factor of a PET-grid atlas before blurring
        (:func:`petbind.pvc.spread.region_spread`; default automatic).
    atlas_path : str or PathLike, optional
        The atlas file, named in errors about the atlas.

    Returns
    -------
    PvcResult
    """
    if method not in METHODS:
        raise ConfigError(f"unknown partial-volume correction {method!r}", field="pvc.method",
                          fix=f"use one of: {', '.join(METHODS)}")
    arr = np.asarray(data)
    if arr.ndim == 3:
        arr = arr[..., None]
    spread = region_spread(labels, names, psf, pet_shape=arr.shape[:3], pet_affine=affine,
                           labels_affine=labels_affine, oversample=oversample,
                           source=atlas_path)
    y = as_voxels(arr, spread).astype(np.float64)
    res = gtm(y.reshape(*spread.shape, -1), spread, symmetric=method == "sgtm") \
        if method != "iy" else None
    image = None
    values: NDArray
    if method in ("gtm", "sgtm"):
        assert res is not None
        values = res.values
    elif method == "rbv":
        assert res is not None
        corrected = rbv(y, spread, res.values)
        values = _voxel_values(spread, corrected, res.values)
        image = corrected
    elif method == "iy":
        image, values = iterative_yang(y, spread, n_iter)
    else:
        assert res is not None
        image = muller_gartner(y, spread, res.values, non_grey=non_grey)
        values = _voxel_values(spread, image, res.values)
    regions, tacs = spread.pool(values)
    rnames, rec = region_recovery(spread)
    g = res.matrix if res is not None and not res.symmetric else transfer_matrix(spread)
    # Rousset's G for every method (comparable across methods); sGTM's own system below
    cond = res.condition if res is not None and not res.symmetric else float(np.linalg.cond(g))
    vol_ml = float(abs(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3]))) / 1000.0
    vols = dict(zip(*spread.pool(spread.volumes), strict=True))
    info: dict[str, Any] = {
        "Method": method, "Assumes": _ASSUMES[method], "PSF": psf.to_dict(),
        "AtlasVoxelsPerPETVoxelEdge": spread.factor // spread.oversampled,
        "AtlasOversampling": spread.oversampled,
        "BackgroundRegion": "everything in the field of view outside the atlas labels, "
                            "corrected as one more label",
        "GTMConditionNumber": cond,
        "RecoveryCoefficient": {r: float(v) for r, v in zip(rnames, rec, strict=True)},
        "RegionVolumeML": {r: float(vols[r]) * vol_ml for r in rnames},
        "NLabels": len(spread.labels),
    }
    if BACKGROUND in spread.regions and res is not None:
        bi = spread.columns_of({BACKGROUND})
        info["BackgroundActivityMean"] = float(np.mean(res.values[bi]))
    if res is not None and res.symmetric:
        info["SymmetricGTMConditionNumber"] = res.condition
    if method == "iy":
        info["Iterations"] = int(n_iter)
    if method == "mg":
        info["NonGreyRegions"] = sorted(set(non_grey) | {BACKGROUND})
    img = None if image is None else image.reshape(*spread.shape, -1).astype(np.float32)
    return PvcResult(method=method, regions=regions, tacs=tacs, image=img, info=info)
