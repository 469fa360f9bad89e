"""Study design to scans: per-scan truth, region curves and 4-D images.

For each subject x condition x tracer the simulator draws, from the seed:

- a per-subject factor on each region's BP_ND (``between_subject_cv``) and on
  the reference delivery K1' (``k1prime_cv``);
- a per-scan factor on each region's BP_ND (test-retest noise,
  ``scan_cv_cortex`` / ``scan_cv_subcortex``);
- the drug effect of the condition (multiplicative on BP_ND, optional on R1).

The true values are then ``bp = bp_base * subject * scan * drug``,
``r1 = r1_base * drug_r1``, ``K1' = k1prime * subject_k1``, ``k2' = k2prime``,
and each region is a 2TCM with ``K1 = r1 K1'``, ``k2 = r1 k2'``,
``k3 = bp k4``, ``k4`` (so ``K1/k2 = K1'/k2' = V_ND`` and ``k3/k4 = BP_ND``).
Random numbers come from generators keyed by ``(seed, purpose, subject,
tracer, condition)`` indices, so a scan's truth does not change when other
scans are added or removed from the design.

With ``[anatomy] native_position = true`` each subject also gets its own rigid
pose (:func:`subject_anatomy`): the phantom's labels and T1w are moved by a
transform drawn from ``(seed, anatomy, subject)``, on a phantom grid padded so
that the moved brain stays inside the field of view, and every scan of the
subject is simulated from the moved labels.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from petbind.errors import ConfigError
from petbind.simulate.config import SimConfig
from petbind.simulate.kinetics import pet_frame_means
from petbind.simulate.phantom import CORTICAL, REGIONS, Phantom, make_phantom
from petbind.simulate.records import Geometry, ScanTruth, SubjectAnatomy
from petbind.simulate.scanner import (
    FWHM_PER_SIGMA,
    blurred_indicators,
    majority_labels,
    move_rigid,
    moved_object_frames,
    noise_sd,
    partial_volume_weights,
    pet_grid,
    random_motion,
    rigid_matrix,
)

#: Scans being compressed and written in background threads at any time.
WRITE_AHEAD = 2

# Purposes of the random streams (part of the seed key; never renumber).
_SUBJECT, _SCAN, _NOISE, _MOTION, _ANATOMY = 1, 2, 3, 4, 5


def _positive_factor(rng: np.random.Generator, cv: float, size: int) -> NDArray:
    """``1 + cv z`` with z standard normal, kept above 0.05."""
    return np.maximum(1.0 + cv * rng.standard_normal(size), 0.05)


def scan_parameters(cfg: SimConfig, i_subject: int, i_tracer: int, i_condition: int
                    ) -> tuple[NDArray, NDArray, float]:
    """Draw the true BP_ND and R1 (per region, :data:`REGIONS` order) and K1' of a scan."""
    tr = cfg.tracers[i_tracer]
    cond = cfg.conditions[i_condition]
    n = len(REGIONS)
    rs = np.random.default_rng([cfg.seed, _SUBJECT, i_subject, i_tracer])
    subj_bp = _positive_factor(rs, cfg.between_subject_cv, n)
    subj_k1 = float(_positive_factor(rs, cfg.k1prime_cv, 1)[0])
    rc = np.random.default_rng([cfg.seed, _SCAN, i_subject, i_tracer, i_condition])
    cv = np.array([cfg.scan_cv_cortex if r in CORTICAL else cfg.scan_cv_subcortex
                   for r in REGIONS])
    scan_bp = np.maximum(1.0 + cv * rc.standard_normal(n), 0.05)
    eff = tr.effect(cond)
    bp = np.array([tr.regions[r].bp_nd * eff.bp_factor(r) for r in REGIONS]) * subj_bp * scan_bp
    r1 = np.array([tr.regions[r].r1 * eff.r1_factor(r) for r in REGIONS])
    ref = REGIONS.index(cfg.reference)
    bp[ref], r1[ref] = 0.0, 1.0
    return bp, r1, tr.k1prime * subj_k1


