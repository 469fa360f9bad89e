"""Preprocessing inside the study pipeline: cached per subject and per scan.

With ``[preprocess] enabled = true`` the pipeline (:mod:`petbind.study.pipeline`)
preprocesses every scan before fitting it (docs/preprocessing.md, "In the
study pipeline")::

    OUT/preprocess/sub-X/anat/sub-X_from-T1w_to-template_mode-image_xfm.h5
    OUT/preprocess/sub-X/anat/sub-X_from-template_to-T1w_mode-image_xfm.h5
    OUT/preprocess/sub-X/anat/sub-X_provenance.json
    OUT/preprocess/sub-X/ses-Y/pet/<stem>_...   (the files of petbind.preprocess.scan)
    OUT/preprocess/sub-X/ses-Y/pet/<stem>_provenance.json

The T1w -> template registration (the slow step: affine + SyN) depends on the
subject only, so it runs once per subject and every scan of the subject reuses
it. Both levels keep a provenance record (:mod:`petbind.study.provenance`):
inputs' SHA-256, settings, outputs' SHA-256, written last. A rerun skips what
is current; changed inputs or settings redo it (and, through the hashes of
its outputs, everything downstream); a run killed at any point leaves only
whole files (each written atomically) and no record for unfinished work.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from petbind.errors import FileFormatError, MetadataError
from petbind.study.provenance import scan_is_current, scan_record, write_scan_record

#: Folder of the preprocessing outputs under the pipeline's output root.
PREPROCESS_DIR = "preprocess"


@dataclass(frozen=True)
class PreprocessPlan:
    """What every scan's preprocessing needs (small and picklable, for dask).

    Attributes
    ----------
    template, atlas, atlas_table : Path
        Template T1w, its atlas (dseg) and label table.
    options : PreprocessOptions
    t1w : dict of str -> Path
        The T1w of each subject label (without ``sub-``).
    """

    template: Path
    atlas: Path
    atlas_table: Path
    options: Any
    t1w: dict[str, Path] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        """Preprocessing settings as recorded in provenance (JSON-serialisable)."""
        opts = asdict(self.options)
        opts["reference_window"] = list(opts["reference_window"] or [])
        opts["syn_level_iters"] = list(opts["syn_level_iters"])
        return opts


def make_plan(bids: str | os.PathLike, config: Any, subjects: list[tuple[str, Path]]
              ) -> PreprocessPlan:
    """Check the template, atlas and every subject's T1w before any long step.

    Parameters
    ----------
    bids : path
        BIDS root (relative template / atlas paths are relative to it).
    config : PreprocessConfig
        The study config's ``preprocess`` section.
    subjects : list of (subject label, one PET path of that subject)

    Raises
    ------
    FileFormatError
        The template or a subject's T1w is missing (named).
    MetadataError
        The template has no atlas or the atlas has no label table.
    """
    from petbind.preprocess.regions import atlas_table_path
    from petbind.preprocess.scan import find_t1w, load_anatomy

    template, atlas = config.resolve(Path(bids))
    if not template.is_file():
        raise FileFormatError("the template image does not exist", path=template,
                              field="preprocess.template",
                              fix="give the template T1w (relative paths are relative to "
                                  "the BIDS root)")
    load_anatomy(template, "template")
    table = atlas_table_path(atlas)
    if not atlas.is_file() or not table.is_file():
        missing = atlas if not atlas.is_file() else table
        raise MetadataError("the template has no atlas", path=missing, field="preprocess.atlas",
                            fix=f"set preprocess.atlas to a template-space dseg, or add "
                                f"{atlas.name} and {table.name} beside the template")
    t1w = {sub: find_t1w(bids, pet) for sub, pet in subjects}
    return PreprocessPlan(template=template, atlas=atlas, atlas_table=table,
                          options=config.options(), t1w=t1w)


def subject_dir(out_dir: Path, subject: str) -> Path:
    """``OUT/preprocess/sub-X/anat``: the subject's transforms."""
    return Path(out_dir) / PREPROCESS_DIR / f"sub-{subject}" / "anat"


def scan_preprocess_dir(out_dir: Path, rel_dir: str) -> Path:
    """``OUT/preprocess/<rel_dir>``: one scan's preprocessing outputs."""
    return Path(out_dir) / PREPROCESS_DIR / rel_dir


def _subject_settings(plan: PreprocessPlan) -> dict[str, Any]:
    s = plan.settings()
    return {"nonlinear": s["nonlinear"], "syn_level_iters": s["syn_level_iters"]}


