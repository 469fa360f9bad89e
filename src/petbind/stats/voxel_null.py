"""The permutation core of the voxel sign-flip test: t without p, flips in blocks and tasks.

:func:`t_statistic` is scipy's one-sample t (``ttest_1samp``) bit for bit,
without the p-values the permutation test does not use. :func:`flip_null`
runs the flips of :func:`petbind.stats.voxel.sign_flip_test` in blocks (memory
constant in the number of flips) and keeps each flip's maximum |t| and largest
supra-threshold cluster; :func:`flip_null_tasks` / :func:`merge_flip_null` cut
the same work into tasks of a :mod:`petbind.compute` engine (in-process or the
workers of a dask cluster), with the same result bit for bit: ranges of flips
when every subject's values fit :data:`SLAB_BYTES` (merging is concatenation in
flip order), else slabs of planes (:mod:`petbind.stats.voxel_slabs`: a task holds
only its slab's values whatever the number of subjects; the maxima are the
maxima over slabs and the clusters are joined across the slabs' faces).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from petbind.errors import DataError
from petbind.stats.voxel_slabs import Slab, SlabClusters, merge_clusters, plan_slabs, slab_clusters

#: Budget (bytes) of one chunk of flipped data when computing permutation t maps.
CHUNK_BYTES = 64 * 2**20
#: Tasks per worker when the flips run on a compute engine (:func:`flip_null_tasks`):
#: several, so that no worker waits long for the last one.
TASKS_PER_WORKER = 4
#: Budget (bytes) of one block of flipped data in a task (:func:`flip_null_tasks`): smaller
#: than :data:`CHUNK_BYTES` because a worker process also keeps the heap of the scan tasks
#: it ran (compute.WORKER_MALLOC_ENV), so the block adds to it; one flip (n x V float64)
#: when that is larger. The block size does not change any result.
TASK_BLOCK_BYTES = 8 * 2**20
#: Budget (bytes) of the contrast values one task holds (:func:`flip_null_tasks`):
#: ``n x V`` float64 when they fit (ranges of flips over the whole mask), else slabs of
#: planes of at most this many bytes each (at least one plane). With
#: :data:`TASK_BLOCK_BYTES` of flipped data a task's arrays stay under about 2 x 8 MiB
#: plus its t maps and its slab's label volume, whatever the number of subjects (up to
#: 8 MiB / (8 x the largest plane's voxels) subjects; beyond, one plane's values). On a
#: worker each slab task in flight costs a few times its slab (the message received, the
#: array made from it): at 64 subjects (100 flips, one local worker) 16 MiB slabs peaked
#: at 245-259 MiB against 216 MiB with 8 MiB slabs, for about 2 % less CPU; measured
#: worker peaks of this setting: benchmarks/results/flip_memory.md.
SLAB_BYTES = 8 * 2**20
#: Slab tasks submitted at a time per worker on a cluster (:func:`run_flip_tasks`): the
#: one running and the next, so a worker holds at most two slabs' values.
IN_FLIGHT_PER_WORKER = 2

_STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)


def t_statistic(x: NDArray, *, overwrite: bool = False) -> NDArray:
    """One-sample t against 0 along axis -2, in scipy's arithmetic, without p-values.

    ``scipy.stats.ttest_1samp(x, 0.0, axis=-2).statistic`` (scipy 1.17) works on
    the view ``np.moveaxis(x, -2, -1)`` and computes ``mean`` (``np.mean`` over
    the last axis), ``v = mean((x - mean)**2) * (n / (n - 1))`` (``_var``,
    ``ddof=1``), ``denom = sqrt(v / n)`` and ``t = (mean - 0) / denom``, then a
    p-value (``_get_pvalue``, about half of its time) that the sign-flip test
    throws away. This function performs the same numpy operations on the same
    memory layout in the same order, so its t equals scipy's bit for bit for
    finite input (``tests/stats/test_voxel.py`` checks it on random data, n = 2
    to 40, zero variance, constant non-zero values); zero variance gives
    ``+-inf`` or NaN as in scipy. scipy treats input holding NaN differently
    (each voxel's 1-D slice on its own, where numpy sums 8 or more values
    pairwise): the NaN voxels are NaN in both, the others agree to about
    1e-14 relative, not bit for bit; :func:`flip_null` therefore refuses
    non-finite data.

    Parameters
    ----------
    x : ndarray, shape (..., n, V)
        Samples along axis -2 (subjects), float64.
    overwrite : bool
        Use ``x`` (float64 filling its memory in some order of axes, e.g. the
        C, Fortran or "K" order of a product of arrays) as scratch space for the
        deviations (saves one array of ``x``'s size; ``x`` is destroyed). The
        deviations are the same numbers in the same layout either way, so the
        result does not depend on it.

    Returns
    -------
    ndarray, shape (..., V)
        float64 t; NaN where all values are equal to their mean (0 / 0).

    References
    ----------
    scipy.stats.ttest_1samp and scipy.stats._stats_py._var / _moment (scipy
    1.17.1), which this reproduces operation for operation.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-2]
    a = np.moveaxis(x, -2, -1)           # scipy's view: samples along the last axis
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        mean = np.mean(a, axis=-1, keepdims=True)
        if overwrite and x.flags.writeable and _dense(x):
            dev = np.subtract(a, mean, out=a)
        else:
            dev = a - mean               # laid out like a (order "K"), as in scipy
        np.square(dev, out=dev)          # scipy: a_zero_mean**2
        var = np.mean(dev, axis=-1)
        nf = np.asarray(n, dtype=np.float64)
        var *= nf / (nf - 1)             # scipy's ddof correction, as one factor
        denom = np.sqrt(var / n)
        return np.divide(mean[..., 0], denom)