def scan_truth(cfg: SimConfig, i_subject: int, i_tracer: int, i_condition: int
               ) -> ScanTruth:
    """Draw the true parameters of one scan and compute its region curves."""
    tr = cfg.tracers[i_tracer]
    bp, r1, k1p = scan_parameters(cfg, i_subject, i_tracer, i_condition)
    n = len(REGIONS)
    vb = np.array([tr.regions[r].vb for r in REGIONS])
    tacs = pet_frame_means(tr.plasma_input, tr.blood, cfg.timing, K1=r1 * k1p,
                           k2=r1 * tr.k2prime, k3=bp * tr.k4, k4=np.full(n, tr.k4), vb=vb)
    return ScanTruth(subject=cfg.subjects[i_subject], condition=cfg.conditions[i_condition],
                     tracer=tr, index=(i_subject, i_tracer, i_condition),
                     bp_nd=dict(zip(REGIONS, bp.tolist(), strict=True)),
                     r1=dict(zip(REGIONS, r1.tolist(), strict=True)),
                     k1prime=k1p, k2prime=tr.k2prime, tacs=tacs)


def iter_truth(cfg: SimConfig) -> Iterator[ScanTruth]:
    """Every scan of the design, subject-major, then condition, then tracer."""
    for i_s in range(len(cfg.subjects)):
        for i_c in range(len(cfg.conditions)):
            for i_t in range(len(cfg.tracers)):
                yield scan_truth(cfg, i_s, i_t, i_c)


def make_geometry(cfg: SimConfig) -> Geometry:
    """Build the phantom, the PET grid, the partial-volume weights and the PET-space atlas."""
    return phantom_geometry(cfg, make_phantom(cfg.phantom_voxel_mm, cfg.phantom_seed))


def phantom_geometry(cfg: SimConfig, ph: Phantom, matrix: NDArray | None = None) -> Geometry:
    """PET grid, partial-volume weights and PET-space atlas of ``ph``, moved by ``matrix``.

    Parameters
    ----------
    cfg : SimConfig
        Scanner settings (PET voxel, FWHM).
    ph : Phantom
        Labels in template position.
    matrix : ndarray, shape (4, 4), optional
        Rigid world transform (template -> native, mm) of the object; the
        grid stays that of ``ph``. Weights move the blurred label indicators
        trilinearly; the atlas is the majority label of the nearest-neighbour
        moved 1 mm labels.
    """
    n_labels = len(ph.table)
    f = cfg.pet_factor
    shape, affine = pet_grid(ph.labels.shape, ph.affine, f)
    w = partial_volume_weights(ph.labels, n_labels, cfg.fwhm_mm, ph.voxel_mm, f,
                               matrix=matrix, affine=ph.affine)
    labels = ph.labels if matrix is None else move_rigid(ph.labels, ph.affine, matrix, order=0)
    dseg = majority_labels(labels, n_labels, f)
    label_region = np.array([REGIONS.index(r) for _, _, r in ph.table])
    blurred = None
    if cfg.motion:
        sigma = cfg.fwhm_mm / FWHM_PER_SIGMA / ph.voxel_mm
        blurred = blurred_indicators(ph.labels, n_labels, sigma)
    return Geometry(phantom=ph, shape=shape, affine=affine,
                    weights=w.reshape(-1, n_labels), dseg=dseg, label_region=label_region,
                    pose=None if matrix is None else np.asarray(matrix, dtype=float),
                    blurred=blurred)


def noisefree_tacs(geo: Geometry, tacs: NDArray) -> NDArray[np.float64]:
    """Region means of the noise-free, blurred, motion-free image over the PET-space atlas.

    The mean of ``W @ TAC`` over the voxels of a region is the mean of those
    voxels' weight rows times the label curves, so no image is needed.

    Parameters
    ----------
    geo : Geometry
    tacs : ndarray, shape (n_regions, n_frames)
        True region curves (kBq/mL), rows in :data:`REGIONS` order.

    Returns
    -------
    ndarray, shape (n_regions, n_frames)
        kBq/mL, rows in :data:`REGIONS` order; NaN for a region without atlas voxels.
    """
    n_regions = len(REGIONS)
    region_of_voxel = np.concatenate([[-1], geo.label_region])[geo.dseg].ravel()
    onehot = (region_of_voxel == np.arange(n_regions)[:, None]).astype(np.float64)
    counts = onehot.sum(axis=1)
    mean_rows = onehot @ geo.weights.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_rows /= counts[:, None]
    return mean_rows @ np.asarray(tacs, dtype=np.float64)[geo.label_region]


