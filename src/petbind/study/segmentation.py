"""A subject's own segmentation in T1w space, mapped onto each of its PET scans.

A lab holds one segmentation per subject, in the space of the subject's T1w,
not one atlas per scan on the PET grid. ``[dataset] segmentation`` names a
derivatives folder (or a file per subject); for each subject this module
finds, in order of preference:

1. a BIDS ``*_dseg.nii[.gz]`` in an ``anat/`` folder under ``sub-<label>/``
   (``pet/`` holds PET-space atlases, which are not this) in T1w space (no
   ``space-`` entity, or ``space-T1w``), ``desc-aparcaseg`` first, then
   ``desc-aseg``, then any other (PETPrep / PETSurfer / fMRIPrep outputs);
   its label table is the ``_dseg.tsv`` beside it, else an inherited one
   (``desc-aparcaseg_dseg.tsv`` in a folder above, as fMRIPrep writes it);
2. a FreeSurfer ``sub-<label>/mri/aparc+aseg.mgz``, then ``aseg.mgz``
   (nibabel reads ``.mgz``), named by the user's ``FreeSurferColorLUT.txt``
   (``dataset.segmentation_labels``, else one in the folder, else
   ``$FREESURFER_HOME``). FreeSurfer's colour table is not shipped with
   petbind: its licence (the FreeSurfer Software License) does not allow
   redistribution without agreement.

Mapping onto a PET scan (:func:`label_curves`): every PET voxel is sampled at
``3**3`` sub-voxel points and gets the fraction of each label there
(:func:`petbind.preprocess.regions.atlas_to_pet`, the partial-volume-aware
method of ``petbind preprocess``); a label's curve is the fraction-weighted
mean of the voxels it touches, and its volume the sum of its fractions. PET
points reach the T1w by the images' own affines when the scans are already
aligned with the T1w (no ``[preprocess]``), else through the PET->T1w
registration that ``[preprocess]`` wrote for the scan.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from petbind.errors import ConfigError, DataError
from petbind.io.atlas import check_labels_named, read_label_image, read_label_table

#: Subject-level segmentation file names, most preferred first (BIDS dseg patterns).
_DESC_ORDER = ("aparcaseg", "aseg")
_FS_FILES = ("aparc+aseg.mgz", "aseg.mgz")
#: Bytes of label fractions held at once while mapping a segmentation onto a PET grid.
FRACTION_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Segmentation:
    """A subject's segmentation file and the table naming its labels.

    Attributes
    ----------
    path : Path
        Label image in T1w space (``.nii``, ``.nii.gz`` or ``.mgz``).
    table : Path
        ``_dseg.tsv`` (columns ``index``, ``name``) or ``FreeSurferColorLUT.txt``.
    kind : {"dseg", "freesurfer"}
    """

    path: Path
    table: Path
    kind: str

    def describe(self, registered: bool) -> str:
        """One sentence for Methods."""
        what = ("the subject's FreeSurfer segmentation" if self.kind == "freesurfer"
                else "the subject's segmentation")
        how = ("through the PET-to-T1w registration of preprocessing" if registered
               else "by the images' affines (PET and T1w already aligned)")
        return (f"Regions came from {what} in T1w space ({self.path.name}, labels named by "
                f"{self.table.name}), mapped onto each PET scan {how} with partial-volume-"
                "aware label fractions (3 x 3 x 3 sub-samples per PET voxel); labels were "
                "pooled into regions weighted by their volumes")


def _entities(name: str) -> dict[str, str]:
    base = name.split(".", 1)[0]
    out = {}
    for part in base.split("_")[:-1]:
        m = re.match(r"^([a-zA-Z]+)-([a-zA-Z0-9+]+)$", part)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def _in_t1w_space(p: Path) -> bool:
    space = _entities(p.name).get("space")
    return space in (None, "T1w")


def _rank(p: Path) -> tuple[int, str]:
    desc = _entities(p.name).get("desc", "")
    order = _DESC_ORDER.index(desc) if desc in _DESC_ORDER else len(_DESC_ORDER)
    return order, p.as_posix()


def find_segmentation(bids: Path, subject: str, setting: str | dict[str, str],
                      labels: str = "") -> Segmentation:
    """The segmentation of one subject by the rules of the module docstring.

    Parameters
    ----------
    bids : Path
        BIDS root (relative settings are relative to it).
    subject : str
        Subject label without ``sub-``.
    setting : str or dict
        ``dataset.segmentation``: a folder, or subject -> file.
    labels : str
        ``dataset.segmentation_labels`` (a FreeSurferColorLUT.txt), optional.

    Raises
    ------
    DataError
        No segmentation for the subject, or no table naming its labels.
    """
    def where(p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else bids / q

    if isinstance(setting, dict):
        if subject not in setting:
            raise DataError(f"no segmentation given for sub-{subject}", field=
                            f"dataset.segmentation.{subject}",
                            fix=f'add "{subject}" = "<path of its segmentation>"')
        path = where(setting[subject])
        if not path.is_file():
            raise DataError("the segmentation file does not exist", path=path,
                            field=f"dataset.segmentation.{subject}",
                            fix="give the subject's *_dseg.nii.gz or aparc+aseg.mgz")
        root = path.parent
    else:
        root = where(setting)
        if not root.is_dir():
            raise ConfigError("the segmentation folder does not exist", path=root,
                              field="dataset.segmentation",
                              fix="give the derivatives folder holding sub-*/ (e.g. "
                              "derivatives/freesurfer), or a file per subject")
        sub = root / f"sub-{subject}"
        cands = [p for p in sorted(sub.rglob("*_dseg.nii*"))
                 if p.name.endswith((".nii", ".nii.gz")) and _in_t1w_space(p)
                 and p.parent.name == "anat"
                 and _entities(p.name).get("sub") == subject] if sub.is_dir() else []
        path = None
        if cands:
            path = min(cands, key=_rank)
        else:
            for name in _FS_FILES:
                for d in (sub / "mri", root / subject / "mri"):
                    if (d / name).is_file():
                        path = d / name
                        break
                if path is not None:
                    break
        if path is None:
            raise DataError(f"no segmentation for sub-{subject}", path=sub,
                            field="dataset.segmentation",
                            fix="put sub-<label>/anat/*_dseg.nii.gz (+ _dseg.tsv) in T1w "
                            "space or FreeSurfer's sub-<label>/mri/aparc+aseg.mgz there")
    if path.name.endswith(".mgz"):
        return Segmentation(path, _freesurfer_lut(bids, root, path, labels), "freesurfer")
    table = _dseg_table(path, root)
    if table is None:
        if labels:
            return Segmentation(path, where(labels), "dseg")
        raise DataError("the segmentation has no label table", path=path,
                        field="_dseg.tsv",
                        fix="write the BIDS _dseg.tsv (index, name) beside it, or give "
                        "dataset.segmentation_labels")
    return Segmentation(path, table, "dseg")


def _dseg_table(path: Path, root: Path) -> Path | None:
    own = path.with_name(path.name.split(".", 1)[0] + ".tsv")
    if own.is_file():
        return own
    ents = _entities(path.name)
    d = path.parent
    while True:
        for t in sorted(d.glob("*dseg.tsv")):
            e = _entities(t.name)
            if all(ents.get(k) == v for k, v in e.items()):
                return t
        if d == root or root not in d.parents:
            return None
        d = d.parent


def _freesurfer_lut(bids: Path, root: Path, path: Path, labels: str) -> Path:
    cands = []
    if labels:
        q = Path(labels).expanduser()
        cands.append(q if q.is_absolute() else bids / q)
    cands += [path.parent.parent / "FreeSurferColorLUT.txt", root / "FreeSurferColorLUT.txt"]
    if os.environ.get("FREESURFER_HOME"):
        cands.append(Path(os.environ["FREESURFER_HOME"]) / "FreeSurferColorLUT.txt")
    for c in cands:
        if c.is_file():
            return c
    raise DataError("FreeSurfer segmentation without a colour table to name its labels",
                    path=path, field="dataset.segmentation_labels",
                    fix="set dataset.segmentation_labels to your FreeSurferColorLUT.txt "
                    "(in $FREESURFER_HOME); petbind does not ship FreeSurfer's table")


def load_labels(seg: Segmentation) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Label image (int32), its affine and the table of the labels present."""
    labels, affine, _ = read_label_image(seg.path, field="segmentation")
    table = read_label_table(seg.table)
    present = check_labels_named(labels, table, seg.table)
    table = table[table["index"].isin(present)].reset_index(drop=True)
    return labels, affine, table


