"""petbind.study.segmentation: a subject's T1w-space segmentation, found and mapped to PET."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from petbind.errors import ConfigError, DataError
from petbind.study.segmentation import (
    find_segmentation,
    label_curves,
    labels_on_grid,
    read_label_table,
)
from petbind.timing import FrameTiming

LUT = ("#No. Label Name:  R G B A\n\n0 Unknown 0 0 0 0\n"
       "8   Left-Cerebellum-Cortex  230 148 34 0\n47  Right-Cerebellum-Cortex 230 148 34 0\n")


def _touch(p, text=""):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_petprep_style_dseg_in_t1w_space_is_preferred_and_pet_or_mni_ones_ignored(tmp_path):
    d = tmp_path / "derivatives" / "petprep" / "sub-01"
    _touch(d / "anat" / "sub-01_space-MNI152NLin2009cAsym_desc-aparcaseg_dseg.nii.gz")
    _touch(d / "anat" / "sub-01_desc-aseg_dseg.nii.gz")
    best = _touch(d / "anat" / "sub-01_space-T1w_desc-aparcaseg_dseg.nii.gz")
    _touch(d / "ses-01" / "pet" / "sub-01_ses-01_desc-aparcaseg_dseg.nii.gz")  # PET space
    # fMRIPrep writes the label table once, at the root, named by desc
    table = _touch(tmp_path / "derivatives" / "petprep" / "desc-aparcaseg_dseg.tsv",
                   "index\tname\n8\tLeft-Cerebellum-Cortex\n")
    seg = find_segmentation(tmp_path, "01", "derivatives/petprep")
    assert seg.path == best and seg.table == table and seg.kind == "dseg"


def test_freesurfer_mgz_takes_the_users_colour_table(tmp_path, monkeypatch):
    fs = tmp_path / "derivatives" / "freesurfer"
    _touch(fs / "sub-01" / "mri" / "aseg.mgz")
    aparc = _touch(fs / "sub-01" / "mri" / "aparc+aseg.mgz")
    monkeypatch.delenv("FREESURFER_HOME", raising=False)
    with pytest.raises(DataError) as e:
        find_segmentation(tmp_path, "01", "derivatives/freesurfer")
    assert e.value.field == "dataset.segmentation_labels"
    home = tmp_path / "fshome"
    lut = _touch(home / "FreeSurferColorLUT.txt", LUT)
    monkeypatch.setenv("FREESURFER_HOME", str(home))
    seg = find_segmentation(tmp_path, "01", "derivatives/freesurfer")
    assert (seg.path, seg.table, seg.kind) == (aparc, lut, "freesurfer")
    t = read_label_table(lut)
    assert list(t["index"]) == [0, 8, 47] and t["name"].iloc[2] == "Right-Cerebellum-Cortex"
    # a file per subject
    seg = find_segmentation(tmp_path, "01", {"01": "derivatives/freesurfer/sub-01/mri/aseg.mgz"})
    assert seg.path.name == "aseg.mgz"
    with pytest.raises(ConfigError):
        find_segmentation(tmp_path, "01", "derivatives/none")


def _half_space(tmp_path, boundary_mm: float):
    """T1w grid, 0.5 mm voxels: label 8 at x < boundary, 47 at x >= boundary (world mm)."""
    shape = (48, 8, 8)
    aff = np.diag([0.5, 0.5, 0.5, 1.0])
    aff[:3, 3] = [-6.0 + 0.25, -2.0 + 0.25, -2.0 + 0.25]  # voxel edges at -6 ... +18 mm
    x = aff[0, 3] + 0.5 * np.arange(shape[0])
    lab = np.where(x[:, None, None] < boundary_mm, 8, 47) * np.ones(shape, np.int32)
    path = tmp_path / "sub-01" / "mri" / "aparc+aseg.mgz"
    path.parent.mkdir(parents=True)
    nib.save(nib.MGHImage(lab.astype(np.int32), aff), str(path))
    _touch(tmp_path / "FreeSurferColorLUT.txt", LUT)
    return find_segmentation(tmp_path, "01", ".")


def test_label_fractions_on_a_coarser_pet_grid_are_exact_and_curves_their_weighted_means(
        tmp_path):
    # PET: 3 mm voxels centred at x = 0, 3, 6, 9; sub-samples at centre - 1, centre, + 1 mm.
    # The boundary at x = 3.75 mm leaves voxel 1 (x = 3: samples 2, 3, 4) with 2/3 of label 8.
    seg = _half_space(tmp_path, 3.75)
    pet_aff = np.diag([3.0, 3.0, 3.0, 1.0])
    timing = FrameTiming.from_seconds(np.array([0.0, 60.0]), np.array([60.0, 60.0]))
    vals = np.array([1.0, 10.0, 100.0, 1000.0])  # per x column, frame 1; frame 2 doubles
    data = np.zeros((4, 1, 1, 2))
    data[:, 0, 0, 0] = vals
    data[:, 0, 0, 1] = 2 * vals
    tacs, labels, names = label_curves(data, pet_aff, seg, None, timing)
    f8 = np.array([1.0, 2 / 3, 0.0, 0.0])
    f47 = 1 - f8
    np.testing.assert_allclose(tacs.metadata["n_voxels"]["Left-Cerebellum-Cortex"], f8.sum())
    # rtol 1e-7: the fractions are float32
    np.testing.assert_allclose(tacs.curve("Left-Cerebellum-Cortex"),
                               [f8 @ vals / f8.sum(), 2 * f8 @ vals / f8.sum()], rtol=1e-7)
    np.testing.assert_allclose(tacs.curve("Right-Cerebellum-Cortex"),
                               [f47 @ vals / f47.sum(), 2 * f47 @ vals / f47.sum()], rtol=1e-7)
    assert labels[:, 0, 0].tolist() == [8, 8, 47, 47]
    assert names == {8: "Left-Cerebellum-Cortex", 47: "Right-Cerebellum-Cortex"}
    # a registration (PET point -> T1w point, here -3 mm in x) moves the boundary one voxel
    move = np.eye(4)
    move[0, 3] = -3.0
    moved, _, _ = label_curves(data, pet_aff, seg, None, timing, transform=move)
    g8 = np.array([1.0, 1.0, 2 / 3, 0.0])
    np.testing.assert_allclose(moved.curve("Left-Cerebellum-Cortex")[0], g8 @ vals / g8.sum(),
                               rtol=1e-7)  # float32 fractions
    grid, _ = labels_on_grid(seg, (4, 1, 1), pet_aff)
    assert grid[:, 0, 0].tolist() == [8, 8, 47, 47]


def test_a_label_outside_the_pet_field_of_view_is_an_error(tmp_path):
    seg = _half_space(tmp_path, 15.0)  # label 47 only beyond x = 15 mm
    timing = FrameTiming.from_seconds(np.array([0.0]), np.array([60.0]))
    with pytest.raises(DataError) as e:
        label_curves(np.ones((2, 1, 1, 1)), np.diag([3.0, 3.0, 3.0, 1.0]), seg, None, timing)
    assert "Right-Cerebellum-Cortex" in str(e.value)


def test_slab_by_slab_mapping_equals_the_whole_grid_at_once(tmp_path, monkeypatch):
    import petbind.study.segmentation as segmod

    rng = np.random.default_rng(0)
    lab = rng.choice([8, 47], size=(12, 10, 14)).astype(np.int32)
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    aff[:3, 3] = [-0.4, 0.3, -0.7]
    path = tmp_path / "sub-01" / "mri" / "aparc+aseg.mgz"
    path.parent.mkdir(parents=True)
    nib.save(nib.MGHImage(lab, aff), str(path))
    _touch(tmp_path / "FreeSurferColorLUT.txt", LUT)
    seg = find_segmentation(tmp_path, "01", ".")
    pet_aff = np.diag([2.5, 2.5, 2.5, 1.0])
    data = rng.uniform(1, 2, (4, 3, 5, 3))
    timing = FrameTiming.from_seconds(np.array([0.0, 60.0, 120.0]), np.full(3, 60.0))
    whole, lw, _ = label_curves(data, pet_aff, seg, None, timing)
    monkeypatch.setattr(segmod, "FRACTION_BYTES", 1)  # one PET slice per slab
    slabs, ls, _ = label_curves(data, pet_aff, seg, None, timing)
    np.testing.assert_allclose(slabs.values, whole.values, rtol=1e-12)
    assert slabs.metadata["n_voxels"] == pytest.approx(whole.metadata["n_voxels"])
    np.testing.assert_array_equal(ls, lw)


def test_with_preprocessing_the_segmentation_goes_through_the_pet_to_t1w_registration(
        tmp_path):
    from types import SimpleNamespace

    from petbind.image import DynamicImage
    from petbind.preprocess.register import save_transform
    from petbind.study.discover import Scan
    from petbind.study.preprocess import preprocess_files
    from petbind.study.regions import region_curves

    seg = _half_space(tmp_path / "fs", 3.75)
    pet_aff = np.diag([3.0, 3.0, 3.0, 1.0])
    timing = FrameTiming.from_seconds(np.array([0.0]), np.array([60.0]))
    vals = np.array([1.0, 10.0, 100.0, 1000.0], np.float32)
    img = DynamicImage(vals.reshape(4, 1, 1, 1), pet_aff, timing)
    scan = Scan(subject="01", condition="a", tracer="T", run=None, pet=tmp_path / "x.nii.gz",
                dseg=seg.path, stem="x", rel_dir="sub-01/pet", segmentation=seg)
    out = tmp_path / "out"
    move = np.eye(4)
    move[0, 3] = -3.0  # PET point -> T1w point, 3 mm lower in x
    save_transform(preprocess_files(out, scan.rel_dir, scan.stem, True)["xfm_pet_t1w"], move)
    plan = SimpleNamespace(options=SimpleNamespace(motion=True))
    _, _, tacs, info = region_curves(scan, img, {}, plan, out)
    g8 = np.array([1.0, 1.0, 2 / 3, 0.0])
    np.testing.assert_allclose(tacs.curve("Left-Cerebellum-Cortex")[0], g8 @ vals / g8.sum(),
                               rtol=1e-6)
    assert info["mapping"] == "PET-to-T1w registration"
    assert "registration of preprocessing" in info["description"]
    # no [preprocess]: the affines
    _, _, plain, info = region_curves(scan, img, {}, None, out)
    f8 = np.array([1.0, 2 / 3, 0.0, 0.0])
    np.testing.assert_allclose(plain.curve("Left-Cerebellum-Cortex")[0], f8 @ vals / f8.sum(),
                               rtol=1e-6)
    assert info["mapping"] == "affines"
