"""The realistic demo's two stages around the study, in-process vs on a local cluster.

``petbind demo --realistic`` runs its simulation and its report on the
2-worker local cluster it opens for the analyses (issue 18); before, both ran
in the main process while the workers idled. This times each stage both ways,
alternating (serial, cluster, serial, cluster) in one process with one
cluster, so that both see the same machine load: the realistic simulation
(``simulate_study(..., scheduler=)``, into fresh folders) and the report of a
finished realistic analysis (``build_report(..., scheduler=)``). It prints the
wall time, this process's CPU and the workers' CPU (total and the busiest
worker): on an otherwise idle 2-core machine the stage's wall time is about
this process's CPU plus the busiest worker's.

Run: ``python benchmarks/bench_demo_serial_stages.py DEMO_DIR`` where DEMO_DIR
is a finished ``petbind demo --realistic --out DEMO_DIR`` (its report is
rewritten, with the same bytes; scratch simulations go to a temporary folder).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path


def _cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _warm() -> None:
    import petbind.report.build
    import petbind.simulate.study  # noqa: F401


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demo", type=Path, help="a finished petbind demo --realistic folder")
    args = ap.parse_args()

    from petbind.compute import shared_scheduler
    from petbind.report.build import build_report
    from petbind.simulate.study import simulate_study
    from petbind.study.demo import realistic_configs

    out_dir = args.demo / "realistic" / "derivatives" / "petbind"
    cfg = realistic_configs()[0]
    scratch = Path(tempfile.mkdtemp(prefix="petbind-stages-"))
    print("| stage | where | wall (s) | main CPU (s) | workers CPU (s) | busiest worker (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    try:
        with shared_scheduler("local") as client:
            client.run(_warm)
            for stage in ("simulate", "report"):
                for i, where in enumerate(("in-process", "cluster") * 2):
                    w0 = client.run(_cpu)
                    c0, t0 = _cpu(), time.perf_counter()
                    sched = client if where == "cluster" else None
                    if stage == "simulate":
                        simulate_study(cfg, scratch / f"sim{i}", scheduler=sched)
                        shutil.rmtree(scratch / f"sim{i}")
                    else:
                        build_report(out_dir, scheduler=sched)
                    wall, main_cpu = time.perf_counter() - t0, _cpu() - c0
                    w = {k: v - w0[k] for k, v in client.run(_cpu).items()}
                    print(f"| {stage} | {where} | {wall:.1f} | {main_cpu:.1f} | "
                          f"{sum(w.values()):.1f} | {max(w.values()):.1f} |", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
