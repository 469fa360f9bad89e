"""Benchmark the report builder on a pipeline output folder, part by part.

Runs, in one process, on ``OUT`` (default: a fresh ``petbind demo`` output):

1. ``build_report(OUT)`` ``--repeats`` times: the baseline (median wall and
   CPU time, page size);
2. each part of the page on its own, ``--repeats`` times (reading the
   outputs; per-scan tables and fit figures; TAC and map small multiples; group
   figures; voxelwise figures and viewer volumes; the preprocessing section),
   as a share of the baseline;
3. the page size with and without the preprocessing section, and the bytes
   its QC figures would take embedded unchanged (the baseline of the
   shrink-and-quantise step).

The demo output has no preprocessing (its scans are aligned), so for the
default run the benchmark adds, in its own temporary copy, what ``petbind
run`` writes per scan under ``preprocess/``: a motion table and the three QC
figures drawn by ``petbind.preprocess.qc`` itself (motion from a seeded
random walk; edge overlays of the subject's T1w), so the figures have the
size and content of real ones. A given ``OUT`` is only read.

Writes ``benchmarks/results/report.md``. The machine has 2 cores shared with
other engineers' tests and benchmarks: the load average is recorded, and the
CPU time (less sensitive to that load) is given beside the wall time.

``--serial OUT [OUT ...]`` (issue 18: the report is the serial tail of
``petbind run``) measures instead, each in a fresh process, ``build_report``
of each output folder (a copy) in-process and on local clusters of
``--workers`` workers, as ``petbind run`` builds it: wall, the main process's
CPU and peak RSS, the workers' CPU and peak RSS; with ``--against SRC`` the
same with another source tree (e.g. ``/work/main/src`` before a change) and
whether the two pages are byte for byte the same. It adds a section to
``benchmarks/results/report.md`` (earlier sections are kept).

Usage: ``python benchmarks/bench_report.py [OUT] [--repeats N]``, or
``python benchmarks/bench_report.py --serial OUT [OUT ...] [--workers 0 2] [--against SRC]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULT = Path(__file__).parent / "results" / "report.md"

#: One measured build, in a fresh process: ``python -c _BUILD OUT WORKERS``.
_BUILD = r"""
import hashlib, json, os, resource, sys, threading, time
def proc():
    import time
    return time.process_time()
def hwm():  # this process's own peak RSS (MiB); ru_maxrss is the parent's in a LocalCluster worker
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
class Poll(threading.Thread):  # each worker's RSS every 0.25 s
    def __init__(self, pids):
        import psutil
        super().__init__(daemon=True)
        self.procs = [psutil.Process(p) for p in pids]
        self.peak = [0.0] * len(pids)
        self.stop = threading.Event()
    def run(self):
        while not self.stop.is_set():
            for i, p in enumerate(self.procs):
                self.peak[i] = max(self.peak[i], p.memory_info().rss / 2**20)
            self.stop.wait(0.25)
def main():
    import petbind
    from petbind.compute import shared_scheduler
    from petbind.report import build_report
    out, w = sys.argv[1], int(sys.argv[2])
    with shared_scheduler(f"local:{w}" if w else None) as engine:
        before = engine.run(proc) if w else {}
        keys = sorted(before)
        poll = Poll([engine.run(os.getpid)[k] for k in keys]) if w else None
        start = [engine.run(hwm)[k] for k in keys] if w else []
        if poll:
            poll.start()
        t, c = time.perf_counter(), time.process_time()
        page = build_report(out, scheduler=engine)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        if poll:
            poll.stop.set()
            poll.join()
        after = engine.run(proc) if w else {}
        peak = engine.run(hwm) if w else {}
    print(json.dumps({
        "src": petbind.__file__, "wall": wall, "cpu_main": cpu,
        "rss_main": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpu_workers": [after[k] - before[k] for k in keys],
        "rss_workers": [max(a, b) for a, b in zip(poll.peak, [peak[k] for k in keys])]
                       if poll else [],
        "rss_workers_start": start,
        "sha256": hashlib.sha256(page.read_bytes()).hexdigest()}))
if __name__ == "__main__":
    main()