def fov_centre(shape: tuple[int, ...], affine: NDArray) -> NDArray:
    """World coordinates (mm) of the centre of a grid's field of view."""
    return (np.asarray(affine, dtype=float) @ np.append((np.array(shape[:3]) - 1) / 2.0,
                                                        1.0))[:3]


def subject_transform(cfg: SimConfig, i_subject: int, centre: NDArray
                      ) -> tuple[NDArray, NDArray]:
    """Draw a subject's native pose: ``(params (6,), matrix (4, 4))``.

    Translations uniform in ``+-anatomy.max_offset_mm`` and rotations uniform
    in ``+-anatomy.max_rotation_deg`` per axis, from the stream
    ``(seed, anatomy, subject)``: reproducible and independent of the scans
    or the other subjects in the design.
    """
    rng = np.random.default_rng([cfg.seed, _ANATOMY, i_subject])
    params = np.concatenate([rng.uniform(-1.0, 1.0, 3) * cfg.max_offset_mm,
                             rng.uniform(-1.0, 1.0, 3) * cfg.max_anatomy_rotation_deg])
    return params, rigid_matrix(params, centre)


def native_padding(cfg: SimConfig, ph: Phantom) -> int:
    """Phantom voxels to add on every side so any drawn pose keeps the brain in view.

    The brain's boundary voxels are rotated by every corner of the rotation
    box (``+-max_rotation_deg`` per axis; the motion is nearly linear in the
    angles at these sizes, 1 mm is added for the rest), shifted by the
    largest offset and widened by the point-spread kernel (3.5 sigma, where
    the blur is truncated). The result is rounded up to whole PET voxels so
    the padded PET grid keeps the lattice of the unpadded one.
    """
    import itertools

    from scipy import ndimage

    brain = ph.labels > 0
    edge = brain & ~ndimage.binary_erosion(brain)
    pts = np.argwhere(edge) @ ph.affine[:3, :3].T + ph.affine[:3, 3]
    centre = fov_centre(ph.labels.shape, ph.affine)
    m = cfg.max_anatomy_rotation_deg
    hi = np.full(3, -np.inf)
    lo = np.full(3, np.inf)
    for angles in itertools.product((-m, 0.0, m), repeat=3):
        t = rigid_matrix([0.0, 0.0, 0.0, *angles], centre)
        moved = pts @ t[:3, :3].T + t[:3, 3]
        hi = np.maximum(hi, moved.max(axis=0))
        lo = np.minimum(lo, moved.min(axis=0))
    reach = cfg.max_offset_mm + 1.0 + 3.5 * cfg.fwhm_mm / FWHM_PER_SIGMA + ph.voxel_mm / 2
    fov_lo = ph.affine[:3, 3] - ph.voxel_mm / 2
    fov_hi = fov_lo + np.array(ph.labels.shape) * ph.voxel_mm
    need_mm = max(0.0, float(np.max(hi + reach - fov_hi)), float(np.max(fov_lo - (lo - reach))))
    step = cfg.pet_factor * ph.voxel_mm
    return int(np.ceil(need_mm / step - 1e-9)) * cfg.pet_factor


def pad_phantom(ph: Phantom, pad: int) -> Phantom:
    """The phantom on a grid larger by ``pad`` voxels on every side (labels 0, T1w 0)."""
    if pad == 0:
        return ph
    affine = ph.affine.copy()
    affine[:3, 3] -= pad * ph.voxel_mm
    return Phantom(labels=np.pad(ph.labels, pad), affine=affine, table=ph.table,
                   t1w=np.pad(ph.t1w, pad))


def subject_anatomy(cfg: SimConfig, ph: Phantom, i_subject: int) -> SubjectAnatomy:
    """One subject's native pose, moved T1w and PET geometry.

    Parameters
    ----------
    cfg : SimConfig
    ph : Phantom
        The template phantom, already padded (:func:`native_padding`,
        :func:`pad_phantom`); its field-of-view centre is the centre of rotation.
    i_subject : int
        Position of the subject in ``cfg.subjects``.
    """
    centre = fov_centre(ph.labels.shape, ph.affine)
    params, matrix = subject_transform(cfg, i_subject, centre)
    t1w = np.maximum(move_rigid(ph.t1w, ph.affine, matrix, order=3), 0.0)
    return SubjectAnatomy(subject=cfg.subjects[i_subject], index=i_subject, params=params,
                          centre=centre, matrix=matrix, t1w=t1w.astype(np.float32),
                          affine=ph.affine, geometry=phantom_geometry(cfg, ph, matrix))


