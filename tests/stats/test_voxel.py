"""Voxel statistics: sign-flip FWE equals exact enumeration done here, clusters, FDR."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from petbind.errors import DataError
from petbind.stats.voxel import sign_flip_test, sign_flips, smooth_maps


def _t_by_hand(d: np.ndarray) -> np.ndarray:
    """t = mean / (sd / sqrt(n)) at each voxel, written out with loops over voxels."""
    n = d.shape[0]
    out = np.empty(d.shape[1])
    for v in range(d.shape[1]):
        x = d[:, v]
        m = sum(x) / n
        sd = math.sqrt(sum((xi - m) ** 2 for xi in x) / (n - 1))
        out[v] = m / (sd / math.sqrt(n))
    return out


def test_voxel_fwe_p_equals_exact_enumeration_of_16_sign_flips():
    rng = np.random.default_rng(0)
    shape = (4, 3, 3)
    diffs = rng.standard_normal((4, *shape)) + 0.8
    mask = np.ones(shape, dtype=bool)
    mask[0, 0, 0] = False
    res = sign_flip_test(diffs, mask, cluster_forming_p=0.05)
    d = diffs[:, mask]
    maxima = []
    for signs in itertools.product((1, -1), repeat=4):
        maxima.append(np.max(np.abs(_t_by_hand(d * np.array(signs)[:, None]))))
    t_obs = _t_by_hand(d)
    expected = np.array([np.mean([m >= abs(t) - 1e-12 for m in maxima]) for t in t_obs])
    np.testing.assert_allclose(res.p_fwe[mask], expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(res.t[mask], t_obs, rtol=1e-12)
    assert res.info["exact"] and res.info["n_flips"] == 16
    assert res.info["min_attainable_p"] == 1 / 16
    assert res.p_fwe[mask].min() >= 1 / 16
    assert res.t[0, 0, 0] == 0 and res.p[0, 0, 0] == 1


def test_uncorrected_p_and_fdr_equal_scipy():
    rng = np.random.default_rng(1)
    diffs = rng.standard_normal((5, 5, 4, 3)) + 0.5
    mask = np.ones((5, 4, 3), dtype=bool)
    res = sign_flip_test(diffs, mask)
    p = stats.ttest_1samp(diffs.reshape(5, -1), 0.0).pvalue
    np.testing.assert_allclose(res.p[mask], p, rtol=1e-10)
    np.testing.assert_allclose(res.p_fdr[mask], stats.false_discovery_control(p), rtol=1e-10)
    np.testing.assert_allclose(res.effect[mask], diffs.reshape(5, -1).mean(0), rtol=1e-12)


def test_random_flips_are_seeded_and_start_with_identity_when_2n_exceeds_limit():
    f1, exact = sign_flips(8, n_permutations=50, seed=3)
    f2, _ = sign_flips(8, n_permutations=50, seed=3)
    assert not exact and f1.shape == (50, 8)
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(f1[0], np.ones(8))
    f3, exact3 = sign_flips(8, n_permutations=256)
    assert exact3 and len({tuple(r) for r in f3}) == 256


def test_one_subject_cannot_be_sign_flipped():
    with pytest.raises(DataError):
        sign_flips(1)


def test_clusters_find_planted_blocks_with_peak_coordinates_and_atlas_label():
    rng = np.random.default_rng(2)
    shape = (12, 10, 8)
    n = 6
    diffs = 0.3 * rng.standard_normal((n, *shape))
    diffs[:, 2:5, 2:5, 2:4] += 3.0        # 18-voxel positive block
    diffs[:, 8:10, 6:8, 5:6] -= 3.0       # 4-voxel negative block
    diffs[:, 3, 3, 3] += 2.0              # positive peak inside the block
    atlas = np.zeros(shape, dtype=int)
    atlas[:6] = 1
    atlas[6:] = 2
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10, -5, 0]
    res = sign_flip_test(diffs, np.ones(shape, bool), affine=affine, cluster_forming_p=1e-4,
                         atlas=atlas, atlas_names={1: "NAcc", 2: "VP"})
    cl = res.clusters
    pos = cl[cl.sign == 1].iloc[0]
    neg = cl[cl.sign == -1].iloc[0]
    assert pos.size_voxels == 18 and neg.size_voxels == 4
    assert pos.size_mm3 == pytest.approx(18 * 8.0)
    assert (pos.peak_i, pos.peak_j, pos.peak_k) == (3, 3, 3)
    assert (pos.peak_x, pos.peak_y, pos.peak_z) == (-4.0, 1.0, 6.0)
    assert pos.peak_region == "NAcc" and neg.peak_region == "VP"
    assert res.info["n_flips"] == 64
    # the largest cluster under every flip but identity and all-minus is smaller
    assert pos.p_fwe_cluster == pytest.approx(2 / 64)
    assert len(cl) == 2


def test_smoothing_keeps_a_constant_map_constant_inside_the_mask():
    mask = np.zeros((9, 9, 9), bool)
    mask[2:7, 2:7, 2:7] = True
    maps = np.full((2, 9, 9, 9), 5.0)
    out = smooth_maps(maps, mask, fwhm_mm=4.0, voxel_size_mm=(2, 2, 2))
    np.testing.assert_allclose(out[:, mask], 5.0, rtol=1e-12)
    assert np.all(out[:, ~mask] == 0)


def _reference_before_streaming(diffs, mask, flips, thr):
    """The permutation core as it was before flips were streamed in blocks (kept here
    verbatim as the reference): every flip's t map held at once, F x V float64."""
    from scipy.ndimage import label

    d = diffs[:, mask]
    tf = stats.ttest_1samp(flips[:, :, None] * d[None, :, :], 0.0, axis=-2).statistic
    abs_t = np.where(np.isnan(tf), 0.0, np.abs(tf))
    null_max = np.sort(abs_t.max(axis=1))
    p_fwe = (null_max.size - np.searchsorted(null_max, abs_t[0] * (1 - 1e-12), side="left")
             ) / null_max.size
    sizes = np.zeros(tf.shape[0])
    vol = np.zeros(mask.shape, dtype=bool)
    for f, t in enumerate(np.where(np.isnan(tf), 0.0, tf)):
        best = 0
        for sign in (1.0, -1.0):
            vol[:] = False
            vol[mask] = sign * t > thr
            lab, k = label(vol, structure=np.ones((3, 3, 3), bool))
            if k:
                best = max(best, int(np.bincount(lab.ravel())[1:].max()))
        sizes[f] = best
    return tf[0], p_fwe, sizes


