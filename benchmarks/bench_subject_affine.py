"""How far the per-subject T1w -> template affine lands from the simulator's true pose.

``petbind demo --realistic`` registers each animal's T1w to the template
(:func:`petbind.preprocess.scan.register_subject`: a Mattes-MI affine,
:func:`petbind.preprocess.register.register_linear`, then SyN). The simulator
moved each animal by a known rigid transform
(``derivatives/petbind-sim/sub-*/anat/*_desc-true_xfm.json``: x_native =
Matrix @ x_template). For the affine with the current settings and with
cheaper stopping / sampling settings, this reports the CPU seconds and the
registration error: the distance (mm) between where the affine and where the
truth put each template brain voxel (mean, 95th percentile and max over the
voxels; max over the subjects). For the settings before issue 18 and the
pipeline's, it also runs the SyN that follows (the pipeline's
``syn_level_iters``) and reports the error of the whole affine + SyN
transform at every ``SYN_EVERY``-th template brain voxel.

Data: the realistic demo's raw dataset (``--bids``; simulated here with the
demo's settings into a temporary folder when not given). SimpleITK runs
single-threaded, as in the pipeline. Machine shared: CPU seconds, not wall.

Run: ``python benchmarks/bench_subject_affine.py [--bids OUT/realistic/bids]``;
prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

#: (label, register_linear keyword arguments); the first is the setting before issue 18,
#: the fourth the pipeline's (:data:`petbind.preprocess.scan.SUBJECT_AFFINE`).
SETTINGS: tuple[tuple[str, dict], ...] = (
    ("before: min step 1e-4, gradient filters, sampling 20 %, shrink 4-2-1",
     {"min_step": 1e-4, "gradient_filter": True, "sampling": 0.2}),
    ("min step 1e-3", {"min_step": 1e-3}),
    ("min step 1e-3, no gradient filters", {"min_step": 1e-3, "gradient_filter": False}),
    ("min step 1e-3, no gradient filters, sampling 10 %",
     {"min_step": 1e-3, "gradient_filter": False, "sampling": 0.1}),
    ("min step 3e-3, no gradient filters", {"min_step": 3e-3, "gradient_filter": False}),
    ("min step 1e-2, no gradient filters", {"min_step": 1e-2, "gradient_filter": False}),
    ("shrink 4-2 (no full-resolution level), min step 1e-4",
     {"shrink": (4, 2), "smooth_mm": (4.0, 2.0)}),
)
#: Every this many template brain voxels are mapped through the SyN transform.
SYN_EVERY = 7


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bids", type=Path, default=None)
    args = ap.parse_args()

    from petbind.preprocess.register import register_linear, register_nonlinear
    from petbind.preprocess.scan import (
        SUBJECT_AFFINE,
        PreprocessOptions,
        load_anatomy,
        single_threaded_itk,
    )
    from petbind.simulate.writer import TEMPLATE, true_xfm_path, truth_root

    bids = args.bids
    if bids is None:
        from petbind.simulate.study import simulate_study
        from petbind.study.demo import realistic_configs

        bids = simulate_study(realistic_configs()[0], Path(tempfile.mkdtemp()) / "bids")
    tpl_dir = truth_root(bids) / "template"
    tpl, tpl_aff = load_anatomy(tpl_dir / f"tpl-{TEMPLATE}_T1w.nii.gz", "template")
    dseg, _ = load_anatomy(tpl_dir / f"tpl-{TEMPLATE}_dseg.nii.gz", "template")
    ijk = np.argwhere(dseg > 0)
    pts = np.c_[ijk, np.ones(len(ijk))] @ tpl_aff.T  # template brain voxels, RAS mm
    voxel_mm = float(np.abs(np.linalg.det(tpl_aff[:3, :3])) ** (1 / 3))
    subjects = sorted(p.name for p in bids.glob("sub-*") if p.is_dir())
    print(f"template voxel {voxel_mm:g} mm, {len(ijk)} brain voxels, subjects "
          f"{', '.join(subjects)}")
    syn_rows: list[str] = []
    print("| settings | CPU per subject (s, mean) | error mean (mm) | error p95 (mm) "
          "| error max (mm) |")
    print("| --- | --- | --- | --- | --- |")
    with single_threaded_itk():
        for label, kw in SETTINGS[:1] + (("taken", SUBJECT_AFFINE),):
            errs, cpu = [], []
            for s in subjects:
                t1, t1_aff = load_anatomy(bids / s / "anat" / f"{s}_T1w.nii.gz", "T1w")
                truth = np.array(json.loads(true_xfm_path(bids, s[4:]).read_text())["Matrix"])
                lin = register_linear(tpl, tpl_aff, t1, t1_aff, kind="affine", metric="mattes",
                                      **kw)
                c = time.process_time()
                syn = register_nonlinear(tpl, tpl_aff, t1, t1_aff, lin.matrix,
                                         level_iters=PreprocessOptions().syn_level_iters)
                cpu.append(time.process_time() - c)
                sub = pts[::SYN_EVERY]
                lps = sub[:, :3] * [-1.0, -1.0, 1.0]
                moved = np.array([syn.forward.TransformPoint(tuple(map(float, q)))
                                  for q in lps]) * [-1.0, -1.0, 1.0]
                errs.append(np.linalg.norm(moved - sub @ truth[:3].T, axis=1))
            e = np.concatenate(errs)
            syn_rows.append(f"| {label} affine, then SyN | {np.mean(cpu):.2f} (SyN) | "
                            f"{np.median(e):.3f} (median) | {np.percentile(e, 95):.3f} | "
                            f"{e.max():.3f} |")
        for label, kw in SETTINGS:
            cpu, means, p95s, maxs = [], [], [], []
            for s in subjects:
                t1, t1_aff = load_anatomy(bids / s / "anat" / f"{s}_T1w.nii.gz", "T1w")
                truth = np.array(json.loads(true_xfm_path(bids, s[4:]).read_text())["Matrix"])
                c = time.process_time()
                lin = register_linear(tpl, tpl_aff, t1, t1_aff, kind="affine", metric="mattes",
                                      **kw)
                cpu.append(time.process_time() - c)
                err = np.linalg.norm(pts @ (lin.matrix - truth).T, axis=1)
                means.append(err.mean())
                p95s.append(np.percentile(err, 95))
                maxs.append(err.max())
            print(f"| {label} | {np.mean(cpu):.2f} | {np.mean(means):.3f} (max "
                  f"{np.max(means):.3f}) | {np.max(p95s):.3f} | {np.max(maxs):.3f} |",
                  flush=True)
    print("\nAffine + SyN (the subject's T1w -> template transform), every "
          f"{SYN_EVERY}th template brain voxel, all subjects pooled:")
    print("| settings | CPU per subject (s, mean) | error (mm) | error p95 (mm) "
          "| error max (mm) |")
    print("| --- | --- | --- | --- | --- |")
    print("\n".join(syn_rows))


if __name__ == "__main__":
    main()
