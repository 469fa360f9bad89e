"""The procedural macaque phantom: every region, plausible sizes, T1 contrast."""

from __future__ import annotations

import numpy as np
import pytest

from petbind.simulate.phantom import LATERAL, REGIONS, label_table, make_phantom


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(1.0, seed=7)


def volumes_mm3(ph):
    counts = np.bincount(ph.labels.ravel(), minlength=len(ph.table) + 1)
    return {name: counts[i] * ph.voxel_mm**3 for i, name, _ in ph.table}


def test_label_table_has_every_region_with_left_and_right_where_lateral():
    table = label_table()
    assert [i for i, _, _ in table] == list(range(1, len(table) + 1))
    assert {r for _, _, r in table} == set(REGIONS)
    for region in LATERAL:
        assert {n for _, n, r in table if r == region} == {f"{region}_L", f"{region}_R"}
    assert [n for _, n, r in table if r == "midbrain"] == ["midbrain"]


def test_whole_brain_has_rhesus_dimensions(phantom):
    brain = (phantom.labels > 0) & (phantom.labels != label_table()[-1][0])  # not CSF
    idx = np.argwhere(brain)
    extent = (idx.max(0) - idx.min(0) + 1) * phantom.voxel_mm
    # about 60 x 80 x 50 mm (x left-right, y anterior-posterior, z inferior-superior)
    np.testing.assert_allclose(extent, [60, 80, 50], rtol=0.12)


def test_small_targets_are_tens_of_mm3_per_side(phantom):
    vol = volumes_mm3(phantom)
    for name in ("NAcc_L", "NAcc_R", "VP_L", "VP_R"):
        assert 25 <= vol[name] <= 120, (name, vol[name])
    for name in ("caudate_L", "putamen_R", "thalamus_L"):
        assert 300 <= vol[name] <= 1500, (name, vol[name])
    assert vol["white_matter"] > vol["frontal_cortex_L"] > vol["NAcc_L"]
    assert all(v > 0 for v in vol.values())


def test_left_labels_lie_left_of_the_midline(phantom):
    x_mm = phantom.affine[0, 3] + phantom.voxel_mm * np.arange(phantom.labels.shape[0])
    for i, name, _ in phantom.table:
        if name.endswith("_L") or name.endswith("_R"):
            xs = x_mm[np.nonzero(phantom.labels == i)[0]]
            assert (xs.max() < 0) if name.endswith("_L") else (xs.min() > 0), name


def test_t1w_contrast_is_white_over_grey_over_csf(phantom):
    region = {i: r for i, _, r in phantom.table}
    mean = {r: phantom.t1w[np.isin(phantom.labels, [i for i, rr in region.items() if rr == r])]
            .mean() for r in ("white_matter", "frontal_cortex", "csf")}
    assert mean["white_matter"] > mean["frontal_cortex"] > mean["csf"]
    assert phantom.t1w.shape == phantom.labels.shape


def test_a_2mm_pet_grid_keeps_voxels_in_the_small_targets(phantom):
    from petbind.simulate.scanner import majority_labels

    pet = majority_labels(phantom.labels, len(phantom.table), 2)
    for i, name, _ in phantom.table:
        if name.startswith(("NAcc", "VP")):
            assert (pet == i).sum() >= 3, name


def test_same_seed_same_phantom():
    a, b = make_phantom(2.0, seed=3), make_phantom(2.0, seed=3)
    assert np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.t1w, b.t1w)