def _reference_case():
    rng = np.random.default_rng(7)
    shape = (6, 5, 5)
    n = 12
    diffs = rng.standard_normal((n, *shape))
    diffs[:, 1:4, 1:3, 1:4] += 1.2          # a real effect: clusters under identity
    diffs[:, 5, 4, 4] = 0.0                 # zero variance: t is NaN there
    mask = np.ones(shape, bool)
    mask[0, 0, :] = False
    return n, diffs, mask


@pytest.mark.parametrize("scheduler", [None, "sync"])
@pytest.mark.parametrize("block_bytes", [1, 7 * 12 * 8 * 150, None])
def test_streamed_flips_give_the_p_values_of_all_flips_held_at_once(monkeypatch, block_bytes,
                                                                    scheduler):
    """Blocks of 1 flip, of 7 flips (an uneven last block) and the default budget give
    the same t, voxel FWE p and cluster FWE p, bit for bit, as the reference, in this
    process (``scheduler`` None) and as tasks of the in-process compute engine (4 ranges
    of flips, merged)."""
    import petbind.stats.voxel as voxel
    from petbind.compute import open_engine
    from petbind.stats import voxel_null

    n, diffs, mask = _reference_case()
    if block_bytes is not None:
        monkeypatch.setattr(voxel, "CHUNK_BYTES", block_bytes)
        monkeypatch.setattr(voxel_null, "TASK_BLOCK_BYTES", block_bytes)
    with open_engine(scheduler or "sync") as engine:
        res = sign_flip_test(diffs, mask, n_permutations=200, seed=11, cluster_forming_p=0.05,
                             engine=engine if scheduler else None)
    assert res.info["n_flips"] == 200 and not res.info["exact"]
    flips, _ = sign_flips(n, 200, seed=11)
    thr = res.info["cluster_forming_t"]
    t0, p_fwe, null_clusters = _reference_before_streaming(diffs, mask, flips, thr)
    np.testing.assert_array_equal(res.t[mask], np.where(np.isnan(t0), 0.0, t0))
    np.testing.assert_array_equal(res.p_fwe[mask], p_fwe)
    assert res.p_fwe[mask].min() < 0.05 < res.p_fwe[mask].max()
    assert len(res.clusters) >= 1
    expected = [float(np.mean(null_clusters >= s)) for s in res.clusters.size_voxels]
    assert res.clusters.p_fwe_cluster.tolist() == expected
    null = voxel.flip_null(diffs[:, mask], flips, mask, thr, block_bytes=block_bytes)
    np.testing.assert_array_equal(null.max_cluster, null_clusters)


