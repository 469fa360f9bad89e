"""A tiny raw BIDS study for the pipeline's preprocessing tests, built without petbind.

Subjects sit at their own known rigid offsets from the template ("native
positions"), move between frames, and have a T1w; the template, its atlas and
label table lie under ``derivatives/template/``. The same scans without
offset or motion, with the true PET-space atlas, form the "pre-aligned"
dataset the preprocessed chain must agree with. Images come from the
analytic ellipsoid phantom of ``tests/preprocess/preprocess_phantom.py``
(evaluated exactly at back-mapped points; no petbind resampling).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

_spec = importlib.util.spec_from_file_location(
    "petbind_test_preprocess_phantom",
    Path(__file__).resolve().parents[1] / "preprocess" / "preprocess_phantom.py")
ph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ph)

TRACER = "PHANTOM"
PET_SHAPE = (34, 42, 30)
PET_AFF = ph.grid_affine(PET_SHAPE, 2.0)
T1_SHAPE = (40, 46, 36)
T1_AFF = ph.grid_affine(T1_SHAPE, 2.0)
TPL_SHAPE = (36, 42, 32)
TPL_AFF = ph.grid_affine(TPL_SHAPE, 2.0)
T1_CONTRAST = np.array([0.0] + [ph.T1_VALUE[n] for n in ph.NAMES])
#: subject -> native position (tx, ty, tz mm, rx, ry, rz deg)
NATIVE = {"01": [3.0, -4.0, 2.0, 5.0, -3.0, 6.0], "02": [-2.5, 3.0, -1.5, -4.0, 4.0, -5.0]}
#: frames that move (same for every scan; a different direction per condition)
MOVES = {"baseline": {(16, 17): [1.5, 1.0, -1.0, 1.5, -1.0, 2.0]},
         "ketamine": {(17, 18, 19): [-1.0, 1.5, 1.0, -1.5, 1.5, -1.0]}}
TEMPLATE = "derivatives/template/tpl-phantom_T1w.nii.gz"

STUDY = """
[dataset]
atlas = "auto"
truth = "none"

[tracers.PHANTOM]
reference_region = "cerebellum"
target_regions = ["caudate", "putamen", "thalamus", "frontal_cortex"]
models = ["srtm"]
primary_model = "srtm"
map_model = "mrtm2"
k2prime = "mrtm"
k2prime_region = "putamen"

[[contrasts]]
expr = "ketamine - baseline"

[statistics.voxel]
n_permutations = 16
"""

PREPROCESS = f"""
[preprocess]
enabled = true
nonlinear = false
template = "{TEMPLATE}"
"""


def sidecar(start_min, dur_min):
    return ph.pet_sidecar(start_min, dur_min, tracer=TRACER)


def write_nii(path: Path, data, affine, dtype=np.float32) -> Path:
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def label_table() -> pd.DataFrame:
    return pd.DataFrame({"index": list(ph.INDEX.values()), "name": ph.NAMES,
                         "region": [n.removesuffix("_L").removesuffix("_R") for n in ph.NAMES]})


def build(root: Path, *, aligned: bool, subjects=("01", "02"),
          conditions=("baseline", "ketamine"), noise: float = 0.01) -> Path:
    """Write the study to ``root`` (raw: native + motion + T1w + template; aligned: truth atlas)."""
    start, dur = ph.frame_schedule()
    (root / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "preprocess test study", "BIDSVersion": "1.9.0"}))
    for i, sub in enumerate(subjects):
        native = ph.rigid(NATIVE[sub])
        centre = ph.apply(native, np.zeros((1, 3)))[0]
        if not aligned:
            ninv = np.linalg.inv(native)
            t1 = np.tensordot(T1_CONTRAST,
                              ph.fractions(T1_SHAPE, T1_AFF, lambda p, m=ninv: ph.apply(m, p)), 1)
            write_nii(root / f"sub-{sub}/anat/sub-{sub}_T1w.nii.gz", t1, T1_AFF)
        for j, cond in enumerate(conditions):
            motion = np.zeros((start.size, 6))
            if not aligned:
                for frames, v in MOVES[cond].items():
                    motion[list(frames)] = v
            pet, *_ = ph.make_dynamic(PET_SHAPE, PET_AFF, motion, centre, seed=10 * i + j,
                                      noise=noise, base=None if aligned else native)
            stem = f"sub-{sub}_ses-{cond}_trc-{TRACER}"
            rel = f"sub-{sub}/ses-{cond}/pet"
            p = write_nii(root / rel / f"{stem}_pet.nii.gz", pet, PET_AFF)
            p.with_name(f"{stem}_pet.json").write_text(json.dumps(sidecar(start, dur)))
            if aligned:
                frac = ph.fractions(PET_SHAPE, PET_AFF, sub=3)
                labels = np.argmax(frac, axis=0)
                d = root / "derivatives/truth" / rel
                write_nii(d / f"{stem}_dseg.nii.gz", labels, PET_AFF, dtype=np.int16)
                label_table().to_csv(d / f"{stem}_dseg.tsv", sep="\t", index=False)
    if not aligned:
        tpl = np.tensordot(T1_CONTRAST, ph.fractions(TPL_SHAPE, TPL_AFF), 1)
        t = write_nii(root / TEMPLATE, tpl, TPL_AFF)
        dseg = ph.labels_at(ph.grid_points(TPL_SHAPE, TPL_AFF)[:, 0]).reshape(TPL_SHAPE)
        write_nii(t.with_name("tpl-phantom_dseg.nii.gz"), dseg, TPL_AFF, dtype=np.int16)
        label_table().to_csv(t.with_name("tpl-phantom_dseg.tsv"), sep="\t", index=False)
    return root
