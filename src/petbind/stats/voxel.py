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
250 k voxels). The t of every flip is computed by the same call as before
(``scipy.stats.ttest_1samp`` in float64), so the p-values are identical.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from petbind.errors import DataError

#: Budget (bytes) of one chunk of flipped data when computing permutation t maps.
CHUNK_BYTES = 64 * 2**20

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
    """One-sample t of ``d`` along axis -2 (subjects), by scipy."""
    from scipy.stats import ttest_1samp

    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        t = ttest_1samp(d, 0.0, axis=-2).statistic
    return np.asarray(t, dtype=float)


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


def _max_cluster_sizes(tmaps: NDArray, mask: NDArray, threshold: float) -> NDArray:
    """Largest supra-threshold cluster (either sign) of each flipped t map.

    Parameters
    ----------
    tmaps : ndarray, shape (F, V)
        t maps of F flips at the V voxels of ``mask`` (NaN counts as below threshold).
    mask : ndarray of bool, shape (X, Y, Z)
    threshold : float
        Cluster-forming |t|.

    Returns
    -------
    ndarray, shape (F,)
        Voxels in the largest cluster (26-connectivity) of ``t > threshold`` or
        ``-t > threshold``; 0 when no voxel passes.
    """
    from scipy.ndimage import label

    sizes = np.zeros(tmaps.shape[0])
    vol = np.zeros(mask.shape, dtype=bool)
    for f, t in enumerate(tmaps):
        best = 0
        for sign in (1.0, -1.0):
            above = sign * t > threshold
            if not above.any():
                continue            # label() would find no cluster
            vol[:] = False
            vol[mask] = above
            lab, k = label(vol, structure=_STRUCTURE_26)
            if k:
                best = max(best, int(np.bincount(lab.ravel())[1:].max()))
        sizes[f] = best
    return sizes


@dataclass
class FlipNull:
    """What a sign-flip test keeps of its flips (see :func:`flip_null`).

    Attributes
    ----------
    t_obs : ndarray, shape (V,)
        t of the unflipped data (flip 0), float64, NaN where undefined.
    max_abs_t : ndarray, shape (F,)
        Largest |t| over the mask of every flip (NaN counted as 0), float64.
    max_cluster : ndarray, shape (F,)
        Voxels in the largest supra-threshold cluster of every flip.
    """

    t_obs: NDArray
    max_abs_t: NDArray
    max_cluster: NDArray


def flip_null(d: NDArray, flips: NDArray, mask: NDArray, threshold: float,
              block_bytes: int | None = None) -> FlipNull:
    """Null distributions of the maximum |t| and the largest cluster, in blocks of flips.

    Flips are processed ``B`` at a time, ``B = block_bytes // (8 n V)``
    (at least 1): the block's flipped data ``(B, n, V)`` float64 and its t maps
    ``(B, V)`` exist only while the block is processed, and only the block's
    maxima and cluster sizes are kept. Peak memory is therefore a few
    ``block_bytes`` plus ``O(F)``, constant in the number of flips. Each t is
    the same float64 ``ttest_1samp`` as :func:`flipped_t` (a voxel's t does not
    depend on how flips are grouped), so the result equals the all-flips
    computation bit for bit.

    Parameters
    ----------
    d : ndarray, shape (n, V)
        Per-subject contrast values at the V voxels of ``mask``.
    flips : ndarray, shape (F, n)
        Sign flips, row 0 the identity (see :func:`sign_flips`).
    mask : ndarray of bool, shape (X, Y, Z)
        The voxels of ``d`` (C order), for cluster labelling.
    threshold : float
        Cluster-forming |t|.
    block_bytes : int, optional
        Budget of one block's flipped data, bytes; :data:`CHUNK_BYTES` when omitted.

    Returns
    -------
    FlipNull
    """
    d = np.asarray(d, dtype=float)
    n, v = d.shape
    budget = CHUNK_BYTES if block_bytes is None else int(block_bytes)
    block = max(1, budget // max(1, n * v * 8))
    n_flips = flips.shape[0]
    max_abs = np.empty(n_flips)
    max_cluster = np.empty(n_flips)
    t_obs = None
    for i in range(0, n_flips, block):
        tb = _t_of(flips[i:i + block, :, None] * d[None, :, :])
        if t_obs is None:
            t_obs = tb[0].copy()
        nan = np.isnan(tb)
        tb[nan] = 0.0
        max_abs[i:i + block] = np.abs(tb).max(axis=1)
        max_cluster[i:i + block] = _max_cluster_sizes(tb, mask, threshold)
        del tb, nan
    return FlipNull(t_obs=t_obs, max_abs_t=max_abs, max_cluster=max_cluster)


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


def sign_flip_test(diffs: NDArray, mask: NDArray, *, affine: NDArray | None = None,
                   effect: NDArray | None = None, cluster_forming_p: float = 0.01,
                   n_permutations: int = 5000, seed: int = 0, smoothing_fwhm_mm: float = 0.0,
                   atlas: NDArray | None = None,
                   atlas_names: dict[int, str] | None = None) -> VoxelTest:
    """Paired t map with sign-flip FWE (voxel and cluster level) and FDR.

    Parameters
    ----------
    diffs : ndarray, shape (n, X, Y, Z)
        Per-subject contrast maps (e.g. BP_ND drug - BP_ND baseline).
    mask : ndarray of bool, shape (X, Y, Z)
        Voxels analysed.
    affine : ndarray, shape (4, 4), optional
        Voxel-to-mm transform (peak coordinates, voxel size for smoothing and
        cluster volume); identity when omitted.
    effect : ndarray, shape (n, X, Y, Z), optional
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

    Returns
    -------
    VoxelTest
    """
    from scipy.ndimage import label, maximum_position
    from scipy.stats import false_discovery_control
    from scipy.stats import t as t_dist

    diffs = np.asarray(diffs, dtype=float)
    mask = np.asarray(mask, dtype=bool) & np.all(np.isfinite(diffs), axis=0)
    n = diffs.shape[0]
    aff = np.eye(4) if affine is None else np.asarray(affine, dtype=float)
    vox = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    if smoothing_fwhm_mm > 0:
        diffs = smooth_maps(diffs, mask, smoothing_fwhm_mm, vox)
    if not mask.any():
        raise DataError("no voxel is inside the mask with finite values in every subject",
                        field="mask", fix="check the parametric maps and the atlas")
    d = diffs[:, mask]
    flips, exact = sign_flips(n, n_permutations, seed)
    df = n - 1
    thr = float(t_dist.isf(cluster_forming_p / 2.0, df))
    null = flip_null(d, flips, mask, thr)
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
    if effect is None:
        eff = d.mean(axis=0)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            eff = np.nanmean(np.asarray(effect, float)[:, mask], axis=0)
        eff = np.where(np.isfinite(eff), eff, 0.0)
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
    info = {"n_subjects": int(n), "n_flips": int(flips.shape[0]), "exact": bool(exact),
            "min_attainable_p": 1.0 / flips.shape[0], "cluster_forming_t": thr,
            "cluster_forming_p": float(cluster_forming_p),
            "smoothing_fwhm_mm": float(smoothing_fwhm_mm), "seed": int(seed),
            "mask_voxels": int(mask.sum()), "df": int(df)}
    return VoxelTest(t=t_map, p=vol(p_obs, 1.0), p_fwe=vol(p_fwe, 1.0),
                     p_fdr=vol(p_fdr, 1.0), effect=vol(eff, 0.0), mask=mask,
                     clusters=clusters, info=info)