def scan_image(cfg: SimConfig, geo: Geometry, truth: ScanTruth
               ) -> tuple[NDArray[np.float32], NDArray | None]:
    """The 4-D PET image of one scan, as the scanner would reconstruct it.

    Noise-free image ``W @ TAC``; with head motion (when enabled) each moved
    frame is instead rendered from the moved object (the PSF-blurred label
    indicators moved on the 1 mm phantom grid, then voxelised:
    :func:`~petbind.simulate.scanner.moved_object_frames`), as a scanner sees
    a moving head, not by resampling the voxelised frame; then counts-based
    noise (when ``cfg.noise > 0``) and, when images are not decay-corrected,
    physical decay.

    Returns
    -------
    image : ndarray of float32, shape (x, y, z, n_frames)
        kBq/mL; decay-corrected to injection when ``cfg.decay_corrected``.
    motion : ndarray, shape (n_frames, 6), or None
        True motion (mm, degrees; see :func:`~petbind.simulate.scanner.rigid_matrix`).
    """
    timing = cfg.timing
    tac_labels = truth.tacs[geo.label_region].astype(np.float32)
    img = (geo.weights @ tac_labels).reshape(*geo.shape, timing.n_frames)
    motion = None
    if cfg.motion:
        motion = random_motion(timing, cfg.max_translation_mm, cfg.max_rotation_deg,
                               truth.rng(cfg, _MOTION), cfg.motion_start_min)
        moving = np.flatnonzero(np.any(motion != 0, axis=1))
        if moving.size:
            blurred = geo.blurred
            if blurred is None:  # a Geometry built without motion in its config
                ph = geo.phantom
                blurred = blurred_indicators(ph.labels, len(ph.table),
                                             cfg.fwhm_mm / FWHM_PER_SIGMA / ph.voxel_mm)
            centre = fov_centre(geo.shape, geo.affine)
            pose = np.eye(4) if geo.pose is None else geo.pose
            poses = np.stack([rigid_matrix(motion[f], centre) @ pose for f in moving])
            img[..., moving] = moved_object_frames(
                blurred, geo.phantom.labels.shape, geo.phantom.affine, cfg.pet_factor,
                tac_labels[:, moving], poses)
    if cfg.noise > 0:
        lam = truth.tracer.isotope.decay_constant_per_min
        sd = noise_sd(img, timing, lam, cfg.noise)
        z = truth.rng(cfg, _NOISE).standard_normal(img.shape, dtype=np.float32)
        img = img + sd * z
    if not cfg.decay_corrected:
        img = timing.decay_uncorrect(img, truth.tracer.isotope)
    return np.asarray(img, dtype=np.float32), motion


def simulate_subject(cfg: SimConfig, writer: Any, i_subject: int,
                     geo: Geometry | None = None, padded: Phantom | None = None
                     ) -> list[ScanTruth]:
    """Simulate and write every scan of one subject (and, in native position, its anatomy).

    One task of :func:`simulate_study`. Every random stream is keyed by the
    subject's, tracer's and condition's indices (never by the order of the
    calls), so the files are byte-identical whichever process runs the task and
    in whatever order the subjects are simulated.

    Parameters
    ----------
    cfg : SimConfig
    writer : DatasetWriter
        Of the dataset (:class:`petbind.simulate.writer.DatasetWriter`).
    i_subject : int
        Position of the subject in ``cfg.subjects``.
    geo : Geometry, optional
        The shared geometry of a template-position study (:func:`make_geometry`).
    padded : Phantom, optional
        The padded template phantom of a native-position study
        (:func:`native_padding`, :func:`pad_phantom`); used when ``geo`` is None.

    Returns
    -------
    list of ScanTruth
        The subject's scans, condition-major then tracer (:func:`iter_truth` order).
    """
    if geo is None:
        if padded is None:
            raise ValueError("simulate_subject needs geo or padded")
        anatomy = subject_anatomy(cfg, padded, i_subject)
        writer.write_subject(anatomy)
        geo = anatomy.geometry
    truths: list[ScanTruth] = []
    # Compression (zlib releases the GIL) overlaps with simulating the next
    # scan; at most WRITE_AHEAD images wait in memory. Each file's bytes do
    # not depend on the order in which threads finish.
    pending: deque[tuple[Future, ScanTruth]] = deque()
    with ThreadPoolExecutor(max_workers=WRITE_AHEAD) as pool:
        for i_c in range(len(cfg.conditions)):
            for i_t in range(len(cfg.tracers)):
                truth = scan_truth(cfg, i_subject, i_t, i_c)
                image, motion = scan_image(cfg, geo, truth)
                pending.append((pool.submit(writer.write_scan, truth, image, motion, geo,
                                            noisefree_tacs(geo, truth.tacs)), truth))
                while len(pending) > WRITE_AHEAD:
                    fut, done = pending.popleft()
                    fut.result()
                    truths.append(done)
        while pending:
            fut, done = pending.popleft()
            fut.result()
            truths.append(done)
    return truths


