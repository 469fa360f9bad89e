"""Sign-flip tasks over slabs of planes: flip_null's null bit for bit, bounded task data."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, label

from petbind.compute import open_engine
from petbind.errors import DataError
from petbind.stats import voxel_null
from petbind.stats.voxel_null import (
    SlabPart,
    flip_null,
    flip_null_tasks,
    merge_flip_null,
    run_flip_tasks,
)
from petbind.stats.voxel_slabs import Slab, merge_clusters, plan_slabs, slab_clusters

# --- clusters of hand-made t maps, slab by slab, against the voxel counts by construction


def _by_slabs(mask: np.ndarray, tmaps: np.ndarray, cuts=None, thr: float = 1.0) -> np.ndarray:
    """Largest cluster of every row of ``tmaps`` (F, V) from per-slab summaries, merged."""
    slabs = plan_slabs(mask, 3, slab_bytes=1, cuts=cuts)
    parts = [slab_clusters(tmaps[:, s.voxels[0]:s.voxels[1]], s.mask_of(mask), thr,
                           s.seam_lo, s.seam_hi).done() for s in slabs]
    return merge_clusters(parts, slabs)


def _whole(mask: np.ndarray, t: np.ndarray, thr: float = 1.0) -> int:
    """Largest cluster of either sign of one t map by labelling the whole volume."""
    best = 0
    for sign in (1, -1):
        vol = np.zeros(mask.shape, bool)
        vol[mask] = sign * t > thr
        lab, k = label(vol, structure=np.ones((3, 3, 3), bool))
        if k:
            best = max(best, int(np.bincount(lab.ravel())[1:].max()))
    return best


def _t_of(mask: np.ndarray, pos=(), neg=()) -> np.ndarray:
    """t map at the voxels of ``mask``: +5 at ``pos``, -5 at ``neg``, 0 elsewhere."""
    vol = np.zeros(mask.shape)
    for ijk in pos:
        vol[ijk] = 5.0
    for ijk in neg:
        vol[ijk] = -5.0
    assert all(mask[ijk] for ijk in (*pos, *neg))
    return vol[mask]


SHAPE = (8, 5, 6)
U_SHAPE = [(0, 0, 0), (1, 0, 0), (2, 0, 0), (3, 0, 0), (4, 0, 0), (4, 0, 1), (4, 0, 2),
           (4, 0, 3), (3, 0, 3), (2, 0, 3), (1, 0, 3), (0, 0, 3), (0, 1, 4)]
CASES = {
    # 13 voxels: the two legs (k = 0 and k = 3) meet only in plane 4, so in planes 0-3
    # each slab holds two separate pieces that the merge must join through plane 4
    "u_across_slabs": (U_SHAPE, (), 13),
    # planes 2..6 joined by corners only ((+1, +1, +1) steps): one cluster of 5
    "corner_chain": ([(2, 0, 0), (3, 1, 1), (4, 2, 2), (5, 3, 3), (6, 4, 4)], (), 5),
    # two apart in j or k between neighbouring planes: not neighbours (3 clusters of 1)
    "two_apart": ([(2, 0, 0), (3, 2, 0), (4, 2, 2)], (), 1),
    # last k of row 1 of plane 2 and first k of row 2 of plane 3 are one apart in flat
    # order but far apart on the grid (no wrap-around at the crop's edge)
    "no_wrap": ([(2, 1, 5), (3, 2, 0)], (), 1),
    # the last row of plane 2 and the first row of plane 3, far apart: no wrap in j
    "no_wrap_rows": ([(2, 4, 3), (3, 0, 3)], (), 1),
    # a positive and a negative cluster face to face: 2 and 3 voxels, never 5
    "signs_apart": ([(2, 1, 1), (2, 1, 2)], [(3, 1, 1), (3, 1, 2), (3, 2, 3)], 3),
    # a negative snake through every plane, zig-zagging in j and k
    "negative_snake": ((), [(p, 1 + p % 2, (1, 2, 3, 2, 1, 2, 3, 2)[p]) for p in range(8)], 8),
    "nothing": ((), (), 0),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("cuts", [None, list(range(8)), [0, 3, 4, 7], [0, 5]])
def test_clusters_across_slab_faces_have_the_sizes_of_their_voxels(case, cuts):
    """Slabs of 1 plane, uneven slabs and one cut: each case's largest cluster is its
    voxel count by construction and the whole volume's labelling; all cases as rows of
    one merge (row offsets kept apart)."""
    mask = np.ones(SHAPE, bool)
    pos, neg, expected = CASES[case]
    t = _t_of(mask, pos, neg)
    assert _whole(mask, t) == expected
    got = _by_slabs(mask, t[None], cuts)
    assert got.tolist() == [expected]
    every = np.stack([_t_of(mask, *CASES[c][:2]) for c in sorted(CASES)])
    assert _by_slabs(mask, every, cuts).tolist() == [CASES[c][2] for c in sorted(CASES)]


def test_a_plane_outside_the_mask_separates_clusters():
    """Plane 3 out of the mask (an empty slab at one plane per slab): voxels of planes 2
    and 4 at the same (j, k) are not neighbours; planes 3 and 4 then share no face."""
    mask = np.ones(SHAPE, bool)
    mask[3] = False
    mask[:, 0, :] = False                    # a crop that is not the whole plane
    t = _t_of(mask, [(1, 1, 1), (2, 1, 1), (4, 1, 1), (4, 2, 2), (5, 3, 3)])
    assert _whole(mask, t) == 3
    for cuts in (list(range(8)), None, [0, 4]):
        assert _by_slabs(mask, t[None], cuts).tolist() == [3]
    slabs = plan_slabs(mask, 3, slab_bytes=1, cuts=list(range(8)))
    assert [s.planes for s in slabs] == [(p, p + 1) for p in (0, 1, 2, 4, 5, 6, 7)]
    assert [(s.seam_lo, s.seam_hi) for s in slabs] == [
        (False, True), (True, True), (True, False), (False, True), (True, True),
        (True, True), (True, False)]
    assert slabs[0].crop == ((1, 5), (0, 6))


def test_plan_slabs_packs_planes_within_the_budget_and_covers_every_voxel():
    rng = np.random.default_rng(2)
    mask = rng.random((12, 7, 9)) < 0.6
    mask[:2] = False                          # leading empty planes belong to no slab
    mask[6] = False
    per_plane = mask.reshape(12, -1).sum(axis=1)
    n = 5
    budget = 8 * n * 100
    slabs = plan_slabs(mask, n, slab_bytes=budget)
    assert slabs[0].planes[0] == 2 and slabs[-1].planes[1] == 12
    assert [s.voxels[0] for s in slabs[1:]] == [s.voxels[1] for s in slabs[:-1]]
    assert slabs[0].voxels[0] == 0 and slabs[-1].voxels[1] == mask.sum()
    for s in slabs:
        assert s.n_voxels == per_plane[s.planes[0]:s.planes[1]].sum() == s.mask_of(mask).sum()
        assert 8 * n * s.n_voxels <= budget or s.planes[1] - s.planes[0] == 1
    # min_slabs cuts finer than the budget asks
    assert len(plan_slabs(mask, n, slab_bytes=2**40, min_slabs=4)) >= 4
    with pytest.raises(ValueError):
        plan_slabs(mask, n, slab_bytes=1, cuts=[1, 4])
    with pytest.raises(ValueError):
        plan_slabs(mask, n, slab_bytes=1, cuts=[0, 4, 4])


# --- whole sign-flip nulls against flip_null


def _smooth_case(n: int, shape=(9, 6, 7), seed: int = 0, holes: bool = True):
    """Smoothed random contrasts (clusters of tens of voxels under the null) with an effect,
    a mask with a hole plane, a plane of one voxel and a ragged edge."""
    rng = np.random.default_rng(seed)
    mask = rng.random(shape) < 0.9
    if holes:
        mask[4] = False                       # a hole: no voxel in plane 4
        mask[1] = False
        mask[1, 2, 3] = True                  # a plane of one voxel
    x = gaussian_filter(rng.standard_normal((n, *shape)), (0, 1.2, 1.2, 1.2))
    x[:, 2:8, 1:5, 1:6] += 0.25
    d = x[:, mask] / x.std()
    flips = np.vstack([np.ones(n), rng.choice([-1.0, 1.0], size=(40, n))])
    return d, flips, mask


class _Workers:
    """An in-process engine that reports ``n`` workers (the task split of a cluster)."""

    def __init__(self, engine, n):
        self._engine, self.n_workers = engine, n

    def scatter(self, obj):
        return self._engine.scatter(obj)

    def run(self, tasks, on_done=None, max_in_flight=None):
        assert max_in_flight == voxel_null.IN_FLIGHT_PER_WORKER * self.n_workers
        return self._engine.run(tasks, on_done, max_in_flight=max_in_flight)


def _same(a, b) -> None:
    for name in ("t_obs", "max_abs_t", "max_cluster"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), name


@pytest.mark.parametrize("n", [7, 9, 12])
@pytest.mark.parametrize("slab_planes", [1, 3])
@pytest.mark.parametrize("n_workers", [1, 3])
@pytest.mark.parametrize("order", ["C", "F"])
def test_slab_tasks_give_flip_nulls_null_bit_for_bit(n, slab_planes, n_workers, order):
    """Slabs of 1 plane (one of them a single voxel) and of about 3 planes, 1 flip range
    or several per slab (3 workers), merged in any order, values in C or Fortran order
    (numpy sums a voxel's subjects in another order in each; n >= 8 shows it): t, max |t|
    and largest cluster equal to flip_null in this process, bit for bit; clusters do
    cross slabs."""
    d, flips, mask = _smooth_case(n, seed=n)
    d = np.asarray(d, order=order)
    assert d.flags[f"{order}_CONTIGUOUS"]
    thr = 1.0
    ref = flip_null(d, flips, mask, thr)
    plane_max = int(mask.reshape(mask.shape[0], -1).sum(axis=1).max())
    budget = 8 * n * (1 if slab_planes == 1 else plane_max * slab_planes)
    with open_engine("sync") as engine:
        eng = _Workers(engine, n_workers)
        tasks = flip_null_tasks(d, flips, mask, thr, eng, slab_bytes=budget, block_bytes=1
                                if n == 7 else None)
        results = run_flip_tasks(eng, tasks)
        parts = [results[t.key] for t in tasks]
        assert all(isinstance(p, SlabPart) for p in parts)
        slabs = {p.slab.index: p.slab for p in parts}
        assert len(slabs) >= (6 if slab_planes == 1 else 3)
        n_ranges = len({p.flips for p in parts})
        assert n_ranges == (1 if len(slabs) >= 4 * n_workers else
                            -(-4 * n_workers // len(slabs)))
        assert len(tasks) == n_ranges * len(slabs)
        _same(merge_flip_null(parts), ref)
        _same(merge_flip_null(parts[::-1]), ref)
        _same(flip_null(d, flips, mask, thr, engine=eng, slab_bytes=budget), ref)
    if slab_planes == 1:
        assert min(s.n_voxels for s in slabs.values()) == 1
    # some flip's largest cluster is larger than any slab: it spans several
    assert ref.max_cluster.max() > max(s.n_voxels for s in slabs.values())


def test_default_slab_budget_and_in_process_result(monkeypatch):
    """With the module's budgets made small, flip_null on an engine uses slabs (as the
    study stage does) and agrees with flip_null in this process, which never cuts slabs."""
    d, flips, mask = _smooth_case(11, seed=3)
    ref = flip_null(d, flips, mask, 1.3)
    monkeypatch.setattr(voxel_null, "SLAB_BYTES", 8 * 11 * 60)
    with open_engine("sync") as engine:
        tasks = flip_null_tasks(d, flips, mask, 1.3, engine)
        assert len(tasks) >= 4 and all(isinstance(t.args[5], Slab) for t in tasks)
        _same(flip_null(d, flips, mask, 1.3, engine=engine), ref)
    _same(flip_null(d, flips, mask, 1.3), ref)


@pytest.mark.parametrize("n", [5, 40])
def test_a_task_holds_only_its_slab_whatever_the_number_of_subjects(n):
    """Every task's pickled arguments (what a dask worker receives) stay within the slab
    budget plus the flips, for 5 and 40 subjects, and the slabs hold every voxel once."""
    rng = np.random.default_rng(n)
    mask = np.ones((30, 10, 10), bool)
    d = rng.standard_normal((n, mask.sum()))
    flips = np.vstack([np.ones(n), rng.choice([-1.0, 1.0], size=(99, n))])
    budget = 8 * n * 350
    assert d.nbytes > 8 * budget
    with open_engine("sync") as engine:
        tasks = flip_null_tasks(d, flips, mask, 2.0, engine, slab_bytes=budget)
    sent = [len(pickle.dumps(t.args)) for t in tasks]
    assert max(sent) <= budget + flips.nbytes + 8192
    assert sum(t.args[0][0].shape[1] for t in tasks) == mask.sum()
    part = tasks[0].func(*tasks[0].args)
    again = pickle.loads(pickle.dumps(part))
    assert again.clusters.inner.tobytes() == part.clusters.inner.tobytes()


def test_face_lists_hold_only_the_supra_threshold_voxels_of_shared_faces():
    """What a slab sends back per flip: one entry per supra-threshold voxel (either sign)
    on its faces shared with a neighbour, counted here from the t maps."""
    d, flips, mask = _smooth_case(9, seed=5, holes=False)
    thr = 1.0
    slabs = plan_slabs(mask, 9, slab_bytes=8 * 9 * 100)
    t = np.stack([voxel_null.t_statistic(f[:, None] * d) for f in flips])
    t[np.isnan(t)] = 0.0
    for s in slabs:
        part = slab_clusters(t[:, s.voxels[0]:s.voxels[1]], s.mask_of(mask), thr,
                             s.seam_lo, s.seam_hi).done()
        ms = s.mask_of(mask)
        vol = np.zeros((t.shape[0], *ms.shape))
        vol[:, ms] = np.abs(t[:, s.voxels[0]:s.voxels[1]]) > thr
        lo = int(vol[:, 0].sum()) if s.seam_lo else 0
        hi = int(vol[:, -1].sum()) if s.seam_hi else 0
        assert part.lo_pos.size == lo and part.hi_pos.size == hi
        assert part.lo_off[-1] == lo and part.inner.size == 2 * t.shape[0]


def test_slab_tasks_refuse_non_finite_values():
    d, flips, mask = _smooth_case(8, seed=1)
    d[2, 5] = np.nan
    with open_engine("sync") as engine, pytest.raises(DataError):
        flip_null_tasks(d, flips, mask, 1.0, engine, slab_bytes=1)


def test_large_components_are_summed_across_summaries_of_different_integer_types():
    """A slab whose component exceeds 65,535 voxels reports it as uint32, its neighbour
    as uint16: the merged cluster is every supra-threshold voxel, 50 x 40 x 40 = 80,000,
    and a separate negative cluster of 1,600 (a plane) stays apart."""
    mask = np.ones((51, 40, 40), bool)
    t = np.full(mask.shape, 5.0)
    t[50] = -5.0
    slabs = plan_slabs(mask, 3, slab_bytes=1, cuts=[0, 45])
    parts = [slab_clusters(t[None, s.planes[0]:s.planes[1]].reshape(1, -1), s.mask_of(mask),
                           1.0, s.seam_lo, s.seam_hi).done() for s in slabs]
    assert parts[0].sizes.dtype == np.uint32 and parts[1].sizes.dtype == np.uint16
    assert merge_clusters(parts, slabs).tolist() == [80_000]
    assert _whole(mask, t.ravel()) == 80_000