@contextlib.contextmanager
def _quiet_dipy(enabled: bool) -> Iterator[None]:
    """Silence dipy's INFO lines (it logs SyN progress to stdout) during a registration."""
    if not enabled:
        yield
        return
    import logging

    import dipy.align.imwarp  # noqa: F401  (configures dipy's logger on import)

    log = logging.getLogger("dipy")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def _subject_check(plan: PreprocessPlan, subject: str, out: Path
                   ) -> tuple[Path, dict[str, Path], dict[str, Any]]:
    """Provenance file, inputs and settings of a subject's registration."""
    prov = subject_dir(out, subject) / f"sub-{subject}_provenance.json"
    return prov, {"t1w": plan.t1w[subject], "template": plan.template}, _subject_settings(plan)


def subject_is_current(plan: PreprocessPlan, subject: str, out_dir: str | os.PathLike) -> bool:
    """True when :func:`prepare_subject` would reuse the cached transforms (no registration).

    The same check :func:`prepare_subject` makes (inputs' and outputs' SHA-256,
    settings, version), without loading the transforms: the pipeline asks it in
    its own process before it sends any work to a worker.
    """
    out = Path(out_dir)
    return scan_is_current(*_subject_check(plan, subject, out), out)


def prepare_subject(plan: PreprocessPlan, subject: str, out_dir: str | os.PathLike
                    ) -> tuple[Any, bool]:
    """The subject's T1w <-> template transforms, computed once and cached.

    Returns
    -------
    registration : SubjectRegistration
        With ``paths`` to the ``.h5`` files under ``OUT/preprocess/sub-X/anat``.
    skipped : bool
        True when the cached transforms were current and reused.
    """
    from petbind.io.tables import read_json
    from petbind.preprocess.scan import (
        load_subject_registration,
        plot_subject_qc,
        register_subject,
        save_subject_registration,
    )

    out = Path(out_dir)
    folder = subject_dir(out, subject)
    prov, inputs, settings = _subject_check(plan, subject, out)
    if scan_is_current(prov, inputs, settings, out):
        metric = read_json(prov).get("metric")
        return load_subject_registration(folder, f"sub-{subject}", metric), True
    with _quiet_dipy(plan.options.nonlinear):
        reg = register_subject(plan.t1w[subject], plan.template, plan.options)
    reg = save_subject_registration(reg, folder, f"sub-{subject}")
    # the T1w-on-template QC figure once per subject; each scan copies it
    reg = plot_subject_qc(reg, plan.t1w[subject], plan.template, folder, f"sub-{subject}")
    record = scan_record(inputs, settings, [*reg.paths.values(), reg.qc], out)
    record["metric"] = reg.metric
    write_scan_record(prov, record)
    return reg, False


def subject_files(out_dir: Path, subject: str) -> dict[str, Path]:
    """Paths of a subject's cached transforms (as :func:`prepare_subject` writes them)."""
    folder = subject_dir(out_dir, subject)
    sub = f"sub-{subject}"
    return {"xfm_t1w_template": folder / f"{sub}_from-T1w_to-template_mode-image_xfm.h5",
            "xfm_template_t1w": folder / f"{sub}_from-template_to-T1w_mode-image_xfm.h5"}


def preprocess_files(out_dir: Path, rel_dir: str, stem: str, motion: bool) -> dict[str, Path]:
    """Paths the pipeline reads from a scan's preprocessing (names of preprocess.scan)."""
    d = scan_preprocess_dir(out_dir, rel_dir)
    files = {"dseg": d / f"{stem}_dseg.nii.gz", "dseg_tsv": d / f"{stem}_dseg.tsv",
             "xfm_pet_t1w": d / f"{stem}_from-pet_to-T1w_mode-image_xfm.tfm",
             "tacs": d / f"{stem}_tacs.tsv"}
    if motion:
        files["pet_mc"] = d / f"{stem}_desc-mc_pet.nii.gz"
    return files


def _scan_check(plan: PreprocessPlan, scan: Any, out: Path
                ) -> tuple[Path, dict[str, Path], dict[str, Any]]:
    """Provenance file, inputs and settings of a scan's preprocessing."""
    prov = scan_preprocess_dir(out, scan.rel_dir) / f"{scan.stem}_provenance.json"
    inputs = {"pet": scan.pet, "t1w": plan.t1w[scan.subject], "template": plan.template,
              "atlas": plan.atlas, "atlas_table": plan.atlas_table,
              **subject_files(out, scan.subject)}
    if scan.sidecar.exists():
        inputs["pet_json"] = scan.sidecar
    return prov, inputs, plan.settings()


def preprocess_is_current(plan: PreprocessPlan, scan: Any, out_dir: str | os.PathLike) -> bool:
    """True when :func:`preprocess_study_scan` would skip the scan (the same check, no work)."""
    out = Path(out_dir)
    return scan_is_current(*_scan_check(plan, scan, out), out)