"""


def _keep_history(old: str) -> str:
    """The sections of results/report.md after its first part (``## `` headings)."""
    i = old.find("\n## ")
    return old[i:] if i >= 0 else ""


def serial(outs: list[str], workers: list[int], against: str | None,
           repeats: int = 1) -> None:
    """``--serial``: build_report per folder, tree and cluster size; add a section."""
    import shutil

    from petbind.report import build

    trees = [("this tree", str(Path(__file__).resolve().parents[1] / "src"))]
    if against:
        trees.insert(0, ("against", str(Path(against).resolve())))
    rows = []
    for given in outs:
        src = build.load_outputs(given)
        tmp = Path(tempfile.mkdtemp(prefix="bench_report_serial_"))
        out = tmp / "out"  # a copy: the report is written beside the outputs
        shutil.copytree(src.root, out, ignore=shutil.ignore_patterns("report.html"))
        n = len(build.load_outputs(out).scans)
        pages = {}
        runs = [(w, name, tree) for w in workers for _ in range(repeats) for name, tree in trees]
        for w, name, tree in runs:
            env = {**os.environ, "PYTHONPATH": tree}
            load = os.getloadavg()[0]
            start = time.strftime("%H:%M", time.gmtime())
            r = subprocess.run([sys.executable, "-c", _BUILD, str(out), str(w)], env=env,
                               capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(f"build_report failed ({tree}, {w} workers):\n"
                                 f"{r.stderr[-3000:]}")
            rec = json.loads(r.stdout.strip().splitlines()[-1])
            rec.update(n=n, workers=w, tree=name, src_dir=tree, start=start,
                       load=(load, os.getloadavg()[0]))
            pages.setdefault(w, set()).add(rec["sha256"])
            rows.append(rec)
            print(json.dumps(rec), flush=True)
        for rec in rows:
            if rec["n"] == n:
                rec["same_page"] = len(pages[rec["workers"]]) == 1 and len(
                    set().union(*pages.values())) == 1
        shutil.rmtree(tmp)
    lines = [
        "",
        f"## Serial work of the report in `petbind run` (issue 18), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"`python benchmarks/bench_report.py --serial {' '.join(outs)} --workers "
        f"{' '.join(map(str, workers))}" + (f" --against {against}" if against else "")
        + (f" --repeats {repeats}" if repeats > 1 else "") + "`"
        f" on {platform.machine()}, {os.cpu_count()} CPUs (shared: load average before -> "
        "after each build in the table). `build_report` of a copy of each output folder, "
        "each build in a fresh process, in-process (0 workers) or on a local cluster "
        "started before it (as `petbind run` shares its cluster with the report). "
        "*Main CPU* and *main RSS*: the process that builds the page (the serial part); "
        "*workers*: CPU of each worker process over the build (figures drawn as tasks), "
        "and its RSS when the build starts -> its peak (RSS polled every 0.25 s and the "
        "process's own VmHWM; `ru_maxrss` is the parent's in a LocalCluster worker). With "
        "`--against`, the trees' builds alternate, `--repeats` times. *Same page*: every "
        "build of that folder wrote the same bytes.",
        "",
        "| scans | workers | tree | start (UTC) | wall (s) | main CPU (s) | main peak RSS "
        "(MiB) | workers CPU (s) | workers RSS start -> peak (MiB) | same page | load |",
        "| ---: | ---: | --- | --- | ---: | ---: | ---: | --- | --- | --- | --- |",
    ]
    for r in rows:
        tree = f"`{r['src_dir']}`" if r["tree"] == "against" else "this tree"
        lines.append(
            f"| {r['n']} | {r['workers']} | {tree} | {r['start']} | {r['wall']:.1f} | "
            f"{r['cpu_main']:.1f} | {r['rss_main']:.0f} | "
            f"{' + '.join(f'{c:.1f}' for c in r['cpu_workers']) or '-'} | "
            f"{_worker_rss(r)} | "
            f"{'yes' if r['same_page'] else 'NO'} | {r['load'][0]:.1f} -> {r['load'][1]:.1f} |")
    old = RESULT.read_text(encoding="utf-8") if RESULT.is_file() else "# Report builder benchmark\n"
    RESULT.write_text(old.rstrip("\n") + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def _worker_rss(r: dict) -> str:
    """``start -> peak`` MiB of each worker (older records: the peak alone)."""
    start = r.get("rss_workers_start")
    if not start:
        return " / ".join(f"{m:.0f}" for m in r["rss_workers"]) or "-"
    return " / ".join(f"{a:.0f} -> {m:.0f}" for a, m in zip(start, r["rss_workers"],
                                                             strict=True))


def _timed(fn, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn()`` over ``repeats`` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def add_preprocessing(out: Path, bids: Path, seed: int = 0) -> int:
    """Write realistic preprocessing outputs for every scan of ``out``; returns the count."""
    import nibabel as nib
    import numpy as np

    from petbind.preprocess import qc
    from petbind.preprocess.motion import (
        MotionResult,
        framewise_displacement,
        registration_blocks,
        write_motion_tsv,
    )
    from petbind.report import build
    from petbind.timing import FrameTiming

    rng = np.random.default_rng(seed)
    study = build.load_outputs(out)
    t1_cache: dict[str, np.ndarray] = {}
    for scan in study.scans:
        tacs = scan.tacs
        timing = FrameTiming(tacs["frame_start"].to_numpy(float),
                             (tacs["frame_end"] - tacs["frame_start"]).to_numpy(float), unit="s")
        n = len(tacs)
        params = np.cumsum(rng.normal(0.0, 0.12, (n, 6)), axis=0)
        params[0] = 0.0
        fd = framewise_displacement(params, 35.0)
        flagged = fd > 0.5
        motion = MotionResult(params=params, matrices=np.tile(np.eye(4), (n, 1, 1)), fd=fd,
                              flagged=flagged,
                              block=registration_blocks(timing.duration, 2.0),
                              reference_frames=np.arange(n // 3, 2 * n // 3),
                              center=np.zeros(3), metric=np.zeros(n),
                              settings={"fd_threshold_mm": 0.5, "fd_radius_mm": 35.0})
        folder = out / "preprocess" / scan.folder.relative_to(out)
        folder.mkdir(parents=True, exist_ok=True)
        write_motion_tsv(folder / f"{scan.stem}_desc-motion_timeseries.tsv", motion, timing)
        qc.plot_motion(folder / f"{scan.stem}_desc-motion_qc.png", motion, timing,
                       title=f"{scan.stem}: head motion")
        if scan.subject not in t1_cache:
            t1_path = next(bids.glob(f"sub-{scan.subject}/anat/*_T1w.nii*"))
            t1_cache[scan.subject] = np.asarray(nib.load(str(t1_path)).dataobj, dtype=float)
        t1 = t1_cache[scan.subject]
        qc.plot_edges(folder / f"{scan.stem}_desc-pet2t1w_qc.png", t1, np.roll(t1, 1, 0),
                      title=f"{scan.stem}: PET edges on T1w")
        qc.plot_edges(folder / f"{scan.stem}_desc-t1w2template_qc.png", t1, t1,
                      title=f"sub-{scan.subject}: T1w edges on template")
    return len(study.scans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="pipeline output folder (default: run the demo)")
    parser.add_argument("--repeats", type=int,
                        help="repeats (default 3; --serial: builds per tree and size, "
                        "default 1)")
    parser.add_argument("--serial", nargs="+", metavar="OUT",
                        help="measure build_report of these output folders in fresh processes, "
                        "in-process and on local clusters (see the module's docstring)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                        help="--serial: cluster sizes (0: in-process)")
    parser.add_argument("--against", help="--serial: another source tree to measure too")
    args = parser.parse_args()
    if args.serial:
        serial(args.serial, args.workers, args.against, args.repeats or 1)
        return

    from petbind.report import build, figures, preprocessing
    from petbind.report.sections import group, scans, voxelwise

    if args.out is None:
        from petbind.commands.demo import run_demo

        tmp = Path(tempfile.mkdtemp(prefix="bench_report_"))
        run_demo(tmp, report=False, progress=False)
        out = tmp / "derivatives" / "petbind"
        bids = tmp / "bids"
    else:
        import shutil

        src = build.load_outputs(args.out)
        tmp = Path(tempfile.mkdtemp(prefix="bench_report_"))
        out = tmp / "out"  # a copy: the report is written beside the outputs
        shutil.copytree(src.root, out, ignore=shutil.ignore_patterns("report.html"))
        bids = src.dataset or Path(args.out)
    synthetic = 0
    if not (out / preprocessing.PREPROCESS_DIR).is_dir() and bids.is_dir():
        synthetic = add_preprocessing(out, bids)

    # without the preprocessing section: the same folder with preprocess/ moved aside
    aside = out.parent / "preprocess_aside"
    has_pre = (out / preprocessing.PREPROCESS_DIR).is_dir()
    if has_pre:
        (out / preprocessing.PREPROCESS_DIR).rename(aside)
    build.build_report(out)
    size_without_mb = (out / build.REPORT_NAME).stat().st_size / 1e6
    if has_pre:
        aside.rename(out / preprocessing.PREPROCESS_DIR)
    found = preprocessing.find_preprocessed(out)
    qc_files = [p for files in found.values() for k, p in files.items() if k != "motion"]
    raw_b64_mb = sum(4 * ((p.stat().st_size + 2) // 3) for p in qc_files) / 1e6

    load_before = os.getloadavg()
    args.repeats = args.repeats or 3
    base_wall, base_cpu = _timed(lambda: build.build_report(out), args.repeats)
    size_mb = (build.load_outputs(out).root / build.REPORT_NAME).stat().st_size / 1e6

    def fresh():
        return build.load_outputs(out)

    parts = {
        "read outputs (tables, JSON)": lambda: [
            (s.tacs, s.fits, s.fitted, s.provenance) for s in fresh().scans],
        "per-scan tables + fit figures": lambda: scans.scan_sections(fresh(), figures),
        "TAC small multiples": lambda: scans.tac_grids(fresh(), figures),
        "BP_ND map small multiples": lambda: scans.map_grids(fresh(), figures),
        "group figures + tables": lambda: group.group_sections(fresh(), figures),
        "voxelwise figures + viewer volumes": lambda: voxelwise.voxel_sections(fresh(), figures),
        "preprocessing section (motion tables, overview, QC figures)":
            lambda: preprocessing.preprocessing_section(fresh(), figures),
    }
    rows = []
    for name, fn in parts.items():
        wall, cpu = _timed(fn, args.repeats)
        rows.append((name, wall, cpu))
    load_after = os.getloadavg()
    study = fresh()
    section = preprocessing.preprocessing_section(study, figures)
    embedded_mb = sum(len(f["uri"]) for r in section["rows"] for f in r["figures"]
                      if f["uri"]) / 1e6 if section else 0.0
    lines = [
        "# Report builder benchmark",
        "",
        f"Output folder: `{out}` ({len(study.scans)} scans, {len(study.tracers)} tracers, "
        f"{len(study.tmaps)} t maps). Page: {size_mb:.2f} MB.",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; shared with other engineers' work (load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after), so wall times are "
        "inflated; CPU time of this process is the steadier number.",
        f"Medians over {args.repeats} repeats, each part timed on its own in the same process.",
        "",
        f"Preprocessing section: {len(found)} scans, {len(qc_files)} QC figures"
        + (f" (written by this benchmark with petbind.preprocess.qc for {synthetic} scans)"
           if synthetic else "") + f". Page {size_mb:.2f} MB with it, {size_without_mb:.2f} MB "
        f"without it (+{size_mb - size_without_mb:.2f} MB). The QC figures take "
        f"{embedded_mb:.2f} MB embedded (shrunk to {preprocessing.QC_WIDTH} px, "
        f"{preprocessing.QC_COLOURS} colours) "
        f"against {raw_b64_mb:.2f} MB embedded unchanged (ratio "
        f"{raw_b64_mb / embedded_mb if embedded_mb else float('nan'):.1f}x smaller).",
        "",
        "| part | wall (s) | CPU (s) | CPU share of the whole build |",
        "| --- | ---: | ---: | ---: |",
        f"| whole `build_report` (baseline) | {base_wall:.2f} | {base_cpu:.2f} | 1.00 |",
    ]
    lines += [f"| {name} | {wall:.2f} | {cpu:.2f} | {cpu / base_cpu:.2f} |"
              for name, wall, cpu in rows]
    lines.append("")
    history = _keep_history(RESULT.read_text(encoding="utf-8") if RESULT.is_file() else "")
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text("\n".join(lines) + "\n" + history, encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
