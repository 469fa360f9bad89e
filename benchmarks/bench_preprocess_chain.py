"""Where the preprocessing chain loses BP_ND, step by step, and what each step costs.

Data: the study simulator's founding design cut to one noise-free DASB scan
(sub-01, baseline), each animal at its native pose (``[anatomy]
native_position``) with head motion between frames, and its motion-free twin
(same seed, motion off). Reference: SRTM on the simulator's
``desc-noisefree`` region curves (region means of the blurred, motion-free
image over the true PET-space atlas). Every other row changes one thing on
the way from the raw scan to the region curves of ``petbind preprocess`` and
reports SRTM BP_ND relative to the reference (%), so each step's loss can be
read off. The same SRTM code on both sides.

Timings: process CPU seconds of each step with the current settings and with
the settings before issue 18 (SimpleITK single-threaded, as in the pipeline).
The machine is shared (2 cores, other engineers' jobs): CPU seconds are the
comparable number; wall clock is not reported.

Run: ``python benchmarks/bench_preprocess_chain.py``; writes
``benchmarks/results/preprocess_chain.md``.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

STEM = "sub-01_ses-baseline_trc-DASB"
SMALL = ("NAcc", "VP")
LARGE = ("caudate", "putamen", "thalamus", "midbrain", "frontal_cortex", "occipital_cortex",
         "other_cortex", "white_matter")


def simulate(root: Path, motion: bool) -> Path:
    from petbind.simulate import simulate_study
    from petbind.simulate.config import load_config

    cfg = load_config(subjects=1, tracers=["DASB"], conditions=["baseline"], noise=0.0,
                      native_position=True, motion=motion)
    return simulate_study(cfg, root / ("moving" if motion else "still"))


def main() -> None:
    import logging

    import nibabel as nib

    from petbind import __version__
    from petbind.io.bids import load_pet
    from petbind.io.tables import read_tacs
    from petbind.models.reference import SRTM
    from petbind.preprocess.motion import (
        MotionResult,
        apply_motion,
        estimate_motion,
        realigned_mean,
    )
    from petbind.preprocess.regions import atlas_to_pet, load_atlas, region_tacs
    from petbind.preprocess.register import (
        image_center,
        register_linear,
        register_nonlinear,
        rigid_matrix,
    )
    from petbind.preprocess.scan import (
        PET_T1W_REGISTRATION,
        PreprocessOptions,
        load_anatomy,
        single_threaded_itk,
    )
    from petbind.simulate.scanner import apply_rigid_motion

    logging.getLogger("dipy").setLevel(logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="bench_chain_"))
    bids = simulate(root, True)
    still_bids = simulate(root, False)
    der = bids / "derivatives" / "petbind-sim"
    truth_dir = der / "sub-01" / "ses-baseline" / "pet"
    nf = read_tacs(truth_dir / f"{STEM}_desc-noisefree_tacs.tsv")
    timing = nf.timing
    regions = [*SMALL, *LARGE]

    def bp(curves: dict[str, np.ndarray]) -> pd.Series:
        fit = SRTM(timing, curves["cerebellum"]).fit(np.stack([curves[r] for r in regions]))
        return pd.Series(fit.params["bp_nd"], index=regions)

    reference = bp(dict(zip(nf.regions, nf.values, strict=True)))
    img = load_pet(bids / "sub-01" / "ses-baseline" / "pet" / f"{STEM}_pet.nii.gz")
    moved = img.get_data()
    aff = img.affine
    still = load_pet(still_bids / "sub-01" / "ses-baseline" / "pet" / f"{STEM}_pet.nii.gz"
                     ).get_data()
    t1, t1_aff = load_anatomy(bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz", "T1w")
    tpl_path = der / "template" / "tpl-petbindphantom_T1w.nii.gz"
    tpl, tpl_aff = load_anatomy(tpl_path, "template")
    atlas = load_atlas(der / "template" / "tpl-petbindphantom_dseg.nii.gz")
    pose = np.array(json.loads((der / "sub-01" / "anat" / "sub-01_desc-true_xfm.json"
                                ).read_text())["Matrix"])
    true_dseg = np.asanyarray(nib.load(str(truth_dir / f"{STEM}_desc-true_dseg.nii.gz")).dataobj)
    mot = pd.read_csv(truth_dir / f"{STEM}_desc-true_motion.tsv", sep="\t").iloc[:, 1:].to_numpy()
    centre = image_center(moved.shape, aff)
    true_m = MotionResult(params=mot, matrices=rigid_matrix(mot, centre),
                          fd=np.zeros(len(mot)), flagged=np.zeros(len(mot), bool),
                          block=np.arange(len(mot)), reference_frames=np.arange(1),
                          center=centre, metric=np.zeros(1))

    def curves(data: np.ndarray, labels: np.ndarray, fractions=None) -> dict[str, np.ndarray]:
        tac = region_tacs(data, timing, atlas, labels, fractions)
        return dict(zip(tac.regions, tac.values, strict=True))

    rows: list[tuple[str, str, pd.Series]] = []

    def add(step: str, what: str, data: np.ndarray, labels: np.ndarray, fractions=None) -> None:
        rows.append((step, what, 100.0 * (bp(curves(data, labels, fractions)) / reference - 1)))

    cpu: list[tuple[str, float, float]] = []

    def timed(fn):
        c0 = time.process_time()
        out = fn()
        return out, time.process_time() - c0

    with single_threaded_itk():
        add("0", "motion-free image, true atlas (check: 0)", still, true_dseg)
        add("1", "moving head, no correction, true atlas", moved, true_dseg)
        old_sim = apply_rigid_motion(still, aff, mot)  # the simulator before this change
        add("2a", "old simulator (frames resampled trilinearly), true motion undone",
            apply_motion(old_sim, aff, true_m), true_dseg)
        add("2b", "true motion undone, trilinear", _linear_undo(moved, aff, true_m.matrices),
            true_dseg)
        add("2c", "true motion undone, cubic B-spline", apply_motion(moved, aff, true_m),
            true_dseg)
        m, c_new = timed(lambda: estimate_motion(moved, aff, timing))
        _, c_old = timed(lambda: estimate_motion(moved, aff, timing, refine_iterations=None))
        cpu.append(("motion estimation (2 passes)", c_old, c_new))
        mean, c_mean = timed(lambda: realigned_mean(moved, aff, m, timing.duration))
        _, c_mean_old = timed(lambda: apply_motion(moved, aff, m).mean(axis=-1))
        cpu.append(("mean realigned image for PET -> T1w", c_mean_old, c_mean))
        p2t, c_p2t = timed(lambda: register_linear(t1, t1_aff, mean, aff, kind="rigid",
                                                   metric="mattes", **PET_T1W_REGISTRATION))
        _, c_p2t_old = timed(lambda: register_linear(t1, t1_aff, mean, aff, kind="rigid",
                                                     metric="mattes"))
        cpu.append(("PET -> T1w (rigid)", c_p2t_old, c_p2t))
        frames, c_apply = timed(lambda: apply_motion(
            moved, aff, replace(m, matrices=m.matrices @ p2t.matrix)))
        cpu.append(("realigned frames in the T1w pose (B-spline, once)", 2 * c_apply, c_apply))
        add("3", "estimated motion + PET -> T1w, frames in T1w pose, true atlas", frames,
            true_dseg)
        for s in (2, 3, 4):
            lab, _ = atlas_to_pet(atlas, moved.shape, aff, np.linalg.inv(pose), supersample=s)
            add("4", f"true pose, template atlas, majority of {s}x{s}x{s} sub-samples", frames,
                lab)
        lab, _ = atlas_to_pet(atlas, moved.shape, aff, np.linalg.inv(pose), method="nearest")
        add("4", "true pose, template atlas, nearest label at voxel centre", frames, lab)
        lin, c_aff = timed(lambda: register_linear(tpl, tpl_aff, t1, t1_aff, kind="affine",
                                                   metric="mattes"))
        cpu.append(("T1w -> template affine (per subject)", c_aff, c_aff))
        lab, frac = atlas_to_pet(atlas, moved.shape, aff, np.linalg.inv(lin.matrix))
        add("5", "affine T1w -> template, majority labels (the chain, affine)", frames, lab)
        add("5", "... fraction-weighted region means (old _tacs.tsv)", frames, lab, frac)
        lab3, _ = atlas_to_pet(atlas, moved.shape, aff, np.linalg.inv(lin.matrix),
                               supersample=3)
        add("5", "... 3x3x3 sub-samples (old default)", frames, lab3)
        levels = PreprocessOptions().syn_level_iters
        syn, c_syn = timed(lambda: register_nonlinear(tpl, tpl_aff, t1, t1_aff, lin.matrix,
                                                      level_iters=levels))
        _, c_syn_old = timed(lambda: register_nonlinear(tpl, tpl_aff, t1, t1_aff, lin.matrix,
                                                        level_iters=(20, 10, 5)))
        cpu.append((f"SyN (per subject), levels {levels} (old 20/10/5)", c_syn_old, c_syn))
        lab, _ = atlas_to_pet(atlas, moved.shape, aff, syn.inverse)
        add("6", f"affine + SyN {levels}, majority labels (the chain, SyN)", frames, lab)

    lines = ["# Preprocessing chain: BP_ND loss per step and CPU per step", "",
             f"`python benchmarks/bench_preprocess_chain.py` (petbind {__version__}, Python "
             f"{platform.python_version()}, {os.cpu_count()} CPUs, shared machine).", "",
             "One noise-free DASB scan of the simulator at a native pose with head motion "
             f"(max {np.abs(mot[:, :3]).max():.2f} mm, {np.abs(mot[:, 3:]).max():.2f} deg). "
             "SRTM BP_ND relative to SRTM on the simulator's `desc-noisefree` curves "
             "(motion-free image, true atlas), %. Large = caudate, putamen, thalamus, "
             "midbrain, three cortices, white matter.", "",
             "| step | region curves from | NAcc | VP | large (min..max) |",
             "| --- | --- | --- | --- | --- |"]
    for step, what, rel in rows:
        lg = rel[list(LARGE)]
        lines.append(f"| {step} | {what} | {rel['NAcc']:+.2f} | {rel['VP']:+.2f} | "
                     f"{lg.min():+.2f}..{lg.max():+.2f} |")
    lines += ["", "CPU seconds (single-threaded SimpleITK):", "",
              "| step | before (s) | now (s) |", "| --- | --- | --- |"]
    for name, old, new in cpu:
        lines.append(f"| {name} | {old:.2f} | {new:.2f} |")
    out = Path(__file__).parent / "results" / "preprocess_chain.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _linear_undo(data: np.ndarray, affine: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Undo known motion frame by frame with trilinear interpolation."""
    from petbind.preprocess.register import resample

    return np.stack([resample(data[..., t], affine, data.shape[:3], affine, matrices[t])
                     for t in range(data.shape[3])], axis=-1)


if __name__ == "__main__":
    main()
