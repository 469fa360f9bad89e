"""Benchmark a rerun of ``petbind run`` over complete outputs (everything current).

Runs ``petbind run BIDS --config CONFIG --out OUT --no-progress [--no-report]``
as a fresh process per run, alternating this source tree with a baseline one
(``--baseline SRC``, e.g. an ``git archive`` of an older commit's ``src``) and
each ``--scheduler`` given, ``--repeats`` times, so both trees meet the same
machine load. Per run it records the wall time, the CPU time (user + system)
of the process tree (``os.wait4``: the command and the worker processes it
started and waited for), the scan stage's wall time (``register_subjects`` +
``scans`` of ``group/provenance.json``) and how many scans the run skipped.
A run that skipped fewer scans than the study has is flagged: it was not a
rerun over complete outputs.

The outputs must be complete for both trees (the same provenance format and
petbind version): a rerun rewrites the same bytes, so running it in ``OUT``
is safe. Writes ``benchmarks/results/rerun.md`` (or ``--results``).

Usage::

    python benchmarks/bench_rerun.py BIDS --config CONFIG --out OUT \\
        [--baseline SRC] [--schedulers sync local:2] [--repeats 3] [--report]
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

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def one_run(src: Path, bids: Path, config: Path, out: Path, scheduler: str,
            report: bool) -> dict[str, float]:
    """One ``petbind run`` rerun with ``src`` first on ``PYTHONPATH``."""
    cmd = [sys.executable, "-m", "petbind", "run", str(bids), "--config", str(config),
           "--out", str(out), "--scheduler", scheduler, "--no-progress"]
    if not report:
        cmd.append("--no-report")
    env = {**os.environ, "PYTHONPATH": str(src)}
    with tempfile.TemporaryFile() as log:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            log.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{log.read().decode()[-2000:]}")
    prov = json.loads((out / "group" / "provenance.json").read_text())
    secs = prov["run_seconds"]
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
            "scan_stage": secs.get("register_subjects", 0.0) + secs.get("scans", 0.0),
            "skipped": len(prov["skipped_scans"]), "n_scans": len(prov["scans"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bids", type=Path)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="complete outputs to rerun over")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another source tree's src/ to compare with (alternated)")
    ap.add_argument("--schedulers", nargs="+", default=["sync", "local:2"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--report", action="store_true", help="also rebuild the report")
    ap.add_argument("--results", type=Path, default=HERE / "results" / "rerun.md")
    args = ap.parse_args()

    trees = [("this", SRC)] + ([("baseline", args.baseline)] if args.baseline else [])
    rows: dict[tuple[str, str], list[dict[str, float]]] = {}
    load = [os.getloadavg()[0]]
    for rep in range(args.repeats):
        for sched in args.schedulers:
            for name, src in (trees if rep % 2 == 0 else trees[::-1]):
                r = one_run(src, args.bids, args.config, args.out, sched, args.report)
                rows.setdefault((name, sched), []).append(r)
                print(f"{name:8s} {sched:8s} wall {r['wall']:6.2f} s  CPU {r['cpu']:6.2f} s  "
                      f"scan stage {r['scan_stage']:5.2f} s  skipped {r['skipped']}/"
                      f"{r['n_scans']}", flush=True)
    load.append(os.getloadavg()[0])

    def med(xs: list[dict[str, float]], k: str) -> float:
        return statistics.median(x[k] for x in xs)

    lines = ["| tree | scheduler | wall (s, median) | CPU of the process tree (s, median) "
             "| scan stage wall (s, median) | scans skipped |", "| --- | --- | ---: | ---: "
             "| ---: | --- |"]
    for (name, sched), rs in rows.items():
        skipped = sorted({f"{int(r['skipped'])}/{int(r['n_scans'])}" for r in rs})
        lines.append(f"| {name} | {sched} | {med(rs, 'wall'):.2f} | {med(rs, 'cpu'):.2f} "
                     f"| {med(rs, 'scan_stage'):.2f} | {', '.join(skipped)} |")
    if args.baseline:
        lines.append("")
        for sched in args.schedulers:
            a, b = rows[("this", sched)], rows[("baseline", sched)]
            lines.append(f"- {sched}: this / baseline, wall {med(a, 'wall') / med(b, 'wall'):.2f}"
                         f", CPU {med(a, 'cpu') / med(b, 'cpu'):.2f} (medians of "
                         f"{args.repeats}, alternated)")
    text = (f"# Rerun over complete outputs\n\n`python benchmarks/bench_rerun.py {args.bids} "
            f"--config {args.config} --out {args.out}"
            + (f" --baseline {args.baseline}" if args.baseline else "")
            + f" --schedulers {' '.join(args.schedulers)} --repeats {args.repeats}"
            + (" --report" if args.report else "") + "`\n\n"
            f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
            f"{load[0]:.1f} before, {load[1]:.1f} after; "
            + ("with" if args.report else "without") + " the report.\n\n"
            + "\n".join(lines) + "\n")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