def simulate_study(config: SimConfig | str | Path | None, out_dir: str | Path,
                   progress: Callable[[int, int, str], None] | None = None,
                   scheduler: Any = None) -> Path:
    """Simulate a study and write it as a BIDS dataset with its truth.

    Parameters
    ----------
    config : SimConfig, path or None
        A validated config, a TOML file, or ``None`` for the founding study.
    out_dir : str or Path
        Dataset root to create: a new or empty folder, or an earlier
        simulation (its files are replaced atomically; scans of a larger
        earlier design are not removed).
    progress : callable, optional
        ``progress(done, total, what)`` after each scan is written (on a
        scheduler with several workers: after each subject, for its scans).
    scheduler : optional
        Where the subjects are simulated, one task per subject: any value
        :func:`petbind.compute.open_engine` takes (default: in this process,
        one subject after another). The files are byte-identical on every
        scheduler (:func:`simulate_subject`).

    Raises
    ------
    ConfigError
        ``out_dir`` holds other files and no earlier simulation.

    Returns
    -------
    Path
        ``out_dir``. The layout is the one in ``docs/developing.md``
        ("Dataset and output layout") and ``docs/simulate.md`` (template files,
        ``desc-noisefree_tacs``, native position).
        ``derivatives/petbind-sim/truth.tsv`` is written last, so its presence
        means the dataset is complete.
    """
    from petbind.compute import Task, open_engine
    from petbind.simulate.config import load_config
    from petbind.simulate.writer import DatasetWriter

    cfg = config if isinstance(config, SimConfig) else load_config(config)
    out = Path(out_dir)
    if (out.is_dir() and any(out.iterdir())
            and not (out / "derivatives" / "petbind-sim" / "simulate_config.toml").exists()):
        raise ConfigError("the output folder is not empty and holds no earlier simulation",
                          path=out, field="out_dir",
                          fix="choose a new or empty folder; the simulator never writes "
                          "into other datasets")
    padded: Phantom | None = None
    if cfg.native_position:
        template = make_phantom(cfg.phantom_voxel_mm, cfg.phantom_seed)
        padded = pad_phantom(template, native_padding(cfg, template))
        geo = None
    else:
        geo = make_geometry(cfg)
        template = geo.phantom
    writer = DatasetWriter(cfg, template, out)
    writer.write_dataset_files()
    total = cfg.n_scans
    n_subjects = len(cfg.subjects)
    by_subject: dict[int, list[ScanTruth]] = {}
    n_done = 0

    def done(task: Task, truths: list[ScanTruth]) -> None:
        nonlocal n_done
        by_subject[task.args[2]] = truths
        for t in truths:
            n_done += 1
            if progress is not None:
                progress(n_done, total, t.stem)

    with open_engine(scheduler, n_tasks=n_subjects) as engine:
        # the phantom or geometry (megabytes) goes once to every worker, not once per task
        kw = {"padded": engine.scatter(padded)} if geo is None else {"geo": engine.scatter(geo)}
        engine.run([Task(f"simulate-sub-{cfg.subjects[i]}", simulate_subject,
                         (cfg, writer, i), kw)
                    for i in range(n_subjects)], on_done=done)
    writer.write_truth_table([t for i in range(n_subjects) for t in by_subject[i]])
    return out