def test_memory_of_the_flips_does_not_grow_with_their_number():
    """Peak traced allocation of 3000 flips is that of 100 flips (blocks of 10 flips),
    far below the 3000 x V float64 the flips would take at once (t > 50: no clusters
    to label, so the test is quick)."""
    import tracemalloc

    from petbind.stats.voxel import flip_null

    rng = np.random.default_rng(3)
    mask = np.ones((10, 10, 10), bool)
    n, v = 14, mask.sum()
    d = rng.standard_normal((n, v))
    peaks = {}
    for n_flips in (100, 3000):
        flips, _ = sign_flips(n, n_flips, seed=1)
        tracemalloc.start()
        null = flip_null(d, flips, mask, 50.0, block_bytes=10 * n * v * 8)
        peaks[n_flips] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert null.max_abs_t.shape == (n_flips,) and np.all(null.max_abs_t > 0)
    all_at_once = 3000 * v * 8
    assert peaks[3000] < 1.2 * peaks[100] + 3000 * 8 * 4
    assert peaks[3000] < all_at_once / 4


def _same_result(a, b) -> None:
    for name in ("t", "p", "p_fwe", "p_fdr", "effect", "mask"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.clusters.equals(b.clusters) and a.info == b.info


@pytest.mark.parametrize("fwhm", [0.0, 5.0])
def test_values_at_the_mask_voxels_give_the_result_of_whole_maps(fwhm):
    """(n, V) values at the mask's voxels (what the study stage holds) and the (n, X, Y, Z)
    maps give the same test bit for bit, with voxels undefined in one subject, an effect
    map and smoothing."""
    rng = np.random.default_rng(12)
    shape = (8, 7, 6)
    diffs = rng.standard_normal((6, *shape)) + 0.4
    effect = 10 * diffs + rng.standard_normal(diffs.shape)
    diffs[2, 3, 3, 3] = np.nan                  # drops out of the mask
    effect[1, 4, 4, 4] = np.nan                 # nanmean of the others
    mask = np.zeros(shape, bool)
    mask[1:7, 1:6, 1:5] = True
    kw = {"affine": np.diag([2.0, 2.0, 2.0, 1.0]), "cluster_forming_p": 0.05,
          "smoothing_fwhm_mm": fwhm, "n_permutations": 64}
    whole = sign_flip_test(diffs, mask, effect=effect, **kw)
    masked = sign_flip_test(diffs[:, mask], mask, effect=effect[:, mask], **kw)
    _same_result(masked, whole)
    assert not whole.mask[3, 3, 3] and whole.mask.sum() == mask.sum() - 1
    assert len(whole.clusters) >= 1


@pytest.mark.slow
def test_flips_on_a_local_cluster_of_2_processes_equal_the_serial_test():
    """The flips as tasks on 2 worker processes (data scattered once, 8 ranges of flips)
    give the in-process test's maps and clusters bit for bit, and the reference's p."""
    from petbind.compute import open_engine

    n, diffs, mask = _reference_case()
    kw = {"n_permutations": 200, "seed": 11, "cluster_forming_p": 0.05}
    serial = sign_flip_test(diffs, mask, **kw)
    with open_engine("local:2") as engine:
        assert engine.n_workers == 2 and not engine.shares_memory
        on_cluster = sign_flip_test(diffs, mask, engine=engine, **kw)
    _same_result(on_cluster, serial)
    flips, _ = sign_flips(n, 200, seed=11)
    _, p_fwe, _ = _reference_before_streaming(diffs, mask, flips,
                                              serial.info["cluster_forming_t"])
    np.testing.assert_array_equal(on_cluster.p_fwe[mask], p_fwe)
