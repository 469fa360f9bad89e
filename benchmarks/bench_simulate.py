"""Study simulator: wall time of the default founding study (24 scans) and its stages.

Run on demand (not part of the test suite)::

    .venv/bin/python benchmarks/bench_simulate.py [--repeats 3]

Writes ``benchmarks/results/simulate.md``.

Measured in one process:

- the whole default study (``simulate_study(None, out)``: phantom, 24 scans,
  every file of the BIDS layout), ``--repeats`` times, median;
- a baseline in the same process: the same study with the background writer
  limited to one thread (``study.WRITE_AHEAD = 1``), to show what the
  overlap of compression with simulation buys;
- the stages of one run, timed separately: geometry (phantom, PSF weights,
  atlas), truth curves of 24 scans, images of 24 scans (noise included),
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

from petbind.simulate import load_config, simulate_study
from petbind.simulate import study as study_mod
from petbind.simulate.study import iter_truth, make_geometry, scan_image
from petbind.simulate.writer import nifti_bytes

HERE = Path(__file__).resolve().parent


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_study(tmp: Path, tag: str) -> tuple[float, float]:
    """(wall s, CPU s of this process, all threads) of the default study."""
    out = tmp / tag
    c0 = time.process_time()
    dt = timed(lambda: simulate_study(None, out))
    cpu = time.process_time() - c0
    shutil.rmtree(out)
    return dt, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg = load_config()
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
        stages: dict[str, tuple[float, float]] = {}

        def stage(name, fn):
            c0, t0 = time.process_time(), time.perf_counter()
            result = fn()
            stages[name] = (time.perf_counter() - t0, time.process_time() - c0)
            return result

        geo = stage("geometry", lambda: make_geometry(cfg))
        truths = stage("truth", lambda: list(iter_truth(cfg)))
        images = stage("images", lambda: [scan_image(cfg, geo, tr)[0] for tr in truths])
        sizes = stage("gzip", lambda: [len(nifti_bytes(im, geo.affine)) for im in images])
    med, med_base = (statistics.median(x[0] for x in r) for r in (full, base))
    cpu, cpu_base = (statistics.median(x[1] for x in r) for r in (full, base))
    lines = [
        "# Simulator benchmark (`benchmarks/bench_simulate.py`)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, numpy {np.__version__}. The machine is shared with "
        f"other engineers' runs (load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        "at the start on 2 cores), so absolute times are pessimistic and noisy.",
        "",
        f"Default founding study: {cfg.n_scans} scans, PET grid {geo.shape} x "
        f"{cfg.timing.n_frames} frames, phantom {geo.phantom.labels.shape} at "
        f"{cfg.phantom_voxel_mm:g} mm, noise {cfg.noise:g}, FWHM {cfg.fwhm_mm:g} mm.",
        "",
        "| run | median wall (s) | median CPU (s) | wall of each run (s) |",
        "| --- | --- | --- | --- |",
        f"| whole study, 2 writer threads (default) | {med:.2f} | {cpu:.2f} | "
        f"{', '.join(f'{x[0]:.2f}' for x in full)} |",
        f"| baseline: whole study, 1 writer thread | {med_base:.2f} | {cpu_base:.2f} | "
        f"{', '.join(f'{x[0]:.2f}' for x in base)} |",
        "",
        f"Ratio default / baseline (wall): {med / med_base:.2f}. Target: < 60 s wall "
        "(issue 5); aim < 20 s so `petbind demo` stays < 3 min. CPU time (all threads) "
        "is the figure least disturbed by other users' load: on an idle 2-core machine "
        "the wall time is about CPU time / (1 to 2).",
        "",
        "Stages of one run, timed separately (single-threaded):",
        "",
        "| stage | wall (s) | CPU (s) |",
        "| --- | --- | --- |",
        f"| geometry (phantom, PSF weights of {len(geo.phantom.table)} labels, atlas) | "
        "{:.2f} | {:.2f} |".format(*stages["geometry"]),
        f"| truth curves, {cfg.n_scans} scans (analytic 2TCM, fine-grid frame means) | "
        "{:.2f} | {:.2f} |".format(*stages["truth"]),
        f"| images, {cfg.n_scans} scans (W @ TAC, noise) | "
        "{:.2f} | {:.2f} |".format(*stages["images"]),
        f"| gzip of {cfg.n_scans} PET images (level 1, {np.mean(sizes) / 1e6:.1f} MB each) | "
        "{:.2f} | {:.2f} |".format(*stages["gzip"]),
        "",
    ]
    out = HERE / "results" / "simulate.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
