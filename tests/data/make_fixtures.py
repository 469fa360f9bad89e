"""Small hand-made BIDS-PET fixtures, generated at test time (no binaries in git).

Written with nibabel, json and plain text directly, not with petbind's
writers, so that reader tests check petbind against an independent writer.
Every voxel value is known in closed form:

- true activity (decay-corrected to injection) is piecewise constant,
  ``A_r,k`` in region ``r`` during frame ``k``;
- an uncorrected image stores the frame mean of the physically decaying
  activity, ``A (exp(-lam a) - exp(-lam b)) / (lam d)`` (frame ``[a, b]``,
  ``d = b - a``, times from injection);
- an image decay corrected to ``t_ref`` stores that mean times
  ``exp(lam (a..b) - t_ref)`` integrated, i.e. ``A exp(-lam t_ref)``.

Run ``python tests/data/make_fixtures.py OUT_DIR`` to write the dataset.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

#: Half-lives (s) from NNDC NuDat 3 (ENSDF), as published.
HALF_LIFE_S = {"11C": 20.364 * 60.0, "18F": 109.739 * 60.0}

#: Frames (s): 4 x 30 s, 3 x 60 s, 2 x 300 s.
FRAME_DURATIONS_S = [30.0] * 4 + [60.0] * 3 + [300.0] * 2
SHAPE = (6, 5, 4)
AFFINE = np.array([[2.0, 0, 0, -6.0], [0, 2.0, 0, -5.0], [0, 0, 2.5, -4.0], [0, 0, 0, 1]])


def frame_starts(durations: list[float], first: float = 0.0) -> list[float]:
    """Contiguous frame starts (s)."""
    out, t = [], first
    for d in durations:
        out.append(t)
        t += d
    return out


def labels() -> np.ndarray:
    """Label image: 1 = left block, 2 = right block, 3 = a single row, 0 = background."""
    lab = np.zeros(SHAPE, dtype=np.int16)
    lab[:3, 1:4, 1:3] = 1
    lab[3:, 1:4, 1:3] = 2
    lab[:, 0, 3] = 3
    return lab


def true_activity(n_frames: int) -> dict[int, np.ndarray]:
    """Decay-corrected true activity (kBq/mL) per label and frame: a rise and a fall."""
    k = np.arange(n_frames, dtype=float)
    return {1: 10.0 + 5.0 * k, 2: 40.0 * np.exp(-0.3 * k) + 2.0, 3: np.full(n_frames, 7.5)}


def true_image(n_frames: int) -> np.ndarray:
    """4D decay-corrected true image (kBq/mL); background 0."""
    lab = labels()
    img = np.zeros(SHAPE + (n_frames,))
    for v, curve in true_activity(n_frames).items():
        img[lab == v] = curve
    return img


def physical_frame_fraction(starts_s, durations_s, half_life_s: float) -> np.ndarray:
    """Frame mean of exp(-lam t) over each frame (t from injection): the closed form."""
    lam = math.log(2.0) / half_life_s
    a = np.asarray(starts_s, float)
    b = a + np.asarray(durations_s, float)
    return (np.exp(-lam * a) - np.exp(-lam * b)) / (lam * (b - a))


def pet_sidecar(starts_s, durations_s, **overrides) -> dict:
    """A complete BIDS-PET sidecar (all required fields) for the fixture scan."""
    side = {
        "Manufacturer": "Siemens", "ManufacturersModelName": "HRRT", "Units": "kBq/mL",
        "TracerName": "DASB", "TracerRadionuclide": "C11",
        "InjectedRadioactivity": 100.0, "InjectedRadioactivityUnits": "MBq",
        "InjectedMass": 1.0, "InjectedMassUnits": "ug", "SpecificRadioactivity": 100.0,
        "SpecificRadioactivityUnits": "MBq/ug", "ModeOfAdministration": "bolus",
        "TimeZero": "10:00:00", "ScanStart": 0, "InjectionStart": 0,
        "FrameTimesStart": list(starts_s), "FrameDuration": list(durations_s),
        "AcquisitionMode": "list mode", "ImageDecayCorrected": True,
        "ImageDecayCorrectionTime": 0, "ReconMethodName": "OSEM",
        "ReconMethodParameterLabels": ["subsets", "iterations"],
        "ReconMethodParameterUnits": ["none", "none"], "ReconMethodParameterValues": [16, 4],
        "ReconFilterType": "none", "AttenuationCorrection": "transmission",
    }
    side.update(overrides)
    return {k: v for k, v in side.items() if v is not None}


def write_pet(path: Path, data: np.ndarray, sidecar: dict | None, *,
              dtype=np.float32, affine=AFFINE, slope: float | None = None) -> Path:
    """Write a NIfTI with nibabel and the sidecar with json (no petbind code)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    if slope is not None:
        img.header.set_slope_inter(slope, 0.0)
    nib.save(img, str(path))
    if sidecar is not None:
        name = path.name.replace(".nii.gz", "").replace(".nii", "")
        (path.parent / f"{name}.json").write_text(json.dumps(sidecar, indent=1))
    return path