def _dense(x: NDArray) -> bool:
    """``x`` fills its memory without gaps or overlap (contiguous in some order of its axes)."""
    step = x.itemsize
    for ax in np.argsort(np.abs(x.strides), kind="stable"):
        if x.shape[ax] > 1:
            if abs(x.strides[ax]) != step:
                return False
            step *= x.shape[ax]
    return True


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


def _flip_block_size(n: int, v: int, block_bytes: int | None) -> int:
    """Flips per block: ``block_bytes // (8 n V)``, at least 1."""
    budget = CHUNK_BYTES if block_bytes is None else int(block_bytes)
    return max(1, budget // max(1, n * v * 8))


def _null_of_flips(d: NDArray, flips: NDArray, mask: NDArray, threshold: float, block: int,
                   keep_first: bool) -> tuple[NDArray | None, NDArray, NDArray]:
    """Maximum |t| and largest cluster of every flip of ``flips``, ``block`` flips at a time.

    Returns ``(t of flips[0] or None, max |t| (F,), largest cluster (F,))``; the
    first t only when ``keep_first`` (the caller's flip 0 is the identity).
    """
    n_flips = flips.shape[0]
    max_abs = np.empty(n_flips)
    max_cluster = np.empty(n_flips)
    t_first = None
    for i in range(0, n_flips, block):
        tb = t_statistic(flips[i:i + block, :, None] * d[None, :, :], overwrite=True)
        if keep_first and t_first is None:
            t_first = tb[0].copy()
        tb[np.isnan(tb)] = 0.0
        max_abs[i:i + block] = np.abs(tb).max(axis=1)
        max_cluster[i:i + block] = _max_cluster_sizes(tb, mask, threshold)
        del tb
    return t_first, max_abs, max_cluster


def _flip_task(data: tuple[NDArray, NDArray], flips: NDArray, threshold: float, block: int,
               keep_first: bool) -> tuple[NDArray | None, NDArray, NDArray]:
    """Task: :func:`_null_of_flips` of one range of flips (``data`` = ``(d, mask)``, shared)."""
    d, mask = data
    return _null_of_flips(d, flips, mask, threshold, block, keep_first)


@dataclass
class SlabPart:
    """What a slab task returns (:func:`flip_null_tasks` over slabs).

    Attributes
    ----------
    slab : Slab
    flips : (int, int)
        ``[first, end)`` of the flips.
    t_first : ndarray or None
        t of flip 0 at the slab's voxels, in the task of the first flips.
    max_abs_t : ndarray, shape (F,)
        Largest |t| of every flip over the slab's voxels (NaN counted as 0).
    clusters : SlabClusters
    """

    slab: Slab
    flips: tuple[int, int]
    t_first: NDArray | None
    max_abs_t: NDArray
    clusters: SlabClusters


def _order_of(d: NDArray) -> str:
    """``"F"`` when ``d``'s subjects lie closer in memory than its voxels, else ``"C"``.

    The flipped data ``flips[:, :, None] * d[None]`` takes ``d``'s order, and
    numpy sums a voxel's subjects pairwise where they are contiguous (``"F"``)
    but one after another, voxel by voxel, where the voxels are (``"C"``, two
    voxels or more; one voxel alone is summed pairwise again): the last bits of
    t depend on it, so a slab task keeps the whole array's order.
    """
    return "F" if d.ndim == 2 and abs(d.strides[0]) < abs(d.strides[1]) else "C"


def _slab_t(fb: NDArray, d_s: NDArray, order: str) -> NDArray:
    """:func:`t_statistic` of flips ``fb`` of a slab's values, as over the whole mask.

    ``d_s`` is made ``order``-contiguous (:func:`_order_of` of the whole array);
    in ``"C"`` order a one-voxel slab is computed twice side by side, so that its
    sum runs voxel by voxel as over the whole mask.
    """
    d_s = np.asarray(d_s, order=order)
    if order == "C" and d_s.shape[1] == 1:
        return t_statistic(fb[:, :, None] * np.concatenate([d_s, d_s], axis=1)[None],
                           overwrite=True)[:, :1]
    return t_statistic(fb[:, :, None] * d_s[None, :, :], overwrite=True)


def _slab_task(data: tuple[NDArray, NDArray], flips: NDArray, threshold: float, block: int,
               keep_first: bool, slab: Slab, first: int, order: str = "C") -> SlabPart:
    """Task: maxima and cluster summaries of flips ``first, first + 1, ...`` of one slab.

    ``data`` is ``(d_slab (n, V_slab), the slab's mask)``; ``order`` as :func:`_slab_t`.
    """
    d_s, mask_s = data
    d_s = np.asarray(d_s, order=order)
    n_flips = flips.shape[0]
    max_abs = np.empty(n_flips)
    rows = None
    t_first = None
    for i in range(0, n_flips, block):
        tb = _slab_t(flips[i:i + block], d_s, order)
        if keep_first and t_first is None:
            t_first = tb[0].copy()
        tb[np.isnan(tb)] = 0.0
        max_abs[i:i + block] = np.abs(tb).max(axis=1)
        rows = slab_clusters(tb, mask_s, threshold, slab.seam_lo, slab.seam_hi, rows)
        del tb
    return SlabPart(slab, (first, first + n_flips), t_first, max_abs, rows.done())


def _checked(d: NDArray) -> NDArray:
    d = np.asarray(d, dtype=np.float64)
    if not np.all(np.isfinite(d)):
        raise DataError("the contrast values hold NaN or infinite values", field="d",
                        fix="pass only the voxels where every subject's value is finite "
                            "(sign_flip_test drops the others from the mask)")
    return d


def flip_null_tasks(d: NDArray, flips: NDArray, mask: NDArray, threshold: float, engine: Any,
                    *, key: str = "petbind-voxel-flips", block_bytes: int | None = None,
                    slab_bytes: int | None = None) -> list[Any]:
    """The flips of :func:`flip_null` as tasks of a compute engine (see :func:`merge_flip_null`).

    When ``d`` (``n x V x 8`` bytes) fits ``slab_bytes``, the flips are cut
    into contiguous ranges of whole blocks,
    ``min(blocks, TASKS_PER_WORKER x engine.n_workers)`` ranges (several per
    worker, so the workers stay busy to the end); ``(d, mask)`` is sent to the
    workers once (:meth:`petbind.compute.Engine.scatter`), each task gets only
    its range of flips.

    Otherwise the mask is cut into slabs of whole planes along its first axis
    (:func:`petbind.stats.voxel_slabs.plan_slabs`), each at most ``slab_bytes``
    of values and at least ``TASKS_PER_WORKER x engine.n_workers`` slabs where
    the planes allow; a task gets one slab's values and mask as its arguments
    (nothing is broadcast: a worker holds only the slabs of the tasks it runs)
    and runs every flip over them, in blocks of ``block_bytes``. Where there are
    fewer slabs than that, each slab's flips are cut into the same ranges
    (its values then travel once per range). A task returns the maxima and
    cluster summaries of its slab (:class:`SlabPart`); a task's arrays take
    about ``slab_bytes + block_bytes`` whatever the number of subjects (at least
    one plane's values: ``n x`` the largest plane's voxels ``x 8`` bytes).

    A flip's t at a voxel does not depend on which flips share its block or
    which voxels share its slab (:func:`_slab_t`: a slab keeps ``d``'s memory
    order, which decides numpy's order of summation), a maximum over slabs is the
    maximum, and clusters are joined exactly across slab faces, so the merged
    result equals :func:`flip_null` without an engine bit for bit.

    Parameters
    ----------
    d, flips, mask, threshold
        As :func:`flip_null`.
    block_bytes : int, optional
        Budget of one block's flipped data in a task; :data:`TASK_BLOCK_BYTES` when omitted.
    slab_bytes : int, optional
        Budget of one task's values; :data:`SLAB_BYTES` when omitted.
    engine : petbind.compute.Engine
        Where the tasks will run (its ``n_workers`` and ``scatter``).
    key : str
        Prefix of the task keys (unique among the tasks of one ``engine.run``).

    Returns
    -------
    list of petbind.compute.Task
        Task ``k`` is ``f"{key}-{k:04d}"``; ranges of flips: in flip order;
        slabs: flip range by flip range, slab by slab.
    """
    from petbind.compute import Task

    d = _checked(d)
    n, v = d.shape
    mask = np.asarray(mask, dtype=bool)
    budget = TASK_BLOCK_BYTES if block_bytes is None else block_bytes
    wanted = TASKS_PER_WORKER * max(1, int(engine.n_workers))
    if n * v * 8 > (SLAB_BYTES if slab_bytes is None else slab_bytes):
        slabs = plan_slabs(mask, n, min_slabs=wanted,
                           slab_bytes=SLAB_BYTES if slab_bytes is None else slab_bytes)
        n_ranges = 1 if len(slabs) >= wanted else min(flips.shape[0], -(-wanted // len(slabs)))
        fcuts = [k * flips.shape[0] // n_ranges for k in range(n_ranges + 1)]
        order = _order_of(d)
        # views: a task makes its slab contiguous in d's order (a copy of one slab at a
        # time in this process; dask sends the slab alone)
        data = [(d[:, s.voxels[0]:s.voxels[1]], s.mask_of(mask)) for s in slabs]
        tasks = []
        for a, b in itertools.pairwise(fcuts):
            part = np.ascontiguousarray(flips[a:b])
            for s, ds in zip(slabs, data, strict=True):
                tasks.append(Task(f"{key}-{len(tasks):04d}", _slab_task,
                                  (ds, part, float(threshold),
                                   _flip_block_size(n, max(2, s.n_voxels), budget), a == 0, s,
                                   a, order)))
        return tasks
    block = _flip_block_size(n, v, budget)
    n_blocks = -(-flips.shape[0] // block)
    n_tasks = max(1, min(n_blocks, wanted))
    cuts = [min(k * n_blocks // n_tasks * block, flips.shape[0]) for k in range(n_tasks + 1)]
    shared = engine.scatter((d, mask))
    return [Task(f"{key}-{k:04d}", _flip_task,
                 (shared, np.ascontiguousarray(flips[a:b]), float(threshold), block, k == 0))
            for k, (a, b) in enumerate(itertools.pairwise(cuts))]


def run_flip_tasks(engine: Any, tasks: Sequence[Any]) -> dict[str, Any]:
    """``engine.run(tasks)`` of :func:`flip_null_tasks`' tasks (of one or several tests).

    Slab tasks carry their slab's values as arguments, and a cluster sends a
    submitted task to a worker at once: they are therefore submitted
    :data:`IN_FLIGHT_PER_WORKER` ``x engine.n_workers`` at a time (the next as
    one finishes), so that a worker holds the values of the task it runs and of
    the next, not of every task queued on it.
    """
    if any(t.func is _slab_task for t in tasks):
        return engine.run(tasks, max_in_flight=IN_FLIGHT_PER_WORKER
                          * max(1, int(engine.n_workers)))
    return engine.run(tasks)


def _merge_slabs(parts: Sequence[SlabPart]) -> FlipNull:
    """:func:`merge_flip_null` of slab tasks: maxima over slabs, clusters joined across faces."""
    ranges = sorted({p.flips for p in parts})
    max_abs, max_cluster = [], []
    t_obs = None
    for r in ranges:
        mine = sorted((p for p in parts if p.flips == r), key=lambda p: p.slab.index)
        if [p.slab.index for p in mine] != list(range(len(mine))):
            raise ValueError(f"the slab tasks of flips {r} are incomplete")
        if r == ranges[0]:
            t_obs = np.concatenate([p.t_first for p in mine])
        max_abs.append(np.max(np.stack([p.max_abs_t for p in mine]), axis=0))
        max_cluster.append(merge_clusters([p.clusters for p in mine], [p.slab for p in mine]))
    return FlipNull(t_obs=t_obs, max_abs_t=np.concatenate(max_abs),
                    max_cluster=np.concatenate(max_cluster))


def merge_flip_null(parts: Sequence[Any]) -> FlipNull:
    """One :class:`FlipNull` from the results of :func:`flip_null_tasks`' tasks, in their order.

    Ranges of flips are concatenated; slab tasks (:class:`SlabPart`) are merged
    by :func:`petbind.stats.voxel_slabs.merge_clusters` (in any order).
    """
    if parts and isinstance(parts[0], SlabPart):
        return _merge_slabs(parts)
    return FlipNull(t_obs=parts[0][0],
                    max_abs_t=np.concatenate([p[1] for p in parts]),
                    max_cluster=np.concatenate([p[2] for p in parts]))


def flip_null(d: NDArray, flips: NDArray, mask: NDArray, threshold: float,
              block_bytes: int | None = None, *, engine: Any = None,
              slab_bytes: int | None = None) -> FlipNull:
    """Null distributions of the maximum |t| and the largest cluster, in blocks of flips.

    Flips are processed ``B`` at a time, ``B = block_bytes // (8 n V)``
    (at least 1): the block's flipped data ``(B, n, V)`` float64 (reused in
    place for the deviations, :func:`t_statistic`) and its t maps ``(B, V)``
    exist only while the block is processed, and only the block's maxima and
    cluster sizes are kept. Peak memory is therefore about ``block_bytes`` plus
    ``O(F)``, constant in the number of flips. Each t is scipy's
    ``ttest_1samp`` statistic bit for bit (:func:`t_statistic`; a voxel's t
    does not depend on how flips are grouped), so the result equals the
    all-flips computation bit for bit, with or without an engine.

    Parameters
    ----------
    d : ndarray, shape (n, V)
        Per-subject contrast values at the V voxels of ``mask``; finite.
    flips : ndarray, shape (F, n)
        Sign flips, row 0 the identity (see :func:`petbind.stats.voxel.sign_flips`).
    mask : ndarray of bool, shape (X, Y, Z)
        The voxels of ``d`` (C order), for cluster labelling.
    threshold : float
        Cluster-forming |t|.
    block_bytes : int, optional
        Budget of one block's flipped data, bytes; :data:`CHUNK_BYTES` when omitted
        (:data:`TASK_BLOCK_BYTES` in the tasks of an engine).
    engine : petbind.compute.Engine, optional
        Run the flips as tasks there (:func:`flip_null_tasks`: in this
        process for ``sync``, on the workers of a dask cluster); None: here,
        one block after another.
    slab_bytes : int, optional
        With an engine: budget of one task's values (:func:`flip_null_tasks`).

    Returns
    -------
    FlipNull

    Raises
    ------
    DataError
        ``d`` holds NaN or infinite values.
    """
    d = _checked(d)
    if engine is not None:
        tasks = flip_null_tasks(d, flips, mask, threshold, engine, block_bytes=block_bytes,
                                slab_bytes=slab_bytes)
        results = run_flip_tasks(engine, tasks)
        return merge_flip_null([results[t.key] for t in tasks])
    n, v = d.shape
    t_obs, max_abs, max_cluster = _null_of_flips(
        d, flips, mask, threshold, _flip_block_size(n, v, block_bytes), True)
    return FlipNull(t_obs=t_obs, max_abs_t=max_abs, max_cluster=max_cluster)
