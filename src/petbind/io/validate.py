"""Check a BIDS-PET dataset (or one file) and list every problem found.

:func:`validate_path` never raises for a problem in the data: it collects
:class:`Problem` records (error / warning, file, field, message, fix) so that
``petbind validate`` can show them all at once. Readers use the same checks
and raise the first error (:meth:`Problem.to_error`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from petbind.errors import DataError, FileFormatError, MetadataError, PetbindError

# Problem lives in io/problems.py (below io/bids.py); importable from here as before
from petbind.io.problems import PathLike, Problem


def _pet_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*_pet.nii*") if p.name.endswith((".nii", ".nii.gz"))
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def validate_pet_image(path: PathLike, *, check_data: bool = True) -> list[Problem]:
    """Problems of one BIDS-PET image and its sidecar.

    Checks the sidecar (:func:`petbind.io.bids.check_pet_sidecar`), that the
    image opens and is complete, that frames match the 4th dimension and, with
    ``check_data``, reads every frame once to find NaN/inf voxels and
    unreadable data.
    """
    from petbind.io.bids import check_pet_sidecar, open_nifti, pet_sidecar, read_pet_sidecar

    p = Path(path)
    out: list[Problem] = []
    side_p = pet_sidecar(p)
    try:
        side, side_p = read_pet_sidecar(p)
    except PetbindError as exc:
        out.append(Problem.from_error(exc, side_p))
        side = None
    try:
        img = open_nifti(p)
    except PetbindError as exc:
        out.append(Problem.from_error(exc, p))
        img = None
    n_frames = None
    if img is not None:
        shape = img.shape
        if len(shape) not in (3, 4):
            out.append(Problem("error", str(p), "dim", f"expected a 3D or 4D image, got shape "
                               f"{shape}", "give a dynamic (4D) PET image", FileFormatError))
            img = None
        else:
            n_frames = shape[3] if len(shape) == 4 else 1
    if side is not None:
        out += check_pet_sidecar(side, side_p, n_frames)
    if img is not None and check_data:
        out += _scan_data(p, img)
    return out


def _scan_data(p: Path, img) -> list[Problem]:
    """Read every frame once; report unreadable data and non-finite voxels."""
    shape = img.shape
    n = shape[3] if len(shape) == 4 else 1
    bad_frames: list[int] = []
    n_bad = 0
    for t in range(n):
        try:
            frame = np.asarray(img.dataobj[..., t] if len(shape) == 4 else img.dataobj[...])
        except Exception as exc:  # nibabel surfaces zlib/EOF/ValueError for corrupt data
            return [Problem("error", str(p), "data", f"frame {t} cannot be read ({exc})",
                            "copy or re-export the file", FileFormatError)]
        if np.issubdtype(frame.dtype, np.floating):
            k = int(np.count_nonzero(~np.isfinite(frame)))
            if k:
                bad_frames.append(t)
                n_bad += k
    if bad_frames:
        return [Problem("error", str(p), "data",
                        f"{n_bad} NaN/inf voxel values in frames {bad_frames[:10]}"
                        f"{'...' if len(bad_frames) > 10 else ''}",
                        "set voxels outside the field of view to 0 or fix the reconstruction",
                        DataError)]
    return []


def validate_file(path: PathLike, *, check_data: bool = True) -> list[Problem]:
    """Problems of one file, chosen by its name.

    Knows ``*_pet.nii[.gz]`` (+ sidecar), ``*_tacs.tsv``, ``.tac``, ``.dft``,
    ``*_blood.tsv``, ``.v`` (ECAT7), other ``.json`` (syntax) and ``.tsv``
    (table shape).
    """
    from petbind.io.tables import read_json, read_tacs, read_tsv

    p = Path(path)
    name = p.name.lower()
    try:
        if name.endswith(("_pet.nii", "_pet.nii.gz")):
            return validate_pet_image(p, check_data=check_data)
        if name.endswith("_pet.json"):
            stem = p.name[: -len(".json")]
            images = [p.with_name(stem + e) for e in (".nii.gz", ".nii")]
            if any(i.exists() for i in images):
                return []  # checked with its image
            if p.parent.name != "pet":
                read_json(p)  # an inherited sidecar: checked with the images below it
                return []
            return [Problem("error", str(p), None, "sidecar without an image",
                            f"add {stem}.nii.gz or remove the sidecar", MetadataError)]
        if name.endswith("_tacs.tsv") or name.endswith((".tac", ".dft")):
            read_tacs(p)
        elif name.endswith("_blood.tsv"):
            from petbind.io.blood import read_blood

            read_blood(p)
        elif name.endswith(".v"):
            from petbind.io.ecat import load_ecat

            load_ecat(p)
        elif name.endswith(".json"):
            read_json(p)
        elif name.endswith(".tsv"):
            read_tsv(p)
    except PetbindError as exc:
        return [Problem.from_error(exc, p)]
    return []


def validate_dataset(root: PathLike, *, check_data: bool = True) -> list[Problem]:
    """Problems of a BIDS-PET dataset: description, every PET image, table and sidecar."""
    from petbind.io.tables import read_json

    r = Path(root)
    out: list[Problem] = []
    desc = r / "dataset_description.json"
    if not desc.exists():
        out.append(Problem("error", str(desc), None, "dataset_description.json is missing",
                           "add it with at least Name and BIDSVersion", MetadataError))
    else:
        try:
            d = read_json(desc)
            for key in ("Name", "BIDSVersion"):
                if key not in d:
                    out.append(Problem("error", str(desc), key, "required field is missing",
                                       f"add '{key}'", MetadataError))
        except PetbindError as exc:
            out.append(Problem.from_error(exc, desc))
    out += _participants_problems(r)
    if not any((r / n).exists() for n in ("README", "README.md", "README.rst", "README.txt")):
        out.append(Problem("warning", str(r / "README"), None, "README is missing",
                           "describe the dataset in a README file"))
    images = _pet_images(r)
    if not images:
        out.append(Problem("error", str(r), None, "no PET images (*_pet.nii[.gz]) found",
                           "put images under sub-*/[ses-*/]pet/", MetadataError))
    for f in sorted(r.rglob("*")):
        rel = f.relative_to(r)
        if not f.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        out += validate_file(f, check_data=check_data)
    return out


def _participants_problems(root: Path) -> list[Problem]:
    """participants.tsv has ``participant_id`` and lists every ``sub-*`` folder."""
    from petbind.io.tables import read_tsv

    subjects = sorted(d.name for d in root.glob("sub-*") if d.is_dir())
    p = root / "participants.tsv"
    if not p.exists():
        if subjects:
            return [Problem("warning", str(p), None, "participants.tsv is missing",
                            "list the subjects (participant_id column)")]
        return []
    try:
        df = read_tsv(p)
    except PetbindError as exc:
        return [Problem.from_error(exc, p)]
    if "participant_id" not in df.columns:
        return [Problem("error", str(p), "participant_id", "column is missing",
                        "name the first column participant_id", MetadataError)]
    listed = set(df["participant_id"].astype(str))
    missing = [s for s in subjects if s not in listed]
    if missing:
        return [Problem("warning", str(p), "participant_id",
                        f"subject folders not listed: {missing[:5]}"
                        f"{'...' if len(missing) > 5 else ''}",
                        "add a row for every sub-* folder")]
    return []


def validate_path(path: PathLike, *, check_data: bool = True) -> list[Problem]:
    """Problems of a dataset folder or a single file, errors first.

    Parameters
    ----------
    path : str or PathLike
        A BIDS dataset root, any folder holding PET files, a folder with one
        DICOM PET series, or one file.
    check_data : bool
        Read every image once to find NaN/inf voxels and corrupt data.

    Raises
    ------
    FileFormatError
        Only if ``path`` does not exist.
    """
    p = Path(path)
    if not p.exists():
        raise FileFormatError("path does not exist", path=p, fix="check the path")
    if p.is_dir() and not (p / "dataset_description.json").exists() and _has_dicom(p):
        out = _validate_dicom(p)
    elif p.is_dir():
        out = validate_dataset(p, check_data=check_data)
    else:
        out = validate_file(p, check_data=check_data)
    return sorted(out, key=lambda q: q.severity != "error")


def _has_dicom(folder: Path, n: int = 5) -> bool:
    """True when one of the first files carries the DICOM preamble ('DICM' at byte 128)."""
    files = sorted(f for f in folder.iterdir() if f.is_file())[:n]
    for f in files:
        with open(f, "rb") as fh:
            fh.seek(128)
            if fh.read(4) == b"DICM":
                return True
    return False


def _validate_dicom(folder: Path) -> list[Problem]:
    """Problems of a folder holding one DICOM PET series (read with load_dicom)."""
    from petbind.io.dicom import load_dicom

    try:
        img = load_dicom(folder)
    except PetbindError as exc:
        return [Problem.from_error(exc, folder)]
    bad = int(np.count_nonzero(~np.isfinite(img.get_data())))
    if bad:
        return [Problem("error", str(folder), "data", f"{bad} NaN/inf voxel values",
                        "check the reconstruction", DataError)]
    return []
