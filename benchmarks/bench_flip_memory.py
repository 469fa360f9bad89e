"""Worker memory and CPU of the voxel sign-flip tasks, before and after slab tasks (issue 18).

The study stage runs every contrast's sign flips as tasks of the compute engine
(``stats.voxel_null.flip_null_tasks``). Before (``--before-src``, e.g. the
lead's checkout at the commit before the slab tasks) every task held every
subject's contrast value at every voxel of the mask (``n x V x 8`` bytes, sent
to every worker once); after (this tree), tasks hold slabs of planes of at most
``SLAB_BYTES``. For each number of subjects and each version, a fresh process
builds the cohort benchmark's brain mask (``bench_cohort.atlas()``: 2 mm grid
80 x 96 x 84, 252,240 voxels), random contrasts (Fortran order, as the study
stage's ``prepare_sign_flip`` makes them) with an effect in one region, the
flips (``sign_flips``, seed 0) and the cluster-forming t of p = 0.01, starts a
``local:1`` engine (one worker process, as ``petbind run --scheduler local:1``),
imports the flips' module there, and runs the tasks. Recorded:

- peak RSS of the worker process (``ru_maxrss``), and its RSS after the import;
- CPU seconds (user + sys) of the worker over the tasks, and of the main process
  (building the tasks, sending them, merging the results);
- the pickled size of the task results (what the workers send back);
- the null distributions, saved and compared bit for bit between versions.

Command (about 20 min of CPU on 2 busy cores for both versions and both sizes)::

    mkdir -p /tmp/flipslab/before && git archive 18c07e5 src | tar -x -C /tmp/flipslab/before
    PYTHONPATH=src .venv/bin/python benchmarks/bench_flip_memory.py \\
        --before-src /tmp/flipslab/before/src --subjects 64 250 --flips 1000 \\
        --work /tmp/flipslab/bench

Writes ``benchmarks/results/flip_memory.md`` and ``flip_memory.jsonl``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _worker_usage() -> dict[str, float]:
    """In the worker: peak and current RSS (MiB), CPU seconds so far."""
    import resource

    import psutil

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"maxrss_mib": ru.ru_maxrss / 1024, "rss_mib": psutil.Process().memory_info().rss
            / 2**20, "cpu_s": ru.ru_utime + ru.ru_stime}


def _reset_peak() -> bool:
    """In the worker: reset the kernel's peak RSS (VmHWM) so it measures what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _vm_hwm_mib() -> float:
    """In the worker: VmHWM (peak RSS since the last reset), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class _Poll:
    """Largest RSS of a process, sampled every 10 ms in a thread of this process."""

    def __init__(self, pid: int) -> None:
        import threading

        import psutil

        self.proc, self.peak, self.stop = psutil.Process(pid), 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self.stop.wait(0.01)

    def done(self) -> float:
        self.stop.set()
        self.thread.join()
        return self.peak / 2**20


def _import_flips() -> str:
    """In the worker: import what the tasks use (a study's worker has it from its scans)."""
    import scipy.ndimage
    import scipy.sparse.csgraph  # noqa: F401

    import petbind.stats.voxel_null as vn

    return vn.__file__


def child(n: int, n_flips: int, out: Path) -> dict:
    """One case in this (fresh) process: the tasks on a one-worker local cluster."""
    import pickle
    import resource

    from scipy.stats import t as t_dist

    import petbind
    from petbind.compute import open_engine
    from petbind.stats import voxel_null
    from petbind.stats.voxel import sign_flips
    from petbind.stats.voxel_null import flip_null_tasks, merge_flip_null

    spec = importlib.util.spec_from_file_location("bench_cohort", HERE / "bench_cohort.py")
    bc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bc)
    lab = bc.atlas()
    mask = lab > 0
    v = int(mask.sum())
    rng = np.random.default_rng(0)
    d = 0.1 * rng.standard_normal((n, v))
    d[:, lab[mask] == 2] -= 0.05
    d = np.asfortranarray(d)                  # as prepare_sign_flip's d[:, keep]
    flips, _ = sign_flips(n, n_flips, seed=0)
    thr = float(t_dist.isf(0.01 / 2, n - 1))
    rec: dict = {"n": n, "flips": int(flips.shape[0]), "voxels": v,
                 "data_mib": d.nbytes / 2**20, "petbind": petbind.__file__}
    with open_engine("local:1") as engine:
        client = engine.client
        rec["worker_module"] = next(iter(client.run(_import_flips).values()))
        u0 = next(iter(client.run(_worker_usage).values()))
        reset = next(iter(client.run(_reset_peak).values()))
        poll = _Poll(next(iter(client.run(os.getpid).values())))
        c0, w0 = time.process_time(), time.perf_counter()
        tasks = flip_null_tasks(d, flips, mask, thr, engine)
        # as the study stage submits them (slab tasks: 2 per worker at a time)
        run = getattr(voxel_null, "run_flip_tasks", None)
        results = run(engine, tasks) if run else engine.run(tasks)
        wall = time.perf_counter() - w0
        polled = poll.done()
        hwm = next(iter(client.run(_vm_hwm_mib).values())) if reset else float("nan")
        u1 = next(iter(client.run(_worker_usage).values()))
        parts = [results[t.key] for t in tasks]
        c1 = time.process_time()
        null = merge_flip_null(parts)
        c2 = time.process_time()
    rec.update({
        "tasks": len(tasks),
        "task_data_mib": max(sum(a.nbytes for a in t.args[0]) if isinstance(t.args[0], tuple)
                             else d.nbytes + mask.nbytes for t in tasks) / 2**20,
        "worker_rss_after_import_mib": u0["rss_mib"],
        "worker_peak_before_tasks_mib": u0["maxrss_mib"],
        "worker_maxrss_mib": u1["maxrss_mib"],
        "worker_peak_rss_mib": hwm if reset else polled,
        "worker_peak_polled_mib": polled, "peak_from": "VmHWM" if reset else "polled",
        "worker_cpu_s": u1["cpu_s"] - u0["cpu_s"],
        "main_cpu_s": c2 - c0, "merge_cpu_s": c2 - c1, "wall_s": wall,
        "results_mib": len(pickle.dumps(parts, protocol=5)) / 2**20,
        "main_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "max_cluster_flip0": float(null.max_cluster[0]),
    })
    np.savez(out, t_obs=null.t_obs, max_abs_t=null.max_abs_t, max_cluster=null.max_cluster)
    return rec


