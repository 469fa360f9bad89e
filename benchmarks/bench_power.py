"""``petbind power`` speed: 200 simulated studies of the demo design at 5 values of n.

Run on demand (not part of the test suite)::

    .venv/bin/python benchmarks/bench_power.py [--studies 200] [--schedulers sync,local:2]

Writes ``benchmarks/results/power.md``.

The issue's target (issue 16): 200 simulated studies of the demo design
(founding-study simulator design, both tracers, 3 conditions; the demo study
config: SRTM, MRTM2 and Logan, k2' from MRTM) at n = 4, 6, 8, 10, 12 in under
10 minutes on 2 cores, on the simulator's region-level path
(:mod:`petbind.stats.power`).

Measured:

- the whole :func:`petbind.stats.power.prospective_power` once per scheduler
  (``sync`` = one process; ``local:2`` = two dask worker processes): wall
  time, this process's CPU seconds, and the CPU seconds of the tasks (summed
  inside the workers, so comparable across schedulers);
- the stages of one study, in this process: the true curves of its scans the
  way the simulator makes them for images (one
  :func:`~petbind.simulate.study.scan_truth` per scan, 1/120-min grid; what the
  region path used before) against the region path's
  :func:`~petbind.stats.power.study_truth` (one call per subject, 1/60-min
  grid), and the rest (noise, k2', fits).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
from pathlib import Path

import numpy as np

from petbind.simulate.config import load_config
from petbind.simulate.study import scan_truth
from petbind.stats.power import (
    PowerSettings,
    _study_seed,
    make_plan,
    prospective_power,
    simulate_estimates,
    study_truth,
)
from petbind.study.config import demo_config

HERE = Path(__file__).resolve().parent


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=200)
    ap.add_argument("--n", default="4,6,8,10,12")
    ap.add_argument("--schedulers", default="sync,local:2")
    ap.add_argument("--stage-studies", type=int, default=4)
    ap.add_argument("--out", default=str(HERE / "results" / "power.md"))
    args = ap.parse_args()
    n_values = tuple(int(x) for x in args.n.split(","))
    sim, study = load_config(None), demo_config()
    settings = PowerSettings(n_values=n_values, n_studies=args.studies)
    load0 = os.getloadavg()

    # stages of one study (this process)
    plan = make_plan(sim, study, settings)
    seeds = [_study_seed(settings.seed, k) for k in range(args.stage_studies)]
    subjects = [f"{i + 1:02d}" for i in range(plan.n_max)]
    n_scans = plan.n_max * len(sim.conditions) * len(sim.tracers)
    simulate_estimates(sim, study, plan, seeds[:1])  # geometry cache, imports
    c0 = time.process_time()
    for s in seeds:
        cfg = dataclasses.replace(sim, seed=s, subjects=subjects)
        for i_t in range(len(sim.tracers)):
            for i_s in range(plan.n_max):
                for i_c in range(len(sim.conditions)):
                    scan_truth(cfg, i_s, i_t, i_c)
    old_truth = (time.process_time() - c0) / len(seeds)
    c0 = time.process_time()
    for s in seeds:
        cfg = dataclasses.replace(sim, seed=s, subjects=subjects)
        for i_t in range(len(sim.tracers)):
            study_truth(cfg, i_t, plan.n_max)
    new_truth = (time.process_time() - c0) / len(seeds)
    c0 = time.process_time()
    simulate_estimates(sim, study, plan, seeds)
    whole = (time.process_time() - c0) / len(seeds)

    runs = []
    for word in args.schedulers.split(","):
        c0, t0 = _cpu(), time.perf_counter()
        res = prospective_power(sim, study, settings, scheduler=word)
        wall = time.perf_counter() - t0
        runs.append((word, res.info["scheduler"], wall, _cpu() - c0,
                     res.info["task_cpu_seconds"], res.info["studies_per_task"],
                     res.table))
        print(f"{word}: wall {wall:.1f} s, task CPU {res.info['task_cpu_seconds']:.1f} s",
              flush=True)
    load1 = os.getloadavg()
    same = all(np.allclose(r[6]["power"], runs[0][6]["power"], equal_nan=True)
               for r in runs[1:])

    lines = [
        "# Prospective power benchmark (`benchmarks/bench_power.py`)", "",
        f"Command: `.venv/bin/python benchmarks/bench_power.py --studies {args.studies} "
        f"--schedulers {args.schedulers}`. Machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}. "
        "The machine is shared with six other engineers' runs (load average "
        f"{load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f} at the start, {load1[0]:.1f} at "
        "the end, on 2 cores), so wall times are pessimistic and noisy; the task CPU "
        "seconds are the steadier figure. On an idle 2-core machine the wall time of "
        "`local:2` is about task CPU / 2 plus the cluster's start (a few seconds).", "",
        f"Design: the founding study (`petbind simulate` default: {len(sim.tracers)} "
        f"tracers, conditions {', '.join(sim.conditions)}), the demo study config "
        f"(models {', '.join(plan.models[plan.tracers[0]])}), {args.studies} studies at "
        f"n = {', '.join(map(str, n_values))} ({n_scans} region-level scans per study, "
        f"{args.studies * n_scans} in all). Target: under 10 minutes on 2 cores.", "",
        "| scheduler | where | studies per task | wall (s) | wall (min) | task CPU (s) "
        "| CPU of this process and its children (s) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for word, where, wall, cpu, task_cpu, size, _ in runs:
        lines.append(f"| `{word}` | {where} | {size} | {wall:.1f} | {wall / 60:.2f} | "
                     f"{task_cpu:.1f} | {cpu:.1f} |")
    lines += [
        "", f"Power tables identical across schedulers: {same}.", "",
        f"Stages per study (CPU seconds in this process, mean of {args.stage_studies} "
        "studies):", "",
        "| stage | CPU (s) per study |", "| --- | --- |",
        f"| true curves, per-scan `scan_truth` (1/120-min grid; before) | {old_truth:.2f} |",
        f"| true curves, `study_truth` (one call per subject, 1/60-min grid; now) | "
        f"{new_truth:.2f} |",
        f"| whole study now (truth, noise, k2', {len(plan.models[plan.tracers[0]])} models "
        f"x {len(sim.tracers)} tracers) | {whole:.2f} |", "",
        f"Truth speed-up: {old_truth / new_truth:.1f}x; the fits (model set-up and "
        "optimisation, :mod:`petbind.models`) are the rest.",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
