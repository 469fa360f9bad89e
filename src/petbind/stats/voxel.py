"""Voxel statistics of a within-subject contrast: t maps, sign-flip FWE, clusters, FDR.

The per-subject contrast maps ``d_i`` (e.g. BP_ND under drug minus baseline)
are tested against zero with a one-sample t at every voxel
(``scipy.stats.ttest_1samp``, equal to the paired t of the two conditions).
Family-wise error is controlled by sign-flipping (Nichols & Holmes, Hum Brain
Mapp 2002; Winkler et al., NeuroImage 2014): under the null hypothesis of a
symmetric distribution of ``d_i`` around zero each subject's sign can be
flipped, and the maximum |t| over the mask, recomputed for every flip,
gives the null distribution of the maximum. With ``n`` subjects there are
``2^n`` flips; when that is at most ``n_permutations`` every flip is
enumerated (exact test) and **the smallest attainable p is 1 / 2^n** (n = 4:
0.0625, so no voxel can reach FWE p < 0.05). Cluster-level FWE uses the same
flips: clusters of ``|t|`` above a cluster-forming threshold (26-connectivity,
positive and negative separately) are compared with the null distribution of
the largest cluster size (Hayasaka & Nichols, NeuroImage 2003). FDR is
Benjamini-Hochberg (``scipy.stats.false_discovery_control``) over the mask.

Memory: the flips are processed in blocks (:func:`flip_null`): one block of t
maps of ``CHUNK_BYTES`` at a time, of which only each flip's maximum |t| and
largest cluster are kept, so the test holds ``O(n x V + F)`` numbers whatever
the number of flips ``F`` (before: ``F x V`` float64, 10 GB for 5000 flips of
250 k voxels). The t of every flip is ``scipy.stats.ttest_1samp``'s statistic
bit for bit, computed without its p-values
(:func:`petbind.stats.voxel_null.t_statistic`), so the p-values are identical.

Where: :func:`sign_flip_test` is :func:`prepare_sign_flip` (mask, smoothing,
flips), :func:`flip_null` (in this process, or ranges of flips as tasks of a
:mod:`petbind.compute` engine) and :func:`finish_sign_flip` (p-values, FDR,
clusters, maps); the study stage runs the middle part of every contrast on
the scan stage's engine. The flips live in :mod:`petbind.stats.voxel_null`.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from petbind.errors import DataError
from petbind.stats import voxel_null as _null
from petbind.stats.voxel_null import (
    TASKS_PER_WORKER,
    FlipNull,
    flip_null,
    flip_null_tasks,
    merge_flip_null,
    t_statistic,
)

__all__ = ["CHUNK_BYTES", "TASKS_PER_WORKER", "FlipNull", "SignFlipInput", "VoxelTest",
           "finish_sign_flip", "flip_null", "flip_null_tasks", "flipped_t",
           "merge_flip_null", "prepare_sign_flip", "sign_flip_test", "sign_flips",
           "smooth_maps", "t_statistic"]

#: Budget (bytes) of one chunk of flipped data when computing permutation t maps
#: (:data:`petbind.stats.voxel_null.CHUNK_BYTES`; read here when a test runs).
CHUNK_BYTES = _null.CHUNK_BYTES

_STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)


def sign_flips(n: int, n_permutations: int = 5000, seed: int = 0) -> tuple[NDArray, bool]:
    """Sign-flip matrix, identity first.

    Parameters
    ----------
    n : int
        Number of subjects.
    n_permutations : int
        Largest number of flips to use. When ``2**n <= n_permutations`` all
        ``2**n`` flips are enumerated; otherwise the identity plus
        ``n_permutations - 1`` seeded random flips.
    seed : int
        Seed of the random flips.

    Returns
    -------
    flips : ndarray, shape (F, n)
        Entries +1 / -1; row 0 is all +1 (the observed data).
    exact : bool
        True when every flip is enumerated.
    """
    if n < 2:
        raise DataError(f"{n} subject(s): a sign-flip test needs at least 2", field="n",
                        fix="add subjects with every condition of the contrast")
    if 2**n <= n_permutations:
        flips = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        return flips, True
    rng = np.random.default_rng(seed)
    rand = rng.choice(np.array([1.0, -1.0]), size=(n_permutations - 1, n))
    return np.vstack([np.ones((1, n)), rand]), False


def _t_of(d: NDArray) -> NDArray:
    """One-sample t of ``d`` along axis -2 (subjects): :func:`t_statistic`."""
    return t_statistic(d)


def flipped_t(diffs: NDArray, flips: NDArray) -> NDArray:
    """t maps of every sign flip.

    Parameters
    ----------
    diffs : ndarray, shape (n, V)
        Per-subject contrast values at V voxels.
    flips : ndarray, shape (F, n)

    Returns
    -------
    ndarray, shape (F, V)
    """
    d = np.asarray(diffs, dtype=float)
    n, v = d.shape
    chunk = max(1, CHUNK_BYTES // max(1, n * v * 8))
    out = np.empty((flips.shape[0], v))
    for i in range(0, flips.shape[0], chunk):
        s = flips[i:i + chunk]
        out[i:i + chunk] = _t_of(s[:, :, None] * d[None, :, :])
    return out


def smooth_maps(maps: NDArray, mask: NDArray, fwhm_mm: float,
                voxel_size_mm: Sequence[float]) -> NDArray:
    """Gaussian smoothing inside a mask (normalised so the mask edge is not dimmed).

    Parameters
    ----------
    maps : ndarray, shape (n, X, Y, Z)
    mask : ndarray of bool, shape (X, Y, Z)
    fwhm_mm : float
        Full width at half maximum, mm; 0 returns the maps unchanged.
    voxel_size_mm : sequence of 3 floats

    Returns
    -------
    ndarray, shape (n, X, Y, Z)
        ``G*(m x) / G*m`` inside the mask, 0 outside.
    """
    from scipy.ndimage import gaussian_filter

    if fwhm_mm <= 0:
        return np.where(mask, maps, 0.0)
    sigma = (0, *(fwhm_mm / np.sqrt(8 * np.log(2)) / np.asarray(voxel_size_mm, float)))
    m = mask.astype(float)
    num = gaussian_filter(np.where(mask, maps, 0.0), sigma=sigma, mode="constant")
    den = gaussian_filter(m, sigma=sigma[1:], mode="constant")
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den[None]
    return np.where(mask, out, 0.0)


@dataclass
class VoxelTest:
    """Result of :func:`sign_flip_test`; 3-D arrays on the grid of the input maps.

    Attributes
    ----------
    t, p, p_fwe, p_fdr, effect : ndarray, shape (X, Y, Z)
        t map, uncorrected two-sided p, voxel-level FWE p, BH-adjusted p and
        mean per-subject effect; 0 (t, effect) or 1 (p) outside the mask.
    mask : ndarray of bool
    clusters : DataFrame
        ``cluster_id, sign, size_voxels, size_mm3, peak_t, peak_x, peak_y,
        peak_z, peak_i, peak_j, peak_k, peak_region, p_fwe_cluster``.
    info : dict
        ``n_subjects, n_flips, exact, min_attainable_p, cluster_forming_t,
        cluster_forming_p, smoothing_fwhm_mm, seed, mask_voxels``.
    """

    t: NDArray
    p: NDArray
    p_fwe: NDArray
    p_fdr: NDArray
    effect: NDArray
    mask: NDArray
    clusters: pd.DataFrame
    info: dict = field(default_factory=dict)


@dataclass
class SignFlipInput:
    """A sign-flip test ready for its flips (:func:`prepare_sign_flip`).

    Attributes
    ----------
    d : ndarray, shape (n, V)
        Per-subject contrast values (smoothed when asked) at the V voxels of ``mask``.
    mask : ndarray of bool, shape (X, Y, Z)
        Analysis mask less voxels without a finite value in every subject.
    flips : ndarray, shape (F, n)
    exact : bool
    threshold : float
        Cluster-forming |t|.
    effect : ndarray, shape (V,)
        Mean per-subject effect at the voxels of ``mask`` (0 where undefined).
    affine : ndarray, shape (4, 4)
    atlas, atlas_names
        As :func:`sign_flip_test`.
    info : dict
        The result's ``info``.
    """

    d: NDArray
    mask: NDArray
    flips: NDArray
    exact: bool
    threshold: float
    effect: NDArray
    affine: NDArray
    atlas: NDArray | None = None
    atlas_names: dict[int, str] | None = None
    info: dict = field(default_factory=dict)


def _on_grid(values: NDArray, mask: NDArray) -> NDArray:
    """``(n, V)`` values at the voxels of ``mask`` as ``(n, X, Y, Z)`` (NaN elsewhere)."""
    out = np.full((values.shape[0], *mask.shape), np.nan)
    out[:, mask] = values
    return out


def prepare_sign_flip(diffs: NDArray, mask: NDArray, *, affine: NDArray | None = None,
                      effect: NDArray | None = None, cluster_forming_p: float = 0.01,
                      n_permutations: int = 5000, seed: int = 0,
                      smoothing_fwhm_mm: float = 0.0, atlas: NDArray | None = None,
                      atlas_names: dict[int, str] | None = None) -> SignFlipInput:
    """The first part of :func:`sign_flip_test` (same parameters): mask, smoothing, flips.

    ``diffs`` and ``effect`` are ``(n, X, Y, Z)`` maps, or ``(n, V)`` values at the
    ``V = mask.sum()`` voxels of ``mask`` in C order (what a caller that keeps
    only the analysed voxels holds; the same numbers give the same result).

    Raises
    ------
    DataError
        Fewer than 2 subjects, or no voxel of the mask finite in every subject.
    """
    from scipy.stats import t as t_dist

    mask = np.asarray(mask, dtype=bool)
    diffs = np.asarray(diffs, dtype=float)
    masked = diffs.ndim == 2
    finite = np.all(np.isfinite(diffs), axis=0)
    n = diffs.shape[0]
    aff = np.eye(4) if affine is None else np.asarray(affine, dtype=float)
    vox = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    if masked:
        keep = finite
        mask_in = mask
        mask = mask.copy()
        mask[mask_in] = finite
    else:
        mask = mask & finite
    if not mask.any():
        raise DataError("no voxel is inside the mask with finite values in every subject",
                        field="mask", fix="check the parametric maps and the atlas")
    flips, exact = sign_flips(n, n_permutations, seed)
    if smoothing_fwhm_mm > 0:
        # smooth_maps reads the maps inside the (finite) mask only
        grid = _on_grid(diffs, mask_in) if masked else diffs
        d = smooth_maps(grid, mask, smoothing_fwhm_mm, vox)[:, mask]
        del grid
    else:
        d = diffs[:, keep] if masked else diffs[:, mask]
    df = n - 1
    thr = float(t_dist.isf(cluster_forming_p / 2.0, df))
    if effect is None:
        eff = d.mean(axis=0)
    else:
        effect = np.asarray(effect, float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            eff = np.nanmean(effect[:, keep] if masked else effect[:, mask], axis=0)
        eff = np.where(np.isfinite(eff), eff, 0.0)
    info = {"n_subjects": int(n), "n_flips": int(flips.shape[0]), "exact": bool(exact),
            "min_attainable_p": 1.0 / flips.shape[0], "cluster_forming_t": thr,
            "cluster_forming_p": float(cluster_forming_p),
            "smoothing_fwhm_mm": float(smoothing_fwhm_mm), "seed": int(seed),
            "mask_voxels": int(mask.sum()), "df": int(df)}
    return SignFlipInput(d=d, mask=mask, flips=flips, exact=bool(exact), threshold=thr,
                         effect=eff, affine=aff, atlas=atlas, atlas_names=atlas_names,
                         info=info)


def finish_sign_flip(prep: SignFlipInput, null: FlipNull) -> VoxelTest:
    """The last part of :func:`sign_flip_test`: p-values, FDR, clusters, maps.

    Parameters
    ----------
    prep : SignFlipInput
        From :func:`prepare_sign_flip`.
    null : FlipNull
        :func:`flip_null` of ``prep.d, prep.flips, prep.mask, prep.threshold``
        (in this process or merged from an engine's tasks).
    """
    from scipy.ndimage import label, maximum_position
    from scipy.stats import false_discovery_control
    from scipy.stats import t as t_dist

    mask, aff, thr = prep.mask, prep.affine, prep.threshold
    df = prep.info["df"]
    t_obs = null.t_obs
    p_obs = 2.0 * t_dist.sf(np.abs(t_obs), df)
    p_obs = np.where(np.isnan(p_obs), 1.0, p_obs)
    abs_t_obs = np.where(np.isnan(t_obs), 0.0, np.abs(t_obs))
    null_max = np.sort(null.max_abs_t)
    # fraction of flips whose maximum |t| reaches the voxel's |t| (ties count)
    p_fwe = (null_max.size - np.searchsorted(null_max, abs_t_obs * (1 - 1e-12), side="left")
             ) / null_max.size
    p_fdr = false_discovery_control(p_obs, method="bh")
    null_clusters = null.max_cluster

    def vol(values: NDArray, fill: float) -> NDArray:
        out = np.full(mask.shape, fill, dtype=float)
        out[mask] = values
        return out

    t_map = vol(np.where(np.isnan(t_obs), 0.0, t_obs), 0.0)
    atlas, atlas_names = prep.atlas, prep.atlas_names
    rows = []
    voxel_mm3 = float(abs(np.linalg.det(aff[:3, :3])))
    cid = 0
    for sign in (1.0, -1.0):
        lab, k = label(mask & (sign * t_map > thr), structure=_STRUCTURE_26)
        if not k:
            continue
        sizes = np.bincount(lab.ravel())[1:]
        peaks = maximum_position(sign * t_map, lab, index=np.arange(1, k + 1))
        for j in np.argsort(-sizes, kind="stable"):
            cid += 1
            ijk = tuple(int(x) for x in peaks[j])
            xyz = aff @ np.array([*ijk, 1.0])
            region = "n/a"
            if atlas is not None:
                lbl = int(atlas[ijk])
                region = (atlas_names or {}).get(lbl, str(lbl))
            rows.append({
                "cluster_id": cid, "sign": int(sign), "size_voxels": int(sizes[j]),
                "size_mm3": float(sizes[j] * voxel_mm3), "peak_t": float(t_map[ijk]),
                "peak_x": float(xyz[0]), "peak_y": float(xyz[1]), "peak_z": float(xyz[2]),
                "peak_i": ijk[0], "peak_j": ijk[1], "peak_k": ijk[2], "peak_region": region,
                "p_fwe_cluster": float(np.mean(null_clusters >= sizes[j])),
            })
    clusters = pd.DataFrame(rows, columns=[
        "cluster_id", "sign", "size_voxels", "size_mm3", "peak_t", "peak_x", "peak_y",
        "peak_z", "peak_i", "peak_j", "peak_k", "peak_region", "p_fwe_cluster"])
    return VoxelTest(t=t_map, p=vol(p_obs, 1.0), p_fwe=vol(p_fwe, 1.0),
                     p_fdr=vol(p_fdr, 1.0), effect=vol(prep.effect, 0.0), mask=mask,
                     clusters=clusters, info=dict(prep.info))


def sign_flip_test(diffs: NDArray, mask: NDArray, *, affine: NDArray | None = None,
                   effect: NDArray | None = None, cluster_forming_p: float = 0.01,
                   n_permutations: int = 5000, seed: int = 0, smoothing_fwhm_mm: float = 0.0,
                   atlas: NDArray | None = None,
                   atlas_names: dict[int, str] | None = None,
                   engine: Any = None) -> VoxelTest:
    """Paired t map with sign-flip FWE (voxel and cluster level) and FDR.

    :func:`prepare_sign_flip`, :func:`flip_null` (on ``engine`` when given),
    :func:`finish_sign_flip`; the result does not depend on the engine.

    Parameters
    ----------
    diffs : ndarray, shape (n, X, Y, Z) or (n, V)
        Per-subject contrast maps (e.g. BP_ND drug - BP_ND baseline), or their
        values at the ``V`` voxels of ``mask`` (C order).
    mask : ndarray of bool, shape (X, Y, Z)
        Voxels analysed.
    affine : ndarray, shape (4, 4), optional
        Voxel-to-mm transform (peak coordinates, voxel size for smoothing and
        cluster volume); identity when omitted.
    effect : ndarray, shape (n, X, Y, Z) or (n, V), optional
        Per-subject effect maps to average for the effect map (e.g. %
        change); the mean of ``diffs`` when omitted.
    cluster_forming_p : float
        Two-sided uncorrected p that forms clusters; the t threshold is the
        t distribution's ``isf(p / 2, n - 1)``.
    n_permutations : int
        Upper limit of flips (see :func:`sign_flips`).
    seed : int
        Seed of random flips (unused when exact).
    smoothing_fwhm_mm : float
        Gaussian FWHM applied to ``diffs`` inside the mask before testing.
    atlas : ndarray of int, shape (X, Y, Z), optional
        Label image; ``atlas_names`` maps a label to the name reported at a
        cluster peak.
    engine : petbind.compute.Engine, optional
        Run the flips as tasks there (:func:`flip_null_tasks`); None: in this process.

    Returns
    -------
    VoxelTest
    """
    prep = prepare_sign_flip(diffs, mask, affine=affine, effect=effect,
                             cluster_forming_p=cluster_forming_p,
                             n_permutations=n_permutations, seed=seed,
                             smoothing_fwhm_mm=smoothing_fwhm_mm, atlas=atlas,
                             atlas_names=atlas_names)
    null = flip_null(prep.d, prep.flips, prep.mask, prep.threshold,
                     CHUNK_BYTES if engine is None else None, engine=engine)
    return finish_sign_flip(prep, null)