def paired_cpu(before_src: Path, n: int, n_flips: int, rounds: int) -> dict:
    """CPU seconds of the flips' task work, before and with slabs, alternating in this process.

    Before: the before version's ``flip_null`` in blocks of its ``TASK_BLOCK_BYTES``
    (what its tasks compute, one after another); slabs: this tree's slab tasks run
    one after another in this process and merged. Same data as :func:`child`.
    """
    from scipy.stats import t as t_dist

    from petbind.compute import open_engine
    from petbind.stats.voxel import sign_flips
    from petbind.stats.voxel_null import flip_null_tasks, merge_flip_null

    spec = importlib.util.spec_from_file_location(
        "voxel_null_before", before_src / "petbind" / "stats" / "voxel_null.py")
    old = importlib.util.module_from_spec(spec)
    sys.modules["voxel_null_before"] = old    # its dataclasses look their module up
    spec.loader.exec_module(old)
    spec = importlib.util.spec_from_file_location("bench_cohort", HERE / "bench_cohort.py")
    bc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bc)
    mask = bc.atlas() > 0
    lab = bc.atlas()
    rng = np.random.default_rng(0)
    d = 0.1 * rng.standard_normal((n, int(mask.sum())))
    d[:, lab[mask] == 2] -= 0.05
    d = np.asfortranarray(d)
    flips, _ = sign_flips(n, n_flips, seed=0)
    thr = float(t_dist.isf(0.01 / 2, n - 1))
    times: dict[str, list[float]] = {"before": [], "slabs": []}
    nulls = {}
    for _ in range(rounds):
        c = time.process_time()
        nulls["before"] = old.flip_null(d, flips, mask, thr, old.TASK_BLOCK_BYTES)
        times["before"].append(time.process_time() - c)
        c = time.process_time()
        with open_engine("sync") as engine:
            tasks = flip_null_tasks(d, flips, mask, thr, engine)
            nulls["slabs"] = merge_flip_null([t.func(*t.args, **t.kwargs) for t in tasks])
        times["slabs"].append(time.process_time() - c)
    same = all(getattr(nulls["before"], k).tobytes() == getattr(nulls["slabs"], k).tobytes()
               for k in ("t_obs", "max_abs_t", "max_cluster"))
    return {"n": n, "flips": int(flips.shape[0]), "rounds": rounds, "cpu_s": times,
            "identical": same, "load": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def _run_case(src: Path, n: int, n_flips: int, work: Path, tag: str,
              reuse: bool = False) -> dict:
    out = work / f"null_{tag}_{n}.npz"
    saved = work / f"record_{tag}_{n}_{n_flips}.json"
    if reuse and saved.exists() and out.exists():
        rec = json.loads(saved.read_text())
        print(json.dumps({"reused": str(saved)}), flush=True)
        return rec
    env = {**os.environ, "PYTHONPATH": str(src)}
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(n),
                        "--flips", str(n_flips), "--out", str(out)],
                       env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{tag} n={n} failed:\n{r.stderr[-3000:]}")
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    rec["version"], rec["npz"] = tag, str(out)
    saved.write_text(json.dumps(rec))
    print(json.dumps(rec), flush=True)
    return rec


