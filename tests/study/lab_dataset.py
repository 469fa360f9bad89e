"""A simulated study re-laid out the way a PET lab holds its data.

From a dataset in the simulator's layout (ses-<condition>, kBq/mL, decay
corrected, a PET-space atlas per scan) this writes the same scans as a lab
would: numbered sessions with the condition in ``sub-*_sessions.tsv``, a
``rec-acdyn`` entity, ``TracerName`` "[11C]DASB", Bq/mL, one scan not decay
corrected, one scan missing, a FreeSurfer-style ``aparc+aseg.mgz`` per
subject in T1w space on a finer, larger grid than the PET (with a colour
table naming ``Left-``/``Right-`` labels), and every image a symbolic link
into an annex folder (DataLad / git-annex) beside which lies a decoy sidecar
with the wrong frame times.

The voxel values are the simulator's (scaled by 1000, or divided by the
frame-integrated decay factors that petbind's reader multiplies back), and
each PET voxel holds whole T1w voxels of one label, so region curves, and
hence every fit, equal the simulator-layout study's up to rounding.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

SESSIONS = {"baseline": "01", "ketamine": "02"}
MISSING = ("03", "ketamine")
UNCORRECTED = ("02", "baseline")
MARGIN = 3  # T1w voxels added on each side of the PET field of view


def fs_name(name: str) -> str:
    """FreeSurfer-style label name of a simulator label (``caudate_L`` -> ``Left-caudate``)."""
    if name.startswith("cerebellum_"):
        return ("Left-" if name.endswith("_L") else "Right-") + "Cerebellum-Cortex"
    if name.endswith("_L"):
        return "Left-" + name[:-2]
    if name.endswith("_R"):
        return "Right-" + name[:-2]
    return name


def _t1w_labels(pet_labels: np.ndarray, pet_affine: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """The PET-grid labels on a grid of half the voxel size, MARGIN voxels wider per side."""
    zoom = np.abs(np.diag(pet_affine)[:3])
    up = np.repeat(np.repeat(np.repeat(pet_labels, 2, 0), 2, 1), 2, 2)
    out = np.pad(up, MARGIN).astype(np.int32)
    aff = pet_affine.copy()
    aff[:3, :3] = pet_affine[:3, :3] / 2
    # the first fine voxel centre sits a quarter PET voxel before the PET voxel's centre
    aff[:3, 3] = pet_affine[:3, 3] - zoom / 4 - MARGIN * zoom / 2
    return out, aff


def make_lab_dataset(sim: Path, dest: Path) -> dict:
    """Write the lab layout of the simulator dataset ``sim`` to ``dest``.

    Returns
    -------
    dict
        ``bids`` (dest), ``annex`` (folder of the link targets), ``scans``
        (list of (subject, condition) written), ``conditions`` (ses -> name).
    """
    from petbind.isotopes import get_isotope
    from petbind.timing import FrameTiming

    dest.mkdir(parents=True)
    shutil.copy(sim / "dataset_description.json", dest / "dataset_description.json")
    shutil.copy(sim / "participants.tsv", dest / "participants.tsv")
    annex = dest / ".git" / "annex" / "objects"
    sim_deriv = sim / "derivatives" / "petbind-sim"
    fsdir = dest / "derivatives" / "freesurfer"
    written = []
    lut_rows: dict[int, str] = {}
    subjects = sorted(p.name[4:] for p in sim.glob("sub-*") if p.is_dir())
    for sub in subjects:
        rows = []
        for cond, ses in SESSIONS.items():
            src = sim / f"sub-{sub}" / f"ses-{cond}" / "pet" / f"sub-{sub}_ses-{cond}_trc-DASB_pet"
            if not Path(f"{src}.nii.gz").exists() or (sub, cond) == MISSING:
                continue
            side = json.loads(Path(f"{src}.json").read_text())
            img = nib.load(f"{src}.nii.gz")
            data = np.asarray(img.dataobj, dtype=np.float64) * 1000.0  # kBq/mL -> Bq/mL
            side.update(Units="Bq/mL", TracerName="[11C]DASB")
            if (sub, cond) == UNCORRECTED:
                timing = FrameTiming.from_seconds(np.asarray(side["FrameTimesStart"]),
                                                  np.asarray(side["FrameDuration"]))
                data = data / timing.decay_factors(get_isotope(side["TracerRadionuclide"]), 0.0)
                side["ImageDecayCorrected"] = False
                side.pop("DecayCorrectionFactor", None)
            stem = f"sub-{sub}_ses-{ses}_trc-DASB_rec-acdyn"
            folder = dest / f"sub-{sub}" / f"ses-{ses}" / "pet"
            folder.mkdir(parents=True)
            target_dir = annex / f"{len(written):03d}"
            target_dir.mkdir(parents=True)
            target = target_dir / f"{stem}_pet.nii.gz"
            nib.save(nib.Nifti1Image(data.astype(np.float32), img.affine), str(target))
            (folder / f"{stem}_pet.nii.gz").symlink_to(
                Path("../../..") / target.relative_to(dest))
            (folder / f"{stem}_pet.json").write_text(json.dumps(side, indent=1))
            decoy = dict(side, FrameTimesStart=[t / 2 for t in side["FrameTimesStart"]],
                         FrameDuration=[d / 2 for d in side["FrameDuration"]],
                         TracerName="decoy")
            (target_dir / f"{stem}_pet.json").write_text(json.dumps(decoy))
            rows.append({"session_id": f"ses-{ses}", "condition": cond,
                         "acq_time": f"2024-0{int(ses)}-01T10:00:00"})
            written.append((sub, cond))
        pd.DataFrame(rows).to_csv(dest / f"sub-{sub}" / f"sub-{sub}_sessions.tsv", sep="\t",
                                  index=False)
        # the subject's segmentation in T1w space, from the simulator's PET-space atlas
        dseg = sim_deriv / f"sub-{sub}" / "ses-baseline" / "pet" / \
            f"sub-{sub}_ses-baseline_trc-DASB_dseg"
        pimg = nib.load(f"{dseg}.nii.gz")
        labels, aff = _t1w_labels(np.asarray(pimg.dataobj).astype(np.int32),
                                  np.asarray(pimg.affine))
        mri = fsdir / f"sub-{sub}" / "mri"
        mri.mkdir(parents=True)
        nib.save(nib.MGHImage(labels, aff), str(mri / "aparc+aseg.mgz"))
        table = pd.read_csv(f"{dseg}.tsv", sep="\t")
        lut_rows.update({int(i): fs_name(str(n)) for i, n in zip(table["index"], table["name"],
                                                                 strict=True)})
    lines = ["#$Id: FreeSurferColorLUT.txt (test copy, labels of the simulator's phantom)",
             "#No. Label Name:                            R   G   B   A", "",
             "0   Unknown                                 0   0   0   0"]
    lines += [f"{i:<4d}{n:<40s}{(37 * i) % 256:<4d}{(91 * i) % 256:<4d}{(53 * i) % 256:<4d}0"
              for i, n in sorted(lut_rows.items())]
    (fsdir / "FreeSurferColorLUT.txt").write_text("\n".join(lines) + "\n")
    return {"bids": dest, "annex": annex, "scans": written,
            "conditions": {v: k for k, v in SESSIONS.items()}}
