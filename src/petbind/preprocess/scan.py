"""Preprocess one PET scan: motion correction, registration, atlas regions, QC.

``preprocess_scan`` chains the steps of :mod:`petbind.preprocess` for one
BIDS-PET scan and writes BIDS-derivative outputs (file names follow
fMRIPrep's for transforms)::

    <stem>_desc-motion_timeseries.tsv (+ .json)   per-frame motion, FD, flags
    <stem>_desc-mc_pet.nii.gz (+ .json)            realigned 4-D PET (kBq/mL,
                                                   decay-corrected to injection), on
                                                   the PET grid in the T1w's pose
    <stem>_desc-mean_pet.nii.gz                    mean realigned image (registration)
    <stem>_from-pet_to-T1w_mode-image_xfm.tfm      T1w points -> points of the written
                                                   PET (rigid; identity when the frames
                                                   were placed in the T1w pose)
    <sub>_from-T1w_to-template_mode-image_xfm.h5   template points -> T1w points
    <sub>_from-template_to-T1w_mode-image_xfm.h5   T1w points -> template points
    <stem>_dseg.nii.gz + _dseg.tsv                 atlas labels on the PET grid
    <stem>_tacs.tsv (+ .json)                      region curves (BIDS derivative)
    <stem>_desc-motion_qc.png, _desc-pet2t1w_qc.png, _desc-t1w2template_qc.png

The T1w -> template registration depends on the subject only:
:func:`register_subject` computes it once and ``preprocess_scan(...,
subject=...)`` reuses it for each of the subject's scans (then the two
``.h5`` files are the caller's, e.g. the study pipeline's
``preprocess/sub-X/anat/``, and are not written again per scan).

Nothing is written next to the inputs; every file is written atomically.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from petbind.errors import DataError, FileFormatError, MetadataError
from petbind.io.atomic import write_atomic, write_text_atomic
from petbind.io.files import read_bytes
from petbind.io.tables import read_json


@dataclass
class PreprocessOptions:
    """Settings of :func:`preprocess_scan` (the study config's ``preprocess`` section).

    Attributes
    ----------
    motion : bool
        Realign frames (off: use the frames as they are).
    reference_window : (float, float) or None
        Minutes after injection of the motion reference (default 10-60 % of scan).
    min_block_min : float
        Short early frames are pooled to blocks at least this long (min).
    fd_threshold_mm, fd_radius_mm : float
        Flag frames whose framewise displacement exceeds the threshold; sphere radius.
    nonlinear : bool
        Add dipy SyN after the affine T1w -> template step.
    syn_level_iters : tuple of int
        SyN iterations per level, coarse to fine.
    atlas_method : {"fraction", "nearest"}
        Partial-volume-aware or nearest-neighbour atlas resampling.
    grey_matter : bool
        Restrict grey-matter regions to T1w grey matter (k-means).
    t1w_pose : bool
        With ``motion``: resample the frames once, through each frame's motion
        and the PET -> T1w registration, onto the PET grid in the subject's
        T1w-aligned pose (instead of the motion reference's pose). Every scan
        of a subject then shares one pose, so the atlas falls on the same
        voxels in each (what matters for regions of a few voxels).
    region_weights : {"majority", "fraction"}
        How ``<stem>_tacs.tsv`` averages voxels: ``majority`` (default) the
        plain mean over the voxels whose majority label is the region (the
        estimator of the pipeline and of the simulator's noise-free truth);
        ``fraction`` weights every voxel by the region's share of it, which
        adds boundary voxels that are mostly a neighbour and lowered NAcc/VP
        BP_ND by 7-10 % on noise-free simulated scans (docs/preprocessing.md).
    """

    motion: bool = True
    reference_window: tuple[float, float] | None = None
    min_block_min: float = 2.0
    fd_threshold_mm: float = 0.5
    fd_radius_mm: float = 50.0
    nonlinear: bool = True
    syn_level_iters: tuple[int, ...] = (10, 5, 2)
    atlas_method: Literal["fraction", "nearest"] = "fraction"
    grey_matter: bool = False
    t1w_pose: bool = True
    region_weights: Literal["majority", "fraction"] = "majority"


#: PET -> T1w registration settings (:func:`~petbind.preprocess.register.register_linear`):
#: 50 iterations per level instead of 100, and light smoothing at the finest level,
#: halved its time (5.5 -> 2.8 s CPU) at the same accuracy; stopping at 2 mm (shrink 2)
#: cost 0.2 deg and moved thin cortical regions' BP_ND by up to 1.7 %
#: (docs/preprocessing.md, "Speed"). A minimum step of 1e-3 (the levels stop after about
#: 20 iterations instead of 50) and 10 % of the T1w voxels sampled instead of 20 % took it
#: from 3.1-4.2 to 1.3-1.4 s CPU on realistic-demo scans; the frames' placement on the T1w
#: against the simulator's truth moved from 0.08-0.12 to 0.10-0.15 mm mean error (issue 18).
PET_T1W_REGISTRATION: dict[str, Any] = {"shrink": (4, 2, 1), "smooth_mm": (4.0, 2.0, 1.0),
                                        "iterations": 50, "sampling": 0.1, "min_step": 1e-3}

#: T1w -> template affine settings (:func:`register_subject`): a minimum step of 1e-3, no
#: whole-image gradient filters and 10 % of the template voxels sampled instead of 1e-4,
#: filters and 20 % took it from 6.8 to 2.9 s CPU per realistic-demo subject; the template
#: brain voxels land 0.012 mm (mean; 0.035 mm at most) from where the simulator's true
#: rigid pose puts them, against 0.027 (0.058) mm before, on a 1 mm grid
#: (benchmarks/bench_subject_affine.py, benchmarks/results/demo.md; issue 18).
SUBJECT_AFFINE: dict[str, Any] = {"min_step": 1e-3, "gradient_filter": False,
                                  "sampling": 0.1}


@dataclass
class SubjectRegistration:
    """T1w <-> template transforms of one subject (see :func:`register_subject`).

    Attributes
    ----------
    template_to_t1w : sitk.Transform
        Maps template points to T1w points (resamples the T1w onto the
        template; the file ``*_from-T1w_to-template_mode-image_xfm.h5``).
    t1w_to_template : sitk.Transform
        The inverse map (``*_from-template_to-T1w_mode-image_xfm.h5``).
    metric : float or None
        Final metric of the affine step (None when loaded from files).
    paths : dict of str -> Path
        Files holding the transforms (``xfm_t1w_template``, ``xfm_template_t1w``),
        when saved.
    qc : Path or None
        The subject's T1w-edges-on-template figure, once drawn
        (:func:`plot_subject_qc`); each scan's ``_desc-t1w2template_qc.png`` is
        then a copy of it instead of a new drawing (the T1w -> template
        transform is the subject's, so the figure is the same for every scan).
    """

    template_to_t1w: Any
    t1w_to_template: Any
    metric: float | None = None
    paths: dict[str, Path] = field(default_factory=dict)
    qc: Path | None = None


@dataclass
class PreprocessResult:
    """Paths written and a short summary of one preprocessed scan."""

    outputs: dict[str, Path] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def single_threaded_itk() -> Iterator[None]:
    """Run SimpleITK with one thread: its multi-threaded registration metrics sum in a
    thread-dependent order, so the same inputs and seed gave affine matrices differing in
    the 4th decimal (and BP_ND by up to 0.3 %) from run to run; with one thread they are
    bit-identical."""
    import SimpleITK as sitk

    old = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(old)


def _reproducible(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with single_threaded_itk():
            return fn(*args, **kwargs)
    return wrapper


def _strip(name: str, suffixes: tuple[str, ...]) -> str:
    for s in suffixes:
        if name.endswith(s):
            return name[: -len(s)]
    return name


def load_anatomy(path: str | os.PathLike | None, role: str) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3-D anatomical image (T1w or template), checking orientation codes.

    Raises
    ------
    FileFormatError
        Missing or unreadable file, or not 3-D.
    MetadataError
        Both ``qform_code`` and ``sform_code`` are 0 (orientation unknown), so
        the voxel axes cannot be placed in the world.
    """
    from petbind.io.bids import open_nifti

    if path is None:
        raise FileFormatError(f"no {role} image given", field=role,
                              fix=f"give the {role} image (e.g. sub-01/anat/sub-01_T1w.nii.gz)")
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(f"{role} image not found", path=p, field=role,
                              fix=f"add the {role} image or give its path")
    img = open_nifti(p)
    check_orientation(img, p)
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise FileFormatError(f"{role} must be a 3-D image, got shape {data.shape}", path=p,
                              field=role, fix=f"give a single 3-D {role} volume")
    return np.asarray(data, dtype=np.float32), np.asarray(img.affine, dtype=float)


def check_orientation(img: Any, path: str | os.PathLike) -> None:
    """Refuse NIfTI images whose ``qform_code`` and ``sform_code`` are both 0."""
    header = getattr(img, "header", None)
    if header is None or "sform_code" not in header:
        return
    if int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0:
        raise MetadataError(
            "orientation unknown: qform_code and sform_code are both 0, so left/right and "
            "the voxel-to-world placement are undefined", path=path, field="sform_code",
            fix="set the orientation (e.g. re-export with dcm2niix, or fslorient / "
                "nibabel set_sform with code 1 after checking left and right)")


def find_t1w(bids_dir: str | os.PathLike, pet: str | os.PathLike) -> Path:
    """The subject's T1w: ``sub-X/anat/sub-X*_T1w.nii[.gz]`` (else a session's anat folder).

    Raises
    ------
    FileFormatError
        No T1w for the subject of ``pet`` (the message names the folder searched).
    """
    bids = Path(bids_dir)
    sub = Path(pet).name.split("_")[0]
    cands = sorted(list((bids / sub / "anat").glob(f"{sub}*_T1w.nii*"))
                   + list((bids / sub).glob(f"ses-*/anat/{sub}*_T1w.nii*")))
    if not cands:
        raise FileFormatError("no T1w image for this subject", path=bids / sub / "anat",
                              field="T1w",
                              fix=f"add {sub}/anat/{sub}_T1w.nii.gz (or give --t1w)")
    return cands[0]


def default_atlas(template: str | os.PathLike) -> Path:
    """The atlas expected beside a template: ``*_T1w.nii.gz`` -> ``*_dseg.nii.gz``."""
    p = Path(template)
    base = _strip(p.name, (".nii.gz", ".nii"))
    base = _strip(base, ("_T1w",))
    return p.with_name(base + "_dseg.nii.gz")


@_reproducible
def register_subject(t1w_path: str | os.PathLike | None,
                     template_path: str | os.PathLike,
                     options: PreprocessOptions | None = None) -> SubjectRegistration:
    """T1w -> template registration of one subject: affine (SimpleITK) + optional SyN (dipy).

    Parameters
    ----------
    t1w_path : path
        The subject's T1w.
    template_path : path
        Template T1-weighted image.
    options : PreprocessOptions, optional
        ``nonlinear`` and ``syn_level_iters`` are used.

    Returns
    -------
    SubjectRegistration

    Notes
    -----
    Runs SimpleITK single-threaded (:func:`single_threaded_itk`) so that the
    same inputs give the same transforms, bit for bit.
    """
    from petbind.preprocess.register import compose, register_linear, register_nonlinear

    opts = options or PreprocessOptions()
    t1, t1_aff = load_anatomy(t1w_path, "T1w")
    tpl, tpl_aff = load_anatomy(template_path, "template")
    lin = register_linear(tpl, tpl_aff, t1, t1_aff, kind="affine", metric="mattes",
                          **SUBJECT_AFFINE)
    if opts.nonlinear:
        syn = register_nonlinear(tpl, tpl_aff, t1, t1_aff, lin.matrix,
                                 level_iters=opts.syn_level_iters)
        return SubjectRegistration(syn.forward, syn.inverse, lin.metric)
    return SubjectRegistration(compose(lin.matrix), compose(np.linalg.inv(lin.matrix)),
                               lin.metric)


def save_subject_registration(reg: SubjectRegistration, out_dir: str | os.PathLike,
                              subject: str) -> SubjectRegistration:
    """Write both transforms as ``<subject>_from-..._mode-image_xfm.h5`` (ITK) in ``out_dir``."""
    from petbind.preprocess.register import save_transform

    out = Path(out_dir)
    paths = {
        "xfm_t1w_template": save_transform(
            out / f"{subject}_from-T1w_to-template_mode-image_xfm.h5", reg.template_to_t1w),
        "xfm_template_t1w": save_transform(
            out / f"{subject}_from-template_to-T1w_mode-image_xfm.h5", reg.t1w_to_template)}
    return replace(reg, paths=paths)


def plot_subject_qc(reg: SubjectRegistration, t1w_path: str | os.PathLike,
                    template_path: str | os.PathLike, out_dir: str | os.PathLike,
                    subject: str) -> SubjectRegistration:
    """Draw ``<subject>_desc-t1w2template_qc.png`` (T1w edges on the template) once.

    Returns ``reg`` with ``qc`` set to the figure, which
    :func:`preprocess_scan` then copies for each of the subject's scans.
    """
    from petbind.preprocess import qc
    from petbind.preprocess.register import resample

    t1, t1_aff = load_anatomy(t1w_path, "T1w")
    tpl, tpl_aff = load_anatomy(template_path, "template")
    t1_in_tpl = resample(t1, t1_aff, tpl.shape, tpl_aff, reg.template_to_t1w)
    path = qc.plot_edges(Path(out_dir) / f"{subject}_desc-t1w2template_qc.png", tpl, t1_in_tpl,
                         title=f"{subject}: T1w edges on template")
    return replace(reg, qc=path)


def load_subject_registration(out_dir: str | os.PathLike, subject: str,
                              metric: float | None = None) -> SubjectRegistration:
    """Read the transforms written by :func:`save_subject_registration`."""
    from petbind.preprocess.register import load_transform

    out = Path(out_dir)
    paths = {"xfm_t1w_template": out / f"{subject}_from-T1w_to-template_mode-image_xfm.h5",
             "xfm_template_t1w": out / f"{subject}_from-template_to-T1w_mode-image_xfm.h5"}
    qc = out / f"{subject}_desc-t1w2template_qc.png"
    return SubjectRegistration(load_transform(paths["xfm_t1w_template"]),
                               load_transform(paths["xfm_template_t1w"]), metric, paths,
                               qc if qc.is_file() else None)


@_reproducible
def preprocess_scan(
    pet_path: str | os.PathLike,
    t1w_path: str | os.PathLike | None,
    template_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    atlas_path: str | os.PathLike | None = None,
    atlas_table: str | os.PathLike | None = None,
    options: PreprocessOptions | None = None,
    subject: SubjectRegistration | None = None,
) -> PreprocessResult:
    """Run motion correction, registration and atlas regions for one scan.

    Parameters
    ----------
    pet_path : path
        BIDS-PET ``*_pet.nii[.gz]`` with its JSON sidecar (4-D).
    t1w_path : path
        The subject's T1w.
    template_path : path
        Template T1-weighted image (the common space).
    out_dir : path
        Folder for this scan's outputs (created; never an input folder).
    atlas_path, atlas_table : path, optional
        Template-space ``dseg`` and label table (default: ``*_dseg.nii.gz`` and
        ``*_dseg.tsv`` beside the template).
    options : PreprocessOptions, optional
    subject : SubjectRegistration, optional
        The subject's T1w <-> template transforms computed beforehand
        (:func:`register_subject`); then the T1w -> template step is skipped
        and its ``.h5`` files are not written (``outputs`` points to
        ``subject.paths`` when it has them).

    Returns
    -------
    PreprocessResult

    Notes
    -----
    Runs SimpleITK single-threaded (:func:`single_threaded_itk`): the same
    inputs give the same outputs, bit for bit.
    """
    from petbind.io.bids import load_pet, open_nifti, pet_sidecar, save_image
    from petbind.io.tables import write_tacs
    from petbind.preprocess import qc
    from petbind.preprocess.motion import (
        apply_motion,
        estimate_motion,
        realigned_mean,
        write_motion_tsv,
    )
    from petbind.preprocess.regions import (
        atlas_table_path,
        atlas_to_pet,
        grey_matter_mask,
        load_atlas,
        region_tacs,
    )
    from petbind.preprocess.register import compose, register_linear, resample, save_transform

    opts = options or PreprocessOptions()
    pet_p = Path(pet_path)
    out = Path(out_dir)
    if out.resolve() in {pet_p.parent.resolve(), Path(template_path).parent.resolve()}:
        raise DataError("the output folder is an input folder", path=out, field="out",
                        fix="write derivatives elsewhere, e.g. BIDS_DIR/derivatives/petbind")
    # --- inputs (fail early, before any long step) -------------------------------
    img = load_pet(pet_p)
    if img.n_frames < 2 and opts.motion:
        raise DataError("motion correction needs a dynamic (4-D) PET with several frames",
                        path=pet_p, field="data", fix="give the dynamic PET or set motion off")
    t1, t1_aff = load_anatomy(t1w_path, "T1w")
    tpl, tpl_aff = load_anatomy(template_path, "template")
    atlas_file = Path(atlas_path) if atlas_path is not None else default_atlas(template_path)
    if not atlas_file.is_file():
        raise MetadataError("the template has no atlas", path=template_path, field="atlas",
                            fix=f"give --atlas (a dseg in template space) or add {atlas_file.name}"
                                f" and {atlas_table_path(atlas_file).name} beside the template")
    atlas = load_atlas(atlas_file, atlas_table)
    check_orientation(open_nifti(pet_p), pet_p)

    stem = _strip(pet_p.name, (".nii.gz", ".nii"))
    stem = _strip(stem, ("_pet",))
    sub = stem.split("_")[0] if stem.startswith("sub-") else stem
    res = PreprocessResult()
    o = res.outputs
    data = img.get_data()
    timing = img.timing

    # --- motion ------------------------------------------------------------------
    if opts.motion:
        motion = estimate_motion(data, img.affine, timing,
                                 reference_window=opts.reference_window,
                                 min_block_min=opts.min_block_min,
                                 fd_threshold_mm=opts.fd_threshold_mm,
                                 fd_radius_mm=opts.fd_radius_mm, source=pet_p)
        raw = data
        o["motion"] = write_motion_tsv(out / f"{stem}_desc-motion_timeseries.tsv", motion,
                                       timing)
        o["motion_qc"] = qc.plot_motion(out / f"{stem}_desc-motion_qc.png", motion, timing,
                                        title=f"{stem}: head motion")
        res.summary.update(max_fd_mm=float(motion.fd.max()),
                           n_flagged=int(motion.flagged.sum()),
                           flagged_frames=np.flatnonzero(motion.flagged).tolist())

    # --- PET -> T1w (rigid), on the mean realigned image ---------------------------
    w = (timing.duration / timing.duration.sum()).astype(np.float32)
    if opts.motion:
        # the registration needs only the mean realigned image: one resampling per block
        mean_pet = realigned_mean(raw, img.affine, motion, timing.duration)
    else:
        mean_pet = np.tensordot(data, w, axes=([-1], [0]))
    pet2t1 = register_linear(t1, t1_aff, mean_pet, img.affine, kind="rigid", metric="mattes",
                             **PET_T1W_REGISTRATION)
    pet_t1 = pet2t1.matrix
    if opts.motion:
        # one resampling per frame: (T1w-aligned point ->) reference pose -> frame
        posed = (replace(motion, matrices=motion.matrices @ pet2t1.matrix) if opts.t1w_pose
                 else motion)
        data = apply_motion(raw, img.affine, posed)
        del raw
        mean_pet = np.tensordot(data, w, axes=([-1], [0]))
        if opts.t1w_pose:
            pet_t1 = np.eye(4)
    if opts.motion:
        side = read_json(pet_sidecar(pet_p), required=False)
        side.update({"Units": "kBq/mL", "ImageDecayCorrected": True,
                     "ImageDecayCorrectionTime": side.get("InjectionStart", 0.0),
                     "FrameTimesStart": (timing.start_s + side.get("InjectionStart", 0.0)
                                         ).tolist(),
                     "FrameDuration": timing.duration_s.tolist(),
                     "Sources": [str(pet_p)], "MotionCorrection": motion.settings,
                     "Pose": ("the subject's T1w (frames realigned and placed on the T1w "
                              "in one resampling)" if opts.t1w_pose
                              else "the motion reference"),
                     "ReferenceToT1w": {"Matrix": pet2t1.matrix.tolist(),
                                        "Description": "RAS point map T1w -> motion reference "
                                                       "pose (rigid, mm)",
                                        "Metric": float(pet2t1.metric)}})
        o["pet_mc"] = save_image(out / f"{stem}_desc-mc_pet.nii.gz", data, img.affine, side)
    o["pet_mean"] = save_image(out / f"{stem}_desc-mean_pet.nii.gz", mean_pet, img.affine,
                               {"Description": "duration-weighted mean of the realigned frames"})
    o["xfm_pet_t1w"] = save_transform(out / f"{stem}_from-pet_to-T1w_mode-image_xfm.tfm",
                                      pet_t1)
    # --- T1w -> template (affine + SyN), once per subject -----------------------------
    if subject is None:
        subject = save_subject_registration(register_subject(t1w_path, template_path, opts),
                                            out, sub)
    tpl_to_t1, t1_to_tpl = subject.template_to_t1w, subject.t1w_to_template
    o.update(subject.paths)
    # --- QC overlays ---------------------------------------------------------------
    pet_in_t1 = resample(mean_pet, img.affine, t1.shape, t1_aff, pet_t1)
    o["pet_t1w_qc"] = qc.plot_edges(out / f"{stem}_desc-pet2t1w_qc.png", t1, pet_in_t1,
                                    title=f"{stem}: PET edges on T1w")
    qc_t1w = out / f"{stem}_desc-t1w2template_qc.png"
    if subject.qc is not None and Path(subject.qc).is_file():
        data_png = read_bytes(subject.qc)  # the subject's figure
        write_atomic(qc_t1w, lambda tmp: tmp.write_bytes(data_png))
        o["t1w_template_qc"] = qc_t1w
    else:
        t1_in_tpl = resample(t1, t1_aff, tpl.shape, tpl_aff, tpl_to_t1)
        o["t1w_template_qc"] = qc.plot_edges(qc_t1w, tpl, t1_in_tpl,
                                             title=f"{sub}: T1w edges on template")
    # --- atlas into PET space, region curves ---------------------------------------
    pet_to_tpl = compose(np.linalg.inv(pet_t1), t1_to_tpl)
    labels, fracs = atlas_to_pet(atlas, img.spatial_shape, img.affine, pet_to_tpl,
                                 method=opts.atlas_method)
    o["dseg"] = save_image(out / f"{stem}_dseg.nii.gz", labels, img.affine, None,
                           dtype=np.int16)
    o["dseg_tsv"] = out / f"{stem}_dseg.tsv"
    write_text_atomic(o["dseg_tsv"], atlas.table.to_csv(sep="\t", index=False))
    gm = None
    if opts.grey_matter:
        gm_t1 = grey_matter_mask(t1)
        gm = resample(gm_t1.astype(np.float32), t1_aff, img.spatial_shape, img.affine,
                      np.linalg.inv(pet_t1))
    if opts.region_weights not in ("majority", "fraction"):
        raise DataError(f"unknown region_weights {opts.region_weights!r}",
                        field="region_weights", fix="use 'majority' or 'fraction'")
    weights = fracs if opts.region_weights == "fraction" else None
    tacs = region_tacs(data, timing, atlas, labels, weights, grey_matter=gm,
                       metadata={"Sources": [str(pet_p), str(atlas_file)],
                                 "Preprocessing": asdict(opts)})
    o["tacs"] = write_tacs(out / f"{stem}_tacs.tsv", tacs)
    res.summary.update(pet_t1w_metric=pet2t1.metric, t1w_template_metric=subject.metric,
                       regions=list(tacs.regions))
    return res
