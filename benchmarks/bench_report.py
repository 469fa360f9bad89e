"""Benchmark the report builder on a pipeline output folder, part by part.

Runs, in one process, on ``OUT`` (default: a fresh ``petbind demo`` output):

1. ``build_report(OUT)`` ``--repeats`` times: the baseline (median wall and
   CPU time, page size);
2. each part of the page on its own, ``--repeats`` times (reading the
   outputs; per-scan tables and fit figures; TAC and map small multiples; group
   figures; voxelwise figures and viewer volumes; templating), as a share of
   the baseline.

Writes ``benchmarks/results/report.md``. The machine has 2 cores shared with
other engineers' tests and benchmarks: the load average is recorded, and the
CPU time (less sensitive to that load) is given beside the wall time.

Usage: ``python benchmarks/bench_report.py [OUT] [--repeats N]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path


def _timed(fn, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn()`` over ``repeats`` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="pipeline output folder (default: run the demo)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from petbind.report import build, figures

    if args.out is None:
        from petbind.study.demo import run_demo

        tmp = Path(tempfile.mkdtemp(prefix="bench_report_"))
        run_demo(tmp, report=False, progress=False)
        out = tmp / "derivatives" / "petbind"
    else:
        out = Path(args.out)

    load_before = os.getloadavg()
    base_wall, base_cpu = _timed(lambda: build.build_report(out), args.repeats)
    size_mb = (build.load_outputs(out).root / build.REPORT_NAME).stat().st_size / 1e6

    def fresh():
        return build.load_outputs(out)

    parts = {
        "read outputs (tables, JSON)": lambda: [
            (s.tacs, s.fits, s.fitted, s.provenance) for s in fresh().scans],
        "per-scan tables + fit figures": lambda: build._scan_sections(fresh(), figures),
        "TAC small multiples": lambda: build._tac_grids(fresh(), figures),
        "BP_ND map small multiples": lambda: build._map_grids(fresh(), figures),
        "group figures + tables": lambda: build._group_sections(fresh(), figures),
        "voxelwise figures + viewer volumes": lambda: build._voxel_sections(fresh(), figures),
    }
    rows = []
    for name, fn in parts.items():
        wall, cpu = _timed(fn, args.repeats)
        rows.append((name, wall, cpu))
    load_after = os.getloadavg()
    study = fresh()
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
        "| part | wall (s) | CPU (s) | CPU share of the whole build |",
        "| --- | ---: | ---: | ---: |",
        f"| whole `build_report` (baseline) | {base_wall:.2f} | {base_cpu:.2f} | 1.00 |",
    ]
    lines += [f"| {name} | {wall:.2f} | {cpu:.2f} | {cpu / base_cpu:.2f} |"
              for name, wall, cpu in rows]
    lines.append("")
    result = Path(__file__).parent / "results" / "report.md"
    result.parent.mkdir(parents=True, exist_ok=True)
    result.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