def label_names(seg: Segmentation) -> list[str]:
    """Names of the labels present in the segmentation, in table order."""
    return list(load_labels(seg)[2]["name"])


def label_curves(data: np.ndarray, pet_affine: np.ndarray, seg: Segmentation,
                 names: list[str] | None, timing: Any, *, transform: Any = None,
                 metadata: dict[str, Any] | None = None) -> tuple[Any, np.ndarray, dict]:
    """Partial-volume-aware curves of the segmentation's labels in one PET scan.

    Parameters
    ----------
    data : ndarray (X, Y, Z, T)
        The dynamic PET (kBq/mL).
    pet_affine : ndarray (4, 4)
    seg : Segmentation
    names : list of str or None
        Labels wanted (None: every label present).
    timing : FrameTiming
    transform : sitk.Transform, optional
        PET points -> T1w points (None: the affines align the images).
    metadata : dict, optional
        Copied into the table (isotope ...).

    Returns
    -------
    tacs : TACTable
        One curve per label, ``metadata["n_voxels"]`` = fractional volume in
        PET voxels.
    labels : ndarray of int32 (X, Y, Z)
        The majority label of each PET voxel (0 where background dominates).
    names : dict of int -> str
        Label index -> name of the labels used.

    Raises
    ------
    DataError
        A wanted label with no voxel in the PET field of view.
    """
    from petbind.preprocess.regions import Atlas, atlas_to_pet
    from petbind.tac import TACTable

    lab, affine, table = load_labels(seg)
    if names is not None:
        table = table[table["name"].isin(names)].reset_index(drop=True)
    atlas = Atlas(labels=lab, affine=affine,
                  table=table.assign(region=table["name"]), path=str(seg.path))
    shape = tuple(int(n) for n in data.shape[:3])
    n_lab, n_t = len(table), int(data.shape[3])
    # slabs of PET slices keep the label fractions (labels x voxels) within FRACTION_BYTES;
    # each voxel's sub-samples depend on its own position only, so slabs change nothing
    per_slice = max(1, n_lab * shape[0] * shape[1] * 4)
    step = max(1, min(shape[2], FRACTION_BYTES // per_slice))
    pet_aff = np.asarray(pet_affine, float)
    sums = np.zeros((n_lab, n_t))
    vol = np.zeros(n_lab)
    pet_labels = np.zeros(shape, np.int32)
    for z0 in range(0, shape[2], step):
        z1 = min(shape[2], z0 + step)
        aff = pet_aff.copy()
        aff[:3, 3] = pet_aff[:3, 3] + pet_aff[:3, 2] * z0
        slab_labels, frac = atlas_to_pet(atlas, (shape[0], shape[1], z1 - z0), aff,
                                         transform, method="fraction")
        pet_labels[:, :, z0:z1] = slab_labels
        block = np.asarray(data[:, :, z0:z1]).reshape(-1, n_t)
        for k in range(n_lab):  # a loop over labels, not voxels
            fk = frac[k].reshape(-1)
            idx = np.flatnonzero(fk)
            if idx.size:
                w = fk[idx].astype(np.float64)
                sums[k] += w @ block[idx].astype(np.float64)
                vol[k] += w.sum()
    empty = [n for n, v in zip(table["name"], vol, strict=True) if v <= 0]
    if empty:
        raise DataError(f"labels {empty[:5]} of the segmentation fall outside the PET field "
                        "of view", path=seg.path, field="segmentation",
                        fix="check that PET and T1w are aligned (else enable [preprocess] "
                        "to register them) or leave these labels out of [regions]")
    values = sums / vol[:, None]
    md = dict(metadata or {})
    md["n_voxels"] = {str(n): float(v) for n, v in zip(table["name"], vol, strict=True)}
    tacs = TACTable(timing, values, [str(n) for n in table["name"]], "kBq/mL", md)
    idx_names = {int(i): str(n) for i, n in zip(table["index"], table["name"], strict=True)}
    return tacs, pet_labels, idx_names


def labels_on_grid(seg: Segmentation, shape: tuple[int, ...], affine: np.ndarray,
                   transform: Any = None) -> tuple[np.ndarray, dict[int, str]]:
    """The segmentation's labels at the voxel centres of a PET grid, and index -> name."""
    from petbind.preprocess.regions import Atlas, atlas_to_pet

    lab, aff, table = load_labels(seg)
    atlas = Atlas(labels=lab, affine=aff, table=table.assign(region=table["name"]),
                  path=str(seg.path))
    out, _ = atlas_to_pet(atlas, shape, affine, transform, method="nearest")
    return out, {int(i): str(n) for i, n in zip(table["index"], table["name"], strict=True)}