def make_bids_dataset(root: Path, *, decay: str = "injection", units: str = "kBq/mL",
                      injection_start_s: float = 0.0) -> dict:
    """Write a one-scan BIDS-PET dataset with a TAC table and a blood recording.

    Parameters
    ----------
    decay : {"injection", "scanstart", "none"}
        How the stored image is decay corrected.
    units : str
        Unit of the stored voxel values; only kBq/mL and Bq/mL are generated.
    injection_start_s : float
        InjectionStart (s after TimeZero); frames start at the injection.

    Returns
    -------
    dict
        Paths (``pet``, ``tacs``, ``blood``) and the expected values
        (``true`` image in kBq/mL, ``starts_s`` / ``durations_s`` from injection).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "petbind fixture", "BIDSVersion": "1.11.0", "DatasetType": "raw"}))
    (root / "participants.tsv").write_text("participant_id\tspecies\nsub-01\tmacaca mulatta\n")
    (root / "README").write_text("Hand-made BIDS-PET fixture for petbind tests.\n")
    durs = FRAME_DURATIONS_S
    starts = frame_starts(durs)  # from injection
    n = len(durs)
    true = true_image(n)
    lam = math.log(2.0) / HALF_LIFE_S["11C"]
    scan_start = injection_start_s
    if decay == "injection":
        stored, ref = true, injection_start_s
    elif decay == "scanstart":
        scan_start = injection_start_s + 120.0
        starts = frame_starts(durs, 120.0)
        stored, ref = true * math.exp(-lam * 120.0), scan_start
    elif decay == "none":
        stored = true * physical_frame_fraction(starts, durs, HALF_LIFE_S["11C"])
        ref = injection_start_s
    else:
        raise ValueError(decay)
    scale = {"kBq/mL": 1.0, "Bq/mL": 1000.0}[units]
    pet_dir = root / "sub-01" / "ses-baseline" / "pet"
    stem = "sub-01_ses-baseline_trc-DASB"
    side = pet_sidecar([s + injection_start_s for s in starts], durs, Units=units,
                       ImageDecayCorrected=decay != "none", ImageDecayCorrectionTime=ref,
                       InjectionStart=injection_start_s, ScanStart=scan_start)
    pet = write_pet(pet_dir / f"{stem}_pet.nii.gz", stored * scale, side)
    # blood: manual samples, s after TimeZero
    bt = np.array([10.0, 30.0, 60.0, 120.0, 300.0, 600.0]) + injection_start_s
    wb = np.array([50.0, 30.0, 20.0, 12.0, 6.0, 4.0])
    (pet_dir / f"{stem}_recording-manual_blood.tsv").write_text(
        "time\twhole_blood_radioactivity\tplasma_radioactivity\tmetabolite_parent_fraction\n"
        + "".join(f"{t:g}\t{w:g}\t{1.2 * w:g}\t{f:g}\n"
                  for t, w, f in zip(bt, wb, [1.0, 0.95, 0.9, 0.8, 0.6, 0.5], strict=True)))
    (pet_dir / f"{stem}_recording-manual_blood.json").write_text(json.dumps({
        "PlasmaAvail": True, "WholeBloodAvail": True, "MetaboliteAvail": True,
        "MetaboliteMethod": "HPLC", "MetaboliteRecoveryCorrectionApplied": False,
        "DispersionCorrected": False,
        "time": {"Description": "sample time", "Units": "s"},
        "whole_blood_radioactivity": {"Description": "whole blood", "Units": "kBq/mL"},
        "plasma_radioactivity": {"Description": "plasma", "Units": "kBq/mL"},
        "metabolite_parent_fraction": {"Description": "parent", "Units": "unitless"},
    }))
    # derivative TAC table
    der = root / "derivatives" / "fixture" / "sub-01" / "ses-baseline" / "pet"
    der.mkdir(parents=True)
    (root / "derivatives" / "fixture" / "dataset_description.json").write_text(json.dumps(
        {"Name": "fixture TACs", "BIDSVersion": "1.11.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "make_fixtures.py"}]}))
    curves = true_activity(n)
    ends = [s + d for s, d in zip(starts, durs, strict=True)]
    head = "frame_start\tframe_end\tleft\tright\trow\n"
    body = "".join(f"{s:g}\t{e:g}\t{curves[1][k]:.10g}\t{curves[2][k]:.10g}\t{curves[3][k]:g}\n"
                   for k, (s, e) in enumerate(zip(starts, ends, strict=True)))
    tacs = der / f"{stem}_desc-fixture_tacs.tsv"
    tacs.write_text(head + body)
    tacs.with_suffix(".json").write_text(json.dumps({"Units": "kBq/mL"}))
    return {"pet": pet, "tacs": tacs, "blood": pet_dir / f"{stem}_recording-manual_blood.tsv",
            "true": true, "starts_s": starts, "durations_s": durs, "labels": labels()}


if __name__ == "__main__":  # pragma: no cover - manual use
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "petbind-fixture")
    make_bids_dataset(out)
    print(out)