def _same(a: str, b: str) -> bool:
    x, y = np.load(a), np.load(b)
    return all(x[k].dtype == y[k].dtype and x[k].tobytes() == y[k].tobytes()
               for k in ("t_obs", "max_abs_t", "max_cluster"))


def _git(*args: str, cwd: Path) -> str:
    r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else "?"


def write(rows: list[dict], meta: dict, final: bool = True) -> None:
    """flip_memory.md from the rows so far; the raw record is appended to the jsonl at the end."""
    RESULTS.mkdir(exist_ok=True)
    if final:
        with open(RESULTS / "flip_memory.jsonl", "a") as f:
            f.write(json.dumps({"meta": meta, "rows": rows}) + "\n")
    lines = [
        "# Worker memory of the voxel sign-flip tasks: whole mask vs slabs of planes",
        "",
        "`benchmarks/bench_flip_memory.py` (issue 18). Each row: a fresh process builds the "
        "cohort benchmark's brain mask (2 mm grid 80 x 96 x 84, "
        f"{rows[0]['voxels']:,} voxels), random contrasts of n subjects (float64, Fortran "
        "order as in the study stage) with an effect in one region, the flips (seed 0) "
        "and the cluster-forming t of p = 0.01, and runs `flip_null_tasks` on a "
        "`local:1` engine (one worker process). *before*: every task holds all n x V "
        "values (sent once to the worker); *slabs*: tasks over slabs of planes of at most "
        f"`SLAB_BYTES` ({meta['slab_mib']:g} MiB) each, flips in blocks of "
        f"`TASK_BLOCK_BYTES` ({meta['block_mib']:g} MiB), submitted 2 per worker at a time "
        "(`run_flip_tasks`).",
        "",
        "Worker peak RSS during the tasks: the worker process's VmHWM, reset just before "
        "the tasks (its start-up peak, about 400 MiB while distributed spawns it and it "
        "imports, is not the tasks'), checked by sampling its RSS every 10 ms. The issue's "
        "budget per worker is 282 MiB (2 x 71 MiB of one scan + 140 MiB fixed overhead, "
        "`benchmarks/results/cohort.md`); this worker imported less than a study's "
        "(118 MiB after the imports).",
        "",
        f"Before: `{meta['before_src']}` ({meta['before_rev']}); slabs: this tree "
        f"({meta['after_rev']}). Machine: {meta['machine']}; load average when this file "
        f"was written {meta['load']} (rows taken over from earlier runs with `--reuse` "
        "ran on the same machine; on 2 cores shared with other sessions the worker CPU "
        "of separate runs varies by tens of per cent with the load: the paired run below "
        "is the CPU comparison; wall is noisier still).",
        "",
        "| subjects | flips | version | tasks | data n x V (MiB) | largest task data (MiB) "
        "| worker RSS after import (MiB) | worker peak RSS during the tasks (MiB) "
        "| worker CPU (s) "
        "| main CPU (s) | of it merge (s) | results sent back (MiB) | wall (s) |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['flips']} | {r['version']} | {r['tasks']} | "
            f"{r['data_mib']:.0f} | {r['task_data_mib']:.1f} | "
            f"{r['worker_rss_after_import_mib']:.0f} | {r['worker_peak_rss_mib']:.0f} | "
            f"{r['worker_cpu_s']:.1f} | {r['main_cpu_s']:.2f} | {r['merge_cpu_s']:.2f} | "
            f"{r['results_mib']:.2f} | {r['wall_s']:.1f} |")
    lines += ["", "Same null distributions (t of flip 0, max |t| and largest cluster of every "
              "flip, bit for bit) before and with slabs:", ""]
    for n in sorted({r["n"] for r in rows}):
        pair = {r["version"]: r for r in rows if r["n"] == n}
        if {"before", "slabs"} <= set(pair):
            same = _same(pair["before"]["npz"], pair["slabs"]["npz"])
            b, s = pair["before"], pair["slabs"]
            lines.append(
                f"- {n} subjects: {'identical' if same else 'DIFFERENT'}; worker peak "
                f"{b['worker_peak_rss_mib']:.0f} -> {s['worker_peak_rss_mib']:.0f} MiB, "
                f"worker CPU {b['worker_cpu_s']:.1f} -> {s['worker_cpu_s']:.1f} s "
                f"({s['worker_cpu_s'] / b['worker_cpu_s'] - 1:+.1%}), worker + main CPU "
                f"{b['worker_cpu_s'] + b['main_cpu_s']:.1f} -> "
                f"{s['worker_cpu_s'] + s['main_cpu_s']:.1f} s.")
    pc = meta.get("paired")
    if pc:
        b, s_ = pc["cpu_s"]["before"], pc["cpu_s"]["slabs"]
        lines += ["", f"Paired CPU in one process ({pc['n']} subjects, {pc['flips']} flips, "
                  f"{pc['rounds']} rounds alternating, load average {pc['load']}): before "
                  f"{', '.join(f'{x:.1f}' for x in b)} s, slabs "
                  f"{', '.join(f'{x:.1f}' for x in s_)} s: slabs / before = "
                  f"{sum(s_) / sum(b):.3f}; same null bit for bit: "
                  f"{'yes' if pc['identical'] else 'NO'}. (Before: the before version's "
                  "`flip_null` in blocks of its `TASK_BLOCK_BYTES`, what its tasks compute; "
                  "slabs: this tree's slab tasks one after another, and their merge.)"]
    lines += ["", f"Command: `{meta['command']}`", ""]
    (RESULTS / "flip_memory.md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--paired-cpu", type=int, nargs=3, metavar=("N", "FLIPS", "ROUNDS"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--paired", type=int, nargs=3, default=[64, 200, 2],
                    metavar=("N", "FLIPS", "ROUNDS"),
                    help="paired in-process CPU comparison (fresh process, before and slabs "
                         "alternating; N 0: none)")
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--before-src", type=Path, help="src/ of the version before slab tasks")
    ap.add_argument("--before-rev", default="18c07e5",
                    help="the commit --before-src was taken from (for the record)")
    ap.add_argument("--subjects", type=int, nargs="+", default=[64, 250])
    ap.add_argument("--flips", type=int, default=1000)
    ap.add_argument("--reuse", nargs="+", default=[], choices=["before", "slabs", "paired"],
                    help="reuse these versions' records in --work (same subjects and flips)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/flipslab/bench"))
    a = ap.parse_args()
    if a.child is not None:
        print(json.dumps(child(a.child, a.flips, a.out)))
        return
    if a.paired_cpu:
        print(json.dumps(paired_cpu(a.before_src, *a.paired_cpu)))
        return
    a.work.mkdir(parents=True, exist_ok=True)
    after_src = HERE.parent / "src"
    meta = {"before_src": str(a.before_src),
            "before_rev": a.before_rev,
            "after_rev": _git("rev-parse", "--short", "HEAD", cwd=HERE),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "command": "PYTHONPATH=src .venv/bin/python benchmarks/bench_flip_memory.py "
                       + " ".join(sys.argv[1:])}
    from petbind.stats import voxel_null

    meta["slab_mib"] = voxel_null.SLAB_BYTES / 2**20
    meta["block_mib"] = voxel_null.TASK_BLOCK_BYTES / 2**20
    rows = []
    saved = a.work / "paired_{}_{}_{}.json".format(*a.paired)
    if a.before_src and a.paired[0] and "paired" in a.reuse and saved.exists():
        meta["paired"] = json.loads(saved.read_text())
    elif a.before_src and a.paired[0]:
        r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--before-src",
                            str(a.before_src), "--paired-cpu", *map(str, a.paired)],
                           env={**os.environ, "PYTHONPATH": str(after_src)},
                           capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"paired CPU failed:\n{r.stderr[-3000:]}")
        meta["paired"] = json.loads(r.stdout.strip().splitlines()[-1])
        saved.write_text(json.dumps(meta["paired"]))
        print(json.dumps(meta["paired"]), flush=True)
    for n in a.subjects:
        if a.before_src:
            rows.append(_run_case(a.before_src, n, a.flips, a.work, "before",
                                  "before" in a.reuse))
        rows.append(_run_case(after_src, n, a.flips, a.work, "slabs", "slabs" in a.reuse))
        write(rows, meta, final=False)
    write(rows, meta)


if __name__ == "__main__":
    main()
