"""End-to-end test of petbind.preprocess.scan on a small native-space BIDS scan."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from petbind.errors import DataError, FileFormatError, MetadataError
from petbind.io.tables import read_tacs
from petbind.preprocess.register import load_transform
from petbind.preprocess.scan import PreprocessOptions, preprocess_scan

from .preprocess_phantom import (
    INDEX,
    NAMES,
    T1_VALUE,
    apply,
    fractions,
    frame_schedule,
    grid_affine,
    grid_points,
    labels_at,
    make_dynamic,
    pet_sidecar,
    rigid,
    shared_once,
)

NATIVE = rigid([3.0, -4.0, 2.0, 5.0, -3.0, 6.0])  # subject head in scanner/MRI space
PET_SHAPE = (34, 42, 30)
PET_AFF = grid_affine(PET_SHAPE, 2.0)
MOTION = {(18, 19): [2.0, 1.5, -1.0, 2.0, -1.5, 2.5], (20, 21): [-1.5, 2.5, 1.0, -2.0, 2.0, -1.0]}
T1_CONTRAST = np.array([0.0] + [T1_VALUE[n] for n in NAMES])




def write_nii(path, data, affine, codes=1):
    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    img.set_sform(affine, code=codes)
    img.set_qform(affine, code=codes)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return shared_once(tmp_path_factory, "scan-dataset", _build_dataset)


def _build_dataset(root):
    start, dur = frame_schedule()
    motion = np.zeros((start.size, 6))
    for frames, v in MOTION.items():
        motion[list(frames)] = v
    center = apply(NATIVE, np.zeros((1, 3)))[0]
    pet, *_ = make_dynamic(PET_SHAPE, PET_AFF, motion, center, seed=1, base=NATIVE)
    pet_path = write_nii(root / "sub-01/ses-baseline/pet/sub-01_ses-baseline_pet.nii.gz",
                         pet, PET_AFF)
    pet_path.with_name("sub-01_ses-baseline_pet.json").write_text(
        json.dumps(pet_sidecar(start, dur)))
    t1_shape = (40, 46, 36)
    t1_aff = grid_affine(t1_shape, 2.0)
    ninv = np.linalg.inv(NATIVE)
    t1 = np.tensordot(T1_CONTRAST, fractions(t1_shape, t1_aff, lambda p: apply(ninv, p)), 1)
    t1_path = write_nii(root / "sub-01/anat/sub-01_T1w.nii.gz", t1, t1_aff)
    tpl_shape = (36, 42, 32)
    tpl_aff = grid_affine(tpl_shape, 2.0)
    tpl = np.tensordot(T1_CONTRAST, fractions(tpl_shape, tpl_aff), 1)
    tpl_dir = root / "template"
    tpl_path = write_nii(tpl_dir / "tpl-phantom_T1w.nii.gz", tpl, tpl_aff)
    dseg = labels_at(grid_points(tpl_shape, tpl_aff)[:, 0]).reshape(tpl_shape)
    img = nib.Nifti1Image(dseg.astype(np.int16), tpl_aff)
    nib.save(img, str(tpl_dir / "tpl-phantom_dseg.nii.gz"))
    table = pd.DataFrame({"index": list(INDEX.values()), "name": NAMES,
                          "region": [n.removesuffix("_L").removesuffix("_R") for n in NAMES]})
    table.to_csv(tpl_dir / "tpl-phantom_dseg.tsv", sep="\t", index=False)
    out = root / "derivatives/petbind/sub-01/ses-baseline/pet"
    result = preprocess_scan(pet_path, t1_path, tpl_path, out,
                             options=PreprocessOptions(syn_level_iters=(10, 5)))
    return {"root": root, "pet": pet_path, "t1w": t1_path, "template": tpl_path,
            "out": out, "result": result, "motion": motion, "t1_aff": t1_aff}


def dice(a, b):
    return 2.0 * np.sum(a & b) / (np.sum(a) + np.sum(b))


def test_atlas_lands_on_the_true_structures_in_pet_space(dataset):
    o = dataset["result"].outputs
    labels = np.asarray(nib.load(str(o["dseg"])).dataobj)
    # truth: the phantom's label at each PET voxel centre, head in native position
    pts = apply(np.linalg.inv(NATIVE), grid_points(PET_SHAPE, PET_AFF)[:, 0])
    truth = labels_at(pts).reshape(PET_SHAPE)
    for name in ("white_matter", "other_cortex", "cerebellum", "thalamus", "putamen_L",
                 "putamen_R"):
        k = INDEX[name]
        assert dice(labels == k, truth == k) >= 0.8, name


def test_preprocess_writes_motion_transforms_tacs_and_qc_figures(dataset):
    o = dataset["result"].outputs
    mot = pd.read_csv(o["motion"], sep="\t")
    est = mot[["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]].to_numpy()
    assert np.abs(est[:, :3] - dataset["motion"][:, :3]).max() < 0.5
    assert np.abs(est[:, 3:] - dataset["motion"][:, 3:]).max() < 0.5
    assert bool(mot["flagged"].iloc[18]) and not mot["flagged"].iloc[12:18].any()
    tacs = read_tacs(o["tacs"])
    assert {"caudate", "putamen", "thalamus", "cerebellum"} <= set(tacs.regions)
    for key in ("xfm_pet_t1w", "xfm_t1w_template", "xfm_template_t1w"):
        assert load_transform(o[key]).GetDimension() == 3
    for key in ("motion_qc", "pet_t1w_qc", "t1w_template_qc"):
        assert o[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the PET -> T1w registration recovers the identity (the motion reference and the
    # T1w are both in native space); the frames are written in the T1w pose, so the
    # transform file of the written PET is the identity
    from petbind.preprocess.register import matrix_from_sitk

    side = json.loads(o["pet_mc"].with_name(
        o["pet_mc"].name.replace(".nii.gz", ".json")).read_text())
    m = np.asarray(side["ReferenceToT1w"]["Matrix"])
    pts = apply(NATIVE, grid_points((6, 6, 6), grid_affine((6, 6, 6), 6.0))[:, 0])
    assert np.linalg.norm(apply(m, pts) - pts, axis=1).max() < 1.0
    assert np.allclose(matrix_from_sitk(load_transform(o["xfm_pet_t1w"])), np.eye(4))
    # inputs untouched: nothing new in the raw folders
    assert sorted(p.name for p in dataset["pet"].parent.iterdir()) == [
        "sub-01_ses-baseline_pet.json", "sub-01_ses-baseline_pet.nii.gz"]


def test_missing_t1w_is_an_error_naming_the_file(dataset, tmp_path):
    missing = dataset["root"] / "sub-01/anat/sub-01_run-2_T1w.nii.gz"
    with pytest.raises(FileFormatError, match=r"sub-01_run-2_T1w\.nii\.gz"):
        preprocess_scan(dataset["pet"], missing, dataset["template"], tmp_path)


def test_unknown_orientation_codes_are_an_error_naming_the_file(dataset, tmp_path):
    t1 = nib.load(str(dataset["t1w"]))
    bad = write_nii(tmp_path / "in" / "sub-01_T1w.nii.gz", np.asarray(t1.dataobj),
                    dataset["t1_aff"], codes=0)
    with pytest.raises(MetadataError, match=r"sub-01_T1w\.nii\.gz.*sform_code"):
        preprocess_scan(dataset["pet"], bad, dataset["template"], tmp_path / "out")


def test_3d_pet_is_an_error_naming_the_file(dataset, tmp_path):
    start, dur = frame_schedule()
    p = write_nii(tmp_path / "in" / "sub-01_pet.nii.gz", np.ones((8, 8, 8)), np.eye(4))
    side = pet_sidecar(start[:1], dur[:1])
    p.with_name("sub-01_pet.json").write_text(json.dumps(side))
    with pytest.raises(DataError, match=r"sub-01_pet\.nii\.gz"):
        preprocess_scan(p, dataset["t1w"], dataset["template"], tmp_path / "out")


def test_template_without_atlas_is_an_error_naming_the_template(dataset, tmp_path):
    tpl = nib.load(str(dataset["template"]))
    lone = tmp_path / "tpl" / "tpl-lonely_T1w.nii.gz"
    write_nii(lone, np.asarray(tpl.dataobj), tpl.affine)
    with pytest.raises(MetadataError, match=r"tpl-lonely_T1w\.nii\.gz.*no atlas"):
        preprocess_scan(dataset["pet"], dataset["t1w"], lone, tmp_path / "out")


def test_cli_preprocess_runs_on_a_bids_folder(dataset, tmp_path):
    from petbind.cli import main

    out = tmp_path / "pre"
    with pytest.raises(SystemExit) as exc:
        main(["preprocess", str(dataset["root"]), "--template", str(dataset["template"]),
              "--out", str(out), "--no-motion", "--affine-only", "--atlas-method", "nearest"])
    assert exc.value.code == 0
    scan_dir = out / "sub-01/ses-baseline/pet"
    tacs = read_tacs(scan_dir / "sub-01_ses-baseline_tacs.tsv")
    assert "cerebellum" in tacs.regions
    assert (scan_dir / "sub-01_from-T1w_to-template_mode-image_xfm.h5").is_file()
    assert not (scan_dir / "sub-01_ses-baseline_desc-motion_timeseries.tsv").exists()


def test_cli_without_t1w_exits_2_naming_the_anat_folder(dataset, tmp_path, capsys):
    import shutil

    from petbind.cli import main

    bids = tmp_path / "bids"
    src = dataset["pet"].parent
    dst = bids / "sub-01/ses-baseline/pet"
    dst.mkdir(parents=True)
    for f in src.iterdir():
        shutil.copy(f, dst / f.name)
    with pytest.raises(SystemExit) as exc:
        main(["preprocess", str(bids), "--template", str(dataset["template"])])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "sub-01/anat" in err.replace("\n", "") and "T1w" in err
