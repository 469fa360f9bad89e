"""Benchmark of preprocessing: frame realignment and PET -> T1w registration.

Data: the simulator's macaque phantom (petbind.simulate.phantom) at 1.5 mm on a
64 x 64 x 48 PET grid, 29 frames over 99 min, one-tissue curves per region
(written here), 4 mm FWHM Gaussian PSF, counts-like noise, and the simulator's
own random head motion (petbind.simulate.scanner.random_motion /
apply_rigid_motion, up to 3 mm / 3 deg) after 10 min. The T1w is the phantom's
at 1 mm, and the PET mean is placed at a known rigid offset from it.

Timings: median of ``--repeats`` runs (wall clock) and process CPU time, with
the same process's baseline: realigning every frame on its own at full
resolution with full sampling (a plain SimpleITK realignment, no pooling, no
pyramid). Errors are against the known motion.

Run: ``python benchmarks/bench_preprocess.py [--repeats 3]``; writes
benchmarks/results/preprocess.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from petbind.preprocess.motion import estimate_motion
from petbind.preprocess.register import register_linear, rigid_matrix, rigid_params
from petbind.simulate.phantom import make_phantom
from petbind.simulate.scanner import apply_rigid_motion, random_motion
from petbind.timing import FrameTiming

SCHEDULE = [(6, 10), (3, 20), (2, 30), (2, 60), (2, 120), (10, 300), (4, 600)]  # 29 frames


def tissue(t, k1, k2):
    """One-tissue curve for a tri-exponential plasma input (closed form)."""
    amps, lams = np.array([60.0, 8.0, 2.0, -70.0]), np.array([4.0, 0.4, 0.02, 8.0])
    return k1 * sum(a * (np.exp(-lam * t) - np.exp(-k2 * t)) / (k2 - lam)
                    for a, lam in zip(amps, lams, strict=True))


def make_scan(seed: int = 0):
    ph = make_phantom(voxel_mm=1.5, seed=seed, fov_mm=(96.0, 96.0, 72.0))
    timing = FrameTiming.from_schedule(SCHEDULE, unit="s")
    t = np.linspace(0, timing.end[-1], 20001)
    bp = {"caudate": 2.5, "putamen": 3.0, "NAcc": 2.0, "VP": 2.0, "thalamus": 1.5,
          "midbrain": 1.2, "frontal_cortex": 1.0, "occipital_cortex": 0.9,
          "other_cortex": 0.7, "cerebellum": 0.0, "white_matter": 0.2, "csf": 0.0}
    r1 = {"white_matter": 0.5, "csf": 0.1}
    n_lab = max(i for i, _, _ in ph.table) + 1
    curves = np.zeros((n_lab, timing.n_frames))
    for i, _, region in ph.table:
        k1 = 0.3 * r1.get(region, 1.0)
        curves[i] = timing.frame_means(t, tissue(t, k1, k1 / 2.0 / (1.0 + bp[region])))
    true = curves[ph.labels].astype(np.float32)  # (X, Y, Z, T)
    sigma = 4.0 / 2.3548 / 1.5
    for f in range(timing.n_frames):
        true[..., f] = gaussian_filter(true[..., f], sigma)
    rng = np.random.default_rng(seed)
    motion = random_motion(timing, 3.0, 3.0, rng, start_min=10.0)
    moved = apply_rigid_motion(true, ph.affine, motion)
    sd = 0.04 * np.maximum(moved, 0.05 * moved.max()) / np.sqrt(timing.duration / 5.0)
    noisy = (moved + sd * rng.standard_normal(moved.shape)).astype(np.float32)
    return ph, timing, noisy, motion


def baseline_motion(data, affine, timing, center):
    """Every frame on its own, full resolution and sampling, one pass."""
    ref_frames = np.flatnonzero((timing.mid >= 0.1 * timing.end[-1])
                                & (timing.mid <= 0.6 * timing.end[-1]))
    w = timing.duration[ref_frames] / timing.duration[ref_frames].sum()
    ref = np.tensordot(data[..., ref_frames], w.astype(np.float32), axes=([-1], [0]))
    mats = [register_linear(ref, affine, data[..., f], affine, kind="rigid", initial=None,
                            center=center, shrink=(1,), smooth_mm=(0.0,), sampling=1.0,
                            iterations=100).matrix for f in range(data.shape[3])]
    return rigid_params(np.stack(mats), center)


def timed(fn, repeats):
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "preprocess.md"))
    args = ap.parse_args()

    ph, timing, data, motion = make_scan()
    aff = ph.affine
    center = (aff @ np.append((np.array(data.shape[:3]) - 1) / 2.0, 1.0))[:3]
    # truth relative to the reference: the reference window (10-60 % of the scan) moves
    # too, so compare motion *differences* from the median still pose of the window
    rows = []

    def err(params):
        d = params - motion
        d -= np.median(d, axis=0)  # remove the (unknown) pose of the reference image
        return np.abs(d[:, :3]).max(), np.abs(d[:, 3:]).max()

    w, c, res = timed(lambda: estimate_motion(data, aff, timing), args.repeats)
    rows.append(("motion correction, petbind (pooled blocks, 2 passes)", w, c, *err(res.params)))
    w1, c1, res1 = timed(lambda: estimate_motion(data, aff, timing, passes=1), args.repeats)
    rows.append(("motion correction, petbind (1 pass)", w1, c1, *err(res1.params)))
    wb, cb, pb = timed(lambda: baseline_motion(data, aff, timing, center), 1)
    rows.append(("baseline: each frame alone, full resolution/sampling", wb, cb, *err(pb)))

    # PET mean -> T1w (1 mm) with a known rigid offset of the PET
    t1 = make_phantom(voxel_mm=1.0, seed=0, fov_mm=(96.0, 96.0, 72.0))
    offset = np.array([4.0, -5.0, 3.0, 5.0, -4.0, 6.0])
    still = data[..., res.reference_frames].mean(axis=-1)
    pet = apply_rigid_motion(still[..., None], aff, offset[None], centre_mm=center)[..., 0]
    truth = rigid_matrix(offset, center) @ rigid_matrix(
        np.median(motion[res.reference_frames], axis=0), center)
    wr, cr, reg = timed(lambda: register_linear(t1.t1w, t1.affine, pet, aff, kind="rigid"),
                        args.repeats)
    brain = np.argwhere(t1.labels > 0)[::50]
    pts = (t1.affine @ np.c_[brain, np.ones(len(brain))].T).T
    reg_err = np.linalg.norm((pts @ (reg.matrix - truth).T)[:, :3], axis=1)

    lines = [
        "# Preprocessing benchmark",
        "",
        f"`python benchmarks/bench_preprocess.py --repeats {args.repeats}` on "
        f"{platform.node() or 'this machine'}, {os.cpu_count()} cores, "
        f"load average at start {os.getloadavg()[0]:.1f} (the machine is shared with "
        "other engineers' runs: wall times are inflated; CPU time is the process's own).",
        "",
        f"Scan: {data.shape[:3]} voxels at 1.5 mm, {timing.n_frames} frames, simulator "
        "motion up to 3 mm / 3 deg after 10 min. Errors: max over frames after removing "
        "the reference pose (median difference).",
        "",
        "| step | median wall (s) | CPU (s) | max trans err (mm) | max rot err (deg) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, wall, cpu, et, er in rows:
        lines.append(f"| {name} | {wall:.2f} | {cpu:.2f} | {et:.2f} | {er:.2f} |")
    lines += [
        "",
        f"Speed-up of petbind's realignment over the baseline: {wb / w:.1f}x (wall), "
        f"{cb / c:.1f}x (CPU).",
        "",
        "| step | median wall (s) | CPU (s) | error (mm, brain points) |",
        "| --- | --- | --- | --- |",
        f"| PET mean -> T1w (1 mm, {t1.t1w.shape}), rigid, Mattes MI | {wr:.2f} | {cr:.2f} | "
        f"median {np.median(reg_err):.2f}, max {reg_err.max():.2f} |",
        "",
        "Targets (issue 9): realignment < 15 s, PET -> T1w < 10 s on 2 cores.",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
