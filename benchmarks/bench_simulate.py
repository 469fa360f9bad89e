"""Study simulator: wall time of the default founding study (24 scans), native position, stages.

Run on demand (not part of the test suite)::

    .venv/bin/python benchmarks/bench_simulate.py [--repeats 3]

Writes ``benchmarks/results/simulate.md``.

Measured in one process:

- the whole default study (``simulate_study(None, out)``: phantom, 24 scans,
  every file of the BIDS layout), ``--repeats`` times, median;
- a baseline in the same process: the same study with the background writer
  limited to one thread (``study.WRITE_AHEAD = 1``), to show what the
  overlap of compression with simulation buys;
- the same study with ``[anatomy] native_position = true`` (each of the 4
  subjects at its own rigid pose: moved T1w and PET geometry per subject,
  padded PET grid), ``--repeats`` times, median;
- the stages of one run, timed separately: geometry (phantom, PSF weights,
  atlas), the partial-volume weights alone against the whole-grid method
  they replaced (blur every label on the whole grid), one subject's native
  anatomy, truth curves of 24 scans, images of 24 scans (noise included),
  gzip + write of the 24 PET images.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from petbind.simulate import load_config, simulate_study
from petbind.simulate import study as study_mod
from petbind.simulate.scanner import FWHM_PER_SIGMA, block_mean, partial_volume_weights
from petbind.simulate.study import (
    iter_truth,
    make_geometry,
    native_padding,
    pad_phantom,
    scan_image,
    subject_anatomy,
)
from petbind.simulate.writer import nifti_bytes

HERE = Path(__file__).resolve().parent


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_study(tmp: Path, tag: str, cfg=None) -> tuple[float, float]:
    """(wall s, CPU s of this process, all threads) of a study (default: the founding one)."""
    out = tmp / tag
    c0 = time.process_time()
    dt = timed(lambda: simulate_study(cfg, out))
    cpu = time.process_time() - c0
    shutil.rmtree(out)
    return dt, cpu


def whole_grid_weights(labels, n_labels, fwhm_mm, voxel_mm, factor):
    """The method before per-label boxes: blur every indicator on the whole grid."""
    sigma = fwhm_mm / FWHM_PER_SIGMA / voxel_mm
    cols = []
    for lab in range(1, n_labels + 1):
        ind = ndimage.gaussian_filter((labels == lab).astype(np.float32), sigma,
                                      mode="constant", truncate=3.5)
        cols.append(block_mean(ind, factor))
    return np.stack(cols, axis=-1).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg = load_config()
    native_cfg = load_config(native_position=True)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        run_study(tmp, "warmup")
        full = [run_study(tmp, f"full{i}") for i in range(args.repeats)]
        study_mod.WRITE_AHEAD = 1
        try:
            base = [run_study(tmp, f"base{i}") for i in range(args.repeats)]
        finally:
            study_mod.WRITE_AHEAD = 2
        native = [run_study(tmp, f"native{i}", native_cfg) for i in range(args.repeats)]
        stages: dict[str, tuple[float, float]] = {}

        def stage(name, fn):
            c0, t0 = time.process_time(), time.perf_counter()
            result = fn()
            stages[name] = (time.perf_counter() - t0, time.process_time() - c0)
            return result

        geo = stage("geometry", lambda: make_geometry(cfg))
        ph = geo.phantom
        n = len(ph.table)
        new_w = stage("weights", lambda: partial_volume_weights(
            ph.labels, n, cfg.fwhm_mm, ph.voxel_mm, cfg.pet_factor))
        old_w = stage("weights_whole", lambda: whole_grid_weights(
            ph.labels, n, cfg.fwhm_mm, ph.voxel_mm, cfg.pet_factor))
        if not np.array_equal(new_w, old_w):
            raise SystemExit("per-label boxes and whole-grid weights differ")
        padded = pad_phantom(ph, native_padding(native_cfg, ph))
        anat = stage("anatomy", lambda: subject_anatomy(native_cfg, padded, 0))
        truths = stage("truth", lambda: list(iter_truth(cfg)))
        images = stage("images", lambda: [scan_image(cfg, geo, tr)[0] for tr in truths])
        sizes = stage("gzip", lambda: [len(nifti_bytes(im, geo.affine)) for im in images])
    med, med_base, med_nat = (statistics.median(x[0] for x in r) for r in (full, base, native))
    cpu, cpu_base, cpu_nat = (statistics.median(x[1] for x in r) for r in (full, base, native))
    load_end = os.getloadavg()
    lines = [
        "# Simulator benchmark (`benchmarks/bench_simulate.py`)",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_simulate.py --repeats {args.repeats}`. "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, numpy {np.__version__}. The machine is shared with "
        f"other engineers' runs (load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        f"at the start, {load_end[0]:.1f} at the end, on 2 cores), so absolute times are "
        "pessimistic and noisy; CPU time is the steadier figure.",
        "",
        f"Default founding study: {cfg.n_scans} scans, PET grid {geo.shape} x "
        f"{cfg.timing.n_frames} frames, phantom {ph.labels.shape} at "
        f"{cfg.phantom_voxel_mm:g} mm, noise {cfg.noise:g}, FWHM {cfg.fwhm_mm:g} mm. "
        f"Native position: {len(native_cfg.subjects)} subjects, padded PET grid "
        f"{anat.geometry.shape}, T1w {anat.t1w.shape}.",
        "",
        "| run | median wall (s) | median CPU (s) | wall of each run (s) |",
        "| --- | --- | --- | --- |",
        f"| whole study, 2 writer threads (default) | {med:.2f} | {cpu:.2f} | "
        f"{', '.join(f'{x[0]:.2f}' for x in full)} |",
        f"| baseline: whole study, 1 writer thread | {med_base:.2f} | {cpu_base:.2f} | "
        f"{', '.join(f'{x[0]:.2f}' for x in base)} |",
        f"| whole study, `native_position = true` | {med_nat:.2f} | {cpu_nat:.2f} | "
        f"{', '.join(f'{x[0]:.2f}' for x in native)} |",
        "",
        f"Ratio default / baseline (wall): {med / med_base:.2f}. Native position / default: "
        f"wall {med_nat / med:.2f}, CPU {cpu_nat / cpu:.2f} ({(cpu_nat - cpu) / 4:.1f} s CPU "
        "per subject: its anatomy plus its 6 scans on a grid with "
        f"{np.prod(anat.geometry.shape) / np.prod(geo.shape):.2f}x the voxels). "
        "Target: < 60 s wall (issue 5); aim < 20 s so `petbind demo` stays < 3 min. On an "
        "idle 2-core machine the wall time is about CPU time / (1 to 2).",
        "",
        "Stages of one run, timed separately (single-threaded):",
        "",
        "| stage | wall (s) | CPU (s) |",
        "| --- | --- | --- |",
        f"| geometry (phantom, PSF weights of {n} labels, atlas) | "
        "{:.2f} | {:.2f} |".format(*stages["geometry"]),
        "| PSF weights alone, per-label bounding boxes (now) | "
        "{:.2f} | {:.2f} |".format(*stages["weights"]),
        "| baseline: PSF weights on the whole grid (before; identical numbers, checked) | "
        "{:.2f} | {:.2f} |".format(*stages["weights_whole"]),
        "| native anatomy of one subject (pose, cubic T1w, moved weights, atlas) | "
        "{:.2f} | {:.2f} |".format(*stages["anatomy"]),
        f"| truth curves, {cfg.n_scans} scans (analytic 2TCM, fine-grid frame means) | "
        "{:.2f} | {:.2f} |".format(*stages["truth"]),
        f"| images, {cfg.n_scans} scans (W @ TAC, noise) | "
        "{:.2f} | {:.2f} |".format(*stages["images"]),
        f"| gzip of {cfg.n_scans} PET images (level 1, {np.mean(sizes) / 1e6:.1f} MB each) | "
        "{:.2f} | {:.2f} |".format(*stages["gzip"]),
        "",
        "Weights speed-up (CPU, whole grid / per-label boxes): "
        f"{stages['weights_whole'][1] / max(stages['weights'][1], 1e-9):.1f}x.",
        "",
    ]
    out = HERE / "results" / "simulate.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