def preprocess_study_scan(plan: PreprocessPlan, scan: Any, out_dir: str | os.PathLike
                          ) -> tuple[dict[str, Any], bool]:
    """One scan's preprocessing, unless its provenance is current.

    Uses the subject's transforms cached by :func:`prepare_subject` (which
    must have run). Returns the preprocessing summary (max FD, flagged frames,
    registration metrics) and whether it was skipped.
    """
    from petbind.io.tables import read_json
    from petbind.preprocess.scan import load_subject_registration, preprocess_scan

    out = Path(out_dir)
    folder = scan_preprocess_dir(out, scan.rel_dir)
    sub_files = subject_files(out, scan.subject)
    prov, inputs, settings = _scan_check(plan, scan, out)
    if scan_is_current(prov, inputs, settings, out):
        return read_json(prov).get("summary", {}), True
    reg = load_subject_registration(sub_files["xfm_t1w_template"].parent, f"sub-{scan.subject}")
    res = preprocess_scan(scan.pet, plan.t1w[scan.subject], plan.template, folder,
                          atlas_path=plan.atlas, atlas_table=plan.atlas_table,
                          options=plan.options, subject=reg)
    written = [p for k, p in res.outputs.items() if k not in sub_files and Path(p).exists()]
    written += [p.with_name(p.name.removesuffix(".nii.gz") + ".json") for p in list(written)
                if p.name.endswith(".nii.gz")]
    written.append(folder / f"{scan.stem}_tacs.json")
    record = scan_record(inputs, settings, sorted({p for p in written if p.exists()}), out)
    summary = {k: (v.tolist() if isinstance(v, np.ndarray) else v)
               for k, v in res.summary.items()}
    record["summary"] = summary
    write_scan_record(prov, record)
    return summary, False


def template_grid(template: str | os.PathLike, voxel_mm: float
                  ) -> tuple[tuple[int, int, int], np.ndarray]:
    """The template's field of view on a grid of ``voxel_mm`` voxels (the statistics grid).

    The axes keep the template's directions; the grid is centred on the
    template's centre and covers at least its field of view.

    Parameters
    ----------
    template : path
        Template image.
    voxel_mm : float
        Voxel size of the new grid (mm), e.g. the PET voxel size.

    Returns
    -------
    shape : (int, int, int)
    affine : ndarray (4, 4)
    """
    from petbind.io.images import open_image

    img = open_image(template)
    aff = np.asarray(img.affine, dtype=float)
    shape = np.asarray(img.shape[:3], dtype=float)
    size = np.linalg.norm(aff[:3, :3], axis=0)
    new_shape = np.maximum(1, np.ceil(shape * size / voxel_mm)).astype(int)
    new = aff.copy()
    new[:3, :3] = aff[:3, :3] / size * voxel_mm
    centre = aff[:3, :3] @ ((shape - 1) / 2.0) + aff[:3, 3]
    new[:3, 3] = centre - new[:3, :3] @ ((new_shape - 1) / 2.0)
    return (int(new_shape[0]), int(new_shape[1]), int(new_shape[2])), new


def voxel_size(affine: np.ndarray) -> float:
    """Mean voxel edge (mm) of an affine."""
    return float(np.mean(np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)))


def maps_to_template(bp: np.ndarray, valid: np.ndarray, pet_affine: np.ndarray,
                     plan: PreprocessPlan, files: dict[str, Path], subject_xfm: Path
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A PET-space BP_ND map and its validity mask on the template statistics grid.

    The map is pulled through template -> T1w (the subject's transform) ->
    PET (the scan's rigid PET -> T1w transform) with
    :func:`petbind.preprocess.regions.to_template` (linear; NaN where less
    than half of the neighbourhood was valid or outside the PET field of view).

    Returns
    -------
    bp : float32 (X, Y, Z)
        NaN where not valid.
    mask : uint8 (X, Y, Z)
        1 where ``bp`` is finite.
    affine : (4, 4)
        Of the template grid at the PET voxel size (:func:`template_grid`).
    """
    from petbind.preprocess.regions import to_template
    from petbind.preprocess.register import compose, load_transform

    shape, aff = template_grid(plan.template, voxel_size(pet_affine))
    tpl_to_pet = compose(load_transform(subject_xfm), load_transform(files["xfm_pet_t1w"]))
    data = np.where(np.asarray(valid) > 0, np.asarray(bp, dtype=np.float32), np.nan)
    out = to_template(data, pet_affine, shape, aff, tpl_to_pet)
    return out, np.isfinite(out).astype(np.uint8), aff


def template_atlas(plan_or_atlas: Any, shape: tuple[int, ...], affine: np.ndarray
                   ) -> tuple[np.ndarray, dict[int, str]]:
    """The template atlas on a template-space grid (nearest label at voxel centres)."""
    from petbind.preprocess.regions import atlas_to_pet, load_atlas

    atlas_path = getattr(plan_or_atlas, "atlas", plan_or_atlas)
    table = getattr(plan_or_atlas, "atlas_table", None)
    atlas = load_atlas(atlas_path, table)
    labels, _ = atlas_to_pet(atlas, shape, affine, None, method="nearest")
    return labels.astype(np.int64), atlas.region_of()
