"""Cohort scale: ``petbind run`` on human-size simulated studies (issue 18, item 4).

Run: ``.venv/bin/python benchmarks/bench_cohort.py [--sizes 8 32 128] [--workers 1 2]
[--cluster-size 32] [--stats-memory REV] [--work DIR]``; writes
``benchmarks/results/cohort.md`` from every record of ``DIR/bench_cohort.jsonl``
(a JSON-lines log the runs append to, so sizes can be run at different times:
``--report-only DIR/bench_cohort.jsonl`` rewrites the results from it; a later run
of the same size and scheduler replaces the earlier one).

Data (built here, independent of petbind's simulator, which makes macaque
brains): a 2 mm grid of 80 x 96 x 84 voxels holding an ellipsoidal brain of
about 250,000 voxels with a cerebellum (reference), striatum, thalamus,
midbrain, cortex and white matter; 29 frames over 90 min; every voxel the
exact frame means of a one-tissue curve (K1 = R1 K1', k2 = R1 k2' / (1 +
BP_ND)) under a sum-of-exponentials plasma input, plus counts-like Gaussian
noise (``bench_parametric.py``'s generator). Each subject has its own BP_ND
(CV 9 %); the "drug" session lowers BP_ND by 10 % outside the reference. A
study of N scans is N/2 subjects x {baseline, drug}, one tracer, written as
BIDS-PET (``.nii.gz`` + sidecar) with the atlas in ``derivatives/``; it is kept
in DIR and reused.

Runs: ``petbind run BIDS --config study.toml --out OUT --scheduler local:W``
for every size and W in ``--workers`` (a fresh output folder each time), and
once on a real multi-process cluster started here (``dask scheduler`` + two
``dask worker --nthreads 1`` processes on 127.0.0.1) for ``--cluster-size``.
Measured: wall, CPU (user + system of the run and all its processes, from
``getrusage`` of the waited children; for the external cluster, the workers'
CPU from ``psutil``), the workers' and the main process's CPU separately
(``psutil``, sampled every 0.2 s), peak RSS of the main process and of each
worker, the RSS of a ``dask worker`` before any task, seconds per stage (the
run's ``group/provenance.json``, and the main process's CPU per stage from its
``run_cpu_seconds``), output bytes per scan, the load average before and after;
before each repeat, the machine's own ceiling for 1 -> 2 workers
(:func:`two_process_speedup`: two single-CPU ``petbind parametric`` runs on the
study's scans at once against one alone; ``--ceiling-only`` measures it
alone), so that the study's speed-up can be read against what the hardware
gives.
Voxel statistics run with ``n_permutations = 1000`` (the default 5000 would
measure the permutation test, not the pipeline); their flips run on the
workers (issue 18), so the workers' CPU includes them. ``--stats-memory REV``
also measures the peak RSS of the voxel statistics with ``stats/voxel.py`` of
git revision REV and of this tree (issue 18's streamed sign flips).

Extrapolation: per-scan worker time ``s`` (stage ``scans`` x W / N) and the
study stage's cost per scan ``g`` (region + voxel statistics / N; the region
statistics run in the main process, the voxel test's flips on the workers)
give ``T(N, W) = f + N s / W + N g``; it is checked against the separate-process
cluster run before it is used for 1,000 scans. On a shared
machine the load-free version ``N s_cpu / W + N m_cpu`` (worker and main CPU
seconds per scan) is given beside it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
SRC = str(HERE.parent / "src")
RESULTS = HERE / "results" / "cohort.md"
SHAPE = (80, 96, 84)
VOXEL_MM = 2.0
#: region -> (label, baseline BP_ND, R1)
REGIONS = {"cerebellum": (1, 0.0, 1.0), "striatum": (2, 2.2, 1.1), "thalamus": (3, 1.8, 1.1),
           "midbrain": (4, 2.6, 1.0), "cortex": (5, 0.6, 1.0), "white_matter": (6, 0.2, 0.7)}
DRUG_EFFECT = -0.10
#: Heading of the hand-written notes at the end of the results file (kept on rewrite).
HAND_NOTES = "## Notes on this run (written by hand"
STUDY = """
[dataset]
atlas = "derivatives/cohort-atlas"
truth = "none"

[tracers.DASB]
reference_region = "cerebellum"
target_regions = ["striatum", "thalamus", "midbrain", "cortex"]
exclude_regions = ["white_matter"]
models = ["srtm", "mrtm2", "logan"]
primary_model = "srtm"
map_model = "mrtm2"
k2prime = "mrtm"
k2prime_region = "midbrain"

[[contrasts]]
expr = "drug - baseline"

[statistics]
baseline_condition = "baseline"

[statistics.voxel]
n_permutations = 1000
"""


def _generator():
    spec = importlib.util.spec_from_file_location("bench_parametric",
                                                  HERE / "bench_parametric.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def atlas() -> np.ndarray:
    """Label image of the human-size brain (0 = outside)."""
    idx = np.indices(SHAPE, dtype=np.float32)
    c = [(n - 1) / 2 for n in SHAPE]
    x, y, z = ((idx[i] - c[i]) for i in range(3))
    brain = (x / 36) ** 2 + (y / 44) ** 2 + (z / 38) ** 2 <= 1
    lab = np.where(brain, REGIONS["white_matter"][0], 0).astype(np.int16)
    inner = (x / 31) ** 2 + (y / 39) ** 2 + (z / 33) ** 2 <= 1
    lab[brain & ~inner] = REGIONS["cortex"][0]
    lab[brain & (y < -28) & (z < -8)] = REGIONS["cerebellum"][0]
    for sx in (-1, 1):
        lab[((x - 10 * sx) / 6) ** 2 + ((y - 8) / 10) ** 2 + (z / 7) ** 2 <= 1] = \
            REGIONS["striatum"][0]
    lab[(x / 8) ** 2 + ((y + 2) / 7) ** 2 + ((z - 2) / 6) ** 2 <= 1] = REGIONS["thalamus"][0]
    lab[(x / 5) ** 2 + ((y + 14) / 6) ** 2 + ((z + 10) / 6) ** 2 <= 1] = REGIONS["midbrain"][0]
    return lab


def _write_gz(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    from petbind.gz import open_write

    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    with open(path, "wb") as raw, open_write(raw) as gz:
        img.to_stream(gz)


def make_cohort(root: Path, n_scans: int, seed: int = 0) -> Path:
    """Write the BIDS study of ``n_scans`` scans (N/2 subjects x baseline, drug) once."""
    done = root / ".complete"
    if done.exists():
        return root
    gen = _generator()
    t = gen.TIMING
    lab = atlas()
    affine = np.diag([VOXEL_MM] * 3 + [1.0])
    affine[:3, 3] = [-(n - 1) / 2 * VOXEL_MM for n in SHAPE]
    brain = lab > 0
    flat = lab[brain]
    rng = np.random.default_rng(seed)
    side = {"Units": "kBq/mL", "TracerName": "DASB", "TracerRadionuclide": "C11",
            "FrameTimesStart": t.start_s.tolist(), "FrameDuration": t.duration_s.tolist(),
            "ImageDecayCorrected": True, "ImageDecayCorrectionTime": 0,
            "TimeZero": "10:00:00", "ScanStart": 0, "InjectionStart": 0,
            "InjectedRadioactivity": 370.0, "InjectedRadioactivityUnits": "MBq"}
    (root / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "petbind cohort benchmark", "BIDSVersion": "1.9.0"}))
    tsv = "index\tname\n" + "".join(f"{v[0]}\t{k}\n" for k, v in REGIONS.items())
    for s in range(n_scans // 2):
        subject = f"{s + 1:03d}"
        scale = 1 + 0.09 * rng.standard_normal()
        for cond in ("baseline", "drug"):
            bp = np.zeros(len(REGIONS) + 1)
            r1 = np.ones(len(REGIONS) + 1)
            for _name, (i, b, r) in REGIONS.items():
                bp[i] = b * scale * (1 + (DRUG_EFFECT if cond == "drug" else 0.0))
                r1[i] = r
            k1 = r1[flat] * gen.K1_REF
            k2 = r1[flat] * gen.K2_REF / (1 + bp[flat])
            curves = gen.one_tissue(k1, k2)
            sd = gen.NOISE * np.sqrt(np.maximum(curves, 0) * np.exp(gen.LAM * t.mid)
                                     / t.duration)
            curves = (curves + sd * rng.standard_normal(curves.shape)).astype(np.float32)
            vol = np.zeros(SHAPE + (t.n_frames,), dtype=np.float32)
            vol[brain] = curves
            stem = f"sub-{subject}_ses-{cond}_trc-DASB"
            rel = Path(f"sub-{subject}") / f"ses-{cond}" / "pet"
            _write_gz(root / rel / f"{stem}_pet.nii.gz", vol, affine)
            (root / rel / f"{stem}_pet.json").write_text(json.dumps(side))
            der = root / "derivatives" / "cohort-atlas" / rel
            _write_gz(der / f"{stem}_dseg.nii.gz", lab, affine)
            (der / f"{stem}_dseg.tsv").write_text(tsv)
    (root / "derivatives" / "cohort-atlas" / "dataset_description.json").write_text(
        json.dumps({"Name": "cohort atlas", "BIDSVersion": "1.9.0",
                    "DatasetType": "derivative"}))
    done.write_text("ok")
    return root


class Sampler(threading.Thread):
    """Peak RSS per process of a process tree (and of extra pids), every 0.2 s."""

    def __init__(self, root_pid: int, extra: list[int] = ()) -> None:
        super().__init__(daemon=True)
        self.root_pid = root_pid
        self.extra = list(extra)
        self.peak: dict[int, int] = {}
        self.kind: dict[int, str] = {}
        self.cpu: dict[int, float] = {}
        self.stop = threading.Event()

    def _procs(self) -> list[psutil.Process]:
        out = []
        try:
            root = psutil.Process(self.root_pid)
            out = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
        for pid in self.extra:
            try:
                out.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        return out

    def run(self) -> None:
        while not self.stop.is_set():
            for p in self._procs():
                try:
                    rss = p.memory_info().rss
                    if p.pid not in self.kind:
                        cmd = " ".join(p.cmdline())
                        self.kind[p.pid] = ("main" if p.pid == self.root_pid else
                                            "worker" if (p.pid in self.extra
                                                         or "spawn_main" in cmd
                                                         or "dask worker" in cmd
                                                         or "worker" in p.name()) else
                                            "other")
                    c = p.cpu_times()
                    self.cpu[p.pid] = c.user + c.system
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                self.peak[p.pid] = max(self.peak.get(p.pid, 0), rss)
            time.sleep(0.2)

    def peaks(self, kind: str) -> list[int]:
        return [v for k, v in self.peak.items() if self.kind.get(k) == kind]


def run_petbind(bids: Path, out: Path, scheduler: str, env: dict[str, str],
                extra_pids: list[int] = ()) -> dict:
    """One ``petbind run``: wall, CPU, memory, stage seconds, output size per scan."""
    cfg = bids / "study.toml"
    cfg.write_text(STUDY)
    cmd = [sys.executable, "-m", "petbind", "run", str(bids), "--config", str(cfg),
           "--out", str(out), "--no-progress", "--scheduler", scheduler]
    load = os.getloadavg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    sampler = Sampler(proc.pid, list(extra_pids))
    cpu0 = {}
    for pid in extra_pids:
        c = psutil.Process(pid).cpu_times()
        cpu0[pid] = c.user + c.system
    sampler.start()
    _stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t
    sampler.stop.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"petbind run failed ({scheduler}):\n{stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu += sum(sampler.cpu.get(p, cpu0[p]) - cpu0[p] for p in extra_pids)
    prov = json.loads((out / "group" / "provenance.json").read_text())
    scans = prov["scans"]
    size = sum(f.stat().st_size for s in scans
               for f in (out / Path(s["provenance"]).parent).glob(
                   Path(s["provenance"]).name.removesuffix("_provenance.json") + "*"))
    workers = sampler.peaks("worker")
    cpu_workers = sum(v - cpu0.get(k, 0.0) for k, v in sampler.cpu.items()
                      if sampler.kind.get(k) == "worker")
    cpu_main = sum(v for k, v in sampler.cpu.items() if sampler.kind.get(k) == "main")
    return {"scheduler": scheduler, "n": len(scans), "wall": wall, "cpu": cpu,
            "cpu_main": cpu_main, "cpu_workers": cpu_workers,
            "stages": prov["run_seconds"], "load": load, "load_after": os.getloadavg(),
            "stages_cpu_main": prov.get("run_cpu_seconds", {}),
            "started_utc": time.strftime("%H:%M", time.gmtime(time.time() - wall)),
            "main_mib": max(sampler.peaks("main") or [0]) / 2**20,
            "worker_mib": max(workers or [0]) / 2**20, "n_worker_procs": len(workers),
            "bytes_per_scan": size / len(scans)}


def start_cluster(folder: Path, n: int, env: dict[str, str]) -> tuple[str, list]:
    """``dask scheduler`` + ``n`` ``dask worker`` processes on 127.0.0.1."""
    from petbind.compute import WORKER_ENV, WORKER_MALLOC_ENV

    folder.mkdir(parents=True, exist_ok=True)
    # the environment docs/compute.md gives hand-started workers (what `local` sets)
    wenv = {**env, **WORKER_ENV, **WORKER_MALLOC_ENV,
            "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False"}
    sfile = folder / "scheduler.json"
    sfile.unlink(missing_ok=True)
    log = (folder / "dask.log").open("w")
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host",
                               "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(sfile)], env=wenv, stdout=log,
                              stderr=subprocess.STDOUT)]
    deadline = time.monotonic() + 120
    while not (sfile.exists() and sfile.stat().st_size):
        if time.monotonic() > deadline:
            raise SystemExit("the dask scheduler did not start")
        time.sleep(0.2)
    address = json.loads(sfile.read_text())["address"]
    for i in range(n):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", address, "--nthreads", "1",
             "--no-nanny", "--no-dashboard", "--host", "127.0.0.1", "--name", f"w{i}"],
            env=wenv, stdout=log, stderr=subprocess.STDOUT))
    from distributed import Client

    with Client(address, timeout="60s", set_as_default=False) as c:
        c.wait_for_workers(n, timeout=180)
    return address, procs


def stop_cluster(procs: list) -> None:
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in reversed(procs):
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def two_process_speedup(bids: Path, env: dict[str, str], tries: int = 2) -> dict:
    """The machine's own ceiling for 1 -> 2 workers on a scan's kind of work.

    The wall of two ``petbind parametric`` processes (MRTM2 map of one of the
    study's scans, ``--scheduler sync``: one CPU each; reading and inflating the
    scan, its brain mask, the fit, nine gzipped maps) started at the same time,
    against one alone: ``2 * one / two``; 2.0 on two idle, independent cores, less
    where the two CPUs share a core's units or the memory bandwidth, or other jobs
    run. Pure-Python probes (bench_parametric_cli.py's free cores) miss the memory
    traffic of inflating and fitting a scan.
    """
    scans = sorted(bids.glob("sub-*/ses-*/pet/*_pet.nii.gz"))[:2]
    atlases = [next((bids / "derivatives" / "cohort-atlas").rglob(
        s.name.replace("_pet.nii.gz", "_dseg.nii.gz"))) for s in scans]

    def spin(n: int) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            cmds = [[sys.executable, "-m", "petbind", "parametric", str(scans[i]),
                     "--ref-label", f"{atlases[i]}:cerebellum", "--scheduler", "sync",
                     "--out", str(Path(tmp) / f"p{i}")] for i in range(n)]
            t = time.perf_counter()
            procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE) for c in cmds]
            for q in procs:
                if q.wait() != 0:
                    raise SystemExit(f"petbind parametric failed: {q.stderr.read()[-2000:]}")
            return time.perf_counter() - t

    spin(1)  # page cache and imports warm
    one = min(spin(1) for _ in range(tries))
    two = min(spin(2) for _ in range(tries))
    return {"ceiling": 2 * one / two, "one_s": one, "two_s": two, "load": os.getloadavg(),
            "utc": time.strftime("%H:%M", time.gmtime())}


def fixed_overhead_mib(env: dict[str, str], report: bool = False) -> float:
    """RSS of a worker-like process with what the scan tasks import, before any scan;
    ``report``: with what the report's figure tasks import too (matplotlib, PIL)."""
    code = ("import distributed, petbind.study.pipeline, petbind.parametric, petbind.models, "
            "petbind.io.bids, petbind.io.tables, pandas, scipy.optimize, psutil"
            + (", petbind.report.figures.deferred, PIL.Image" if report else "")
            + "; print(psutil.Process().memory_info().rss)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    return int(out.stdout) / 2**20


_STATS_CODE = r"""
import importlib.util, json, resource, sys, time
import numpy as np
import psutil
spec = importlib.util.spec_from_file_location("voxel_under_test", sys.argv[1])
voxel = importlib.util.module_from_spec(spec)
sys.modules["voxel_under_test"] = voxel
spec.loader.exec_module(voxel)
n, n_perm, bench = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
spec = importlib.util.spec_from_file_location("bench_cohort", bench)
bc = importlib.util.module_from_spec(spec)
sys.modules["bench_cohort"] = bc
spec.loader.exec_module(bc)
lab = bc.atlas()
mask = lab > 0
rng = np.random.default_rng(0)
diffs = 0.1 * rng.standard_normal((n, *lab.shape))
diffs[:, lab == 2] -= 0.05
rss0 = psutil.Process().memory_info().rss
c0 = time.process_time()
res = voxel.sign_flip_test(diffs, mask, n_permutations=n_perm, seed=0)
cpu = time.process_time() - c0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
digest = float(np.sum(res.p_fwe)), float(np.sum(res.clusters.p_fwe_cluster))
print(json.dumps({"n": n, "flips": res.info["n_flips"], "voxels": int(mask.sum()),
                  "rss_before_mib": rss0 / 2**20, "peak_mib": peak / 2**20,
                  "cpu_s": cpu, "digest": digest}))
"""


def stats_memory(env: dict[str, str], before_rev: str, cases: list[tuple[int, int]],
                 work: Path, log: Path) -> list[dict]:
    """Peak RSS of ``sign_flip_test`` on the benchmark's brain (252 k voxels), with the
    ``stats/voxel.py`` of ``before_rev`` (all flips' t maps at once) and of this tree
    (flips streamed in blocks), each in a fresh process; same data, same seed."""
    work.mkdir(parents=True, exist_ok=True)
    old = work / "voxel_before.py"
    old.write_text(subprocess.run(["git", "show", f"{before_rev}:src/petbind/stats/voxel.py"],
                                  cwd=HERE.parent, capture_output=True, text=True,
                                  check=True).stdout)
    now = HERE.parent / "src" / "petbind" / "stats" / "voxel.py"
    out = []
    for n, n_perm in cases:
        row = {"n": n, "n_permutations": n_perm, "before_rev": before_rev}
        for tag, path in (("before", old), ("streamed", now)):
            r = subprocess.run([sys.executable, "-c", _STATS_CODE, str(path), str(n),
                                str(n_perm), str(Path(__file__).resolve())], env=env,
                               capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(f"stats memory ({tag}, n={n}) failed:\n{r.stderr[-2000:]}")
            row[tag] = json.loads(r.stdout.strip().splitlines()[-1])
            print(json.dumps({tag: row[tag]}), flush=True)
        row["identical"] = row["before"]["digest"] == row["streamed"]["digest"]
        out.append(row)
        _log(log, {"stats_memory": out})
    return out


def model(runs: list[dict]) -> dict[str, float]:
    """``T(N, W) = f + N s / W + N g`` from the runs of the largest study (medians; ``f``
    and ``g`` from its runs on more than one worker, where the report is drawn by the
    workers).

    The largest study amortises what a run pays once (starting the workers, which
    counts in the ``scans`` stage) best, so its ``s`` and ``g`` are the per-scan costs.
    The load-free version: workers' CPU seconds ``w0 W + N s_cpu`` fitted over every
    run (least squares; ``w0``: one worker's start and imports); main process
    ``m0 + N m_cpu`` (runs on more than one worker) with ``m0`` the smallest study's
    main CPU and ``m_cpu`` the
    largest study's increase over it per scan (the voxel statistics grow with the
    subjects once the number of flips is capped, so this holds from about 20 scans
    up, not below); a machine with W idle cores for the workers and one for the main
    process would take about ``m0 + w0 + N s_cpu / W + N m_cpu``.
    """
    sizes = sorted({r["n"] for r in runs})
    cpu = {"s_cpu": float("nan"), "m_cpu": float("nan"), "m0_cpu": float("nan"),
           "w0_cpu": float("nan")}
    if len(sizes) > 1:
        # least squares over every run: workers w0 W + s_cpu N, main m0 + m_cpu N
        n_arr = np.array([r["n"] for r in runs], float)
        w_arr = np.array([r["w"] for r in runs], float)
        (w0, s_cpu), *_ = np.linalg.lstsq(np.column_stack([w_arr, n_arr]),
                                          [r["cpu_workers"] for r in runs], rcond=None)
        # main process: the smallest study's CPU is its fixed part (its voxel statistics
        # are negligible: 2^(N/2) flips, 16 at 8 scans); above that the sign-flip work
        # grows with the subjects at a fixed number of flips, i.e. linearly in N
        # (from the runs on more than one worker where both sizes have some: on one
        # worker the main process also draws the report's figures)
        main_runs = [r for r in runs if r["w"] > 1]
        if not {sizes[0], sizes[-1]} <= {r["n"] for r in main_runs}:
            main_runs = runs
        m0 = float(np.median([r["cpu_main"] for r in main_runs if r["n"] == sizes[0]]))
        m_cpu = (float(np.median([r["cpu_main"] for r in main_runs if r["n"] == sizes[-1]]))
                 - m0) / sizes[-1]
        cpu = {"s_cpu": float(s_cpu), "m_cpu": float(m_cpu), "m0_cpu": float(m0),
               "w0_cpu": float(w0)}
    top = sizes[-1]
    runs = [r for r in runs if r["n"] == top]
    s_vals = [r["stages"]["scans"] * r["w"] / r["n"] for r in runs]
    # the fixed and study parts from the runs on more than one worker where there are
    # some: on one worker the report's figures are drawn in the main process, on more
    # they are tasks on the workers, as on any cluster
    multi = [r for r in runs if r["w"] > 1] or runs
    g_vals = [(r["stages"].get("region_statistics", 0) + r["stages"].get("voxel_statistics", 0))
              / r["n"] for r in multi]
    f_vals = [r["wall"] - r["stages"]["scans"] - r["stages"].get("region_statistics", 0)
              - r["stages"].get("voxel_statistics", 0) for r in multi]
    return {"s": float(np.median(s_vals)), "g": float(np.median(g_vals)),
            "f": float(np.median(f_vals)), "n": top, **cpu}


def predict(m: dict[str, float], n: int, w: int) -> float:
    return m["f"] + n * m["s"] / w + n * m["g"]


def predict_cpu(m: dict[str, float], n: int, w: int) -> float:
    return m["m0_cpu"] + m["w0_cpu"] + n * m["s_cpu"] / w + n * m["m_cpu"]


def _log(path: Path, record: dict) -> None:
    print(json.dumps(record), flush=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _read_logs(paths: list[Path]) -> dict:
    """Every record of the logs; a later invocation's runs of the same (scans, scheduler)
    replace an earlier one's (all its repeats)."""
    state: dict = {"meta": None, "runs": {}, "cluster": None, "idle": None, "stats": None,
                   "gen_s": {}, "ceilings": {}}
    invocation = 0
    for path in paths:
        for line in path.read_text().splitlines():
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if "meta" in r:
                invocation += 1
                # the latest invocation's measurements (overheads), every command
                commands = [] if state["meta"] is None else state["meta"]["commands"]
                state["meta"] = {**(state["meta"] or {}), **r["meta"], "commands": commands}
                state["meta"]["commands"].append((r["meta"]["utc"], r["meta"]["command"]))
            elif "ceiling_of" in r:  # the latest invocation's, as for the runs
                inv, kept = state["ceilings"].get(r["ceiling_of"], (invocation, []))
                state["ceilings"][r["ceiling_of"]] = (
                    invocation, (kept if inv == invocation else []) + [r])
            elif "generated" in r:
                state["gen_s"][r["generated"]] = r["seconds"]
            elif "idle_worker_mib" in r:
                state["idle"] = r
            elif "stats_memory" in r:
                state["stats"] = {**(state["stats"] or {}),
                                  **{(x["n"], x["n_permutations"]): x
                                     for x in r["stats_memory"]}}
            elif "scheduler" in r:
                if r["scheduler"].startswith("local:"):
                    # the runs of one (scans, scheduler) from the latest invocation that
                    # ran it (its --repeats); an earlier invocation's are replaced
                    key = (r["n"], r["scheduler"])
                    inv, kept = state["runs"].get(key, (invocation, []))
                    state["runs"][key] = (invocation, (kept if inv == invocation else [])
                                          + [r])
                else:
                    state["cluster"] = r
    state["runs"] = {k: v for k, (_inv, v) in state["runs"].items()}
    state["ceilings"] = {k: v for k, (_inv, v) in state["ceilings"].items()}
    return state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[8, 32, 128])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cluster-size", type=int, default=32,
                    help="scans of the run on a dask scheduler + 2 dask worker processes "
                         "(0: none)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/petbind-bench-cohort"))
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs of each (scans, workers), the worker counts alternating "
                         "within each repeat so that both meet the same load")
    ap.add_argument("--stats-memory", metavar="REV",
                    help="also measure the voxel statistics' peak memory with the "
                         "stats/voxel.py of git revision REV (before streaming) and of "
                         "this tree")
    ap.add_argument("--stats-cases", nargs="+", default=["8:5000", "14:500"],
                    metavar="SUBJECTS:FLIPS",
                    help="cases of --stats-memory (n_permutations = FLIPS; all 2^n flips "
                         "when fewer)")
    ap.add_argument("--report-only", type=Path, nargs="+", metavar="LOG",
                    help="only write the results file from the JSON-lines logs "
                         "(WORK/bench_cohort.jsonl) of earlier runs")
    ap.add_argument("--ceiling-only", action="store_true",
                    help="only measure the machine's 1 -> 2 process ceiling (--repeats "
                         "times per size) and rewrite the results")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    sys.path.insert(0, SRC)
    if args.report_only:
        _write(_read_logs(args.report_only))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "bench_cohort.jsonl"
    lab = atlas()
    n_brain = int((lab > 0).sum())
    scan_mib = float(np.prod(SHAPE) * 29 * 4 / 2**20)
    _log(log, {"meta": {"n_brain": n_brain, "scan_mib": scan_mib,
                        "overhead_mib": fixed_overhead_mib(env),
                        "overhead_report_mib": fixed_overhead_mib(env, report=True),
                        "cpus": os.cpu_count(), "host": platform.node(),
                        "command": " ".join(["python", "benchmarks/bench_cohort.py",
                                             *sys.argv[1:]]),
                        "utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}})
    if args.stats_memory:
        cases = [tuple(int(x) for x in c.split(":")) for c in args.stats_cases]
        stats_memory(env, args.stats_memory, cases, args.work / "stats", log)
        _write(_read_logs([log]))
    for n in args.sizes:
        t = time.perf_counter()
        bids = make_cohort(args.work / f"bids{n}", n)
        _log(log, {"generated": n, "seconds": time.perf_counter() - t})
        for k in range(args.repeats):
            _log(log, {"ceiling_of": n, "repeat": k, **two_process_speedup(bids, env)})
            if args.ceiling_only:
                continue
            for w in args.workers:
                out = args.work / f"out{n}_w{w}"
                subprocess.run(["rm", "-rf", str(out)], check=True)
                r = run_petbind(bids, out, f"local:{w}", env)
                r["w"] = w
                r["repeat"] = k
                _log(log, r)
                _write(_read_logs([log]))
    if args.cluster_size and not args.ceiling_only:
        n = args.cluster_size
        bids = make_cohort(args.work / f"bids{n}", n)
        address, procs = start_cluster(args.work / "cluster", 2, env)
        try:
            # a worker's RSS once it has registered, before any task reached it
            _log(log, {"idle_worker_mib": [psutil.Process(p.pid).memory_info().rss / 2**20
                                           for p in procs[1:]]})
            out = args.work / f"out{n}_cluster"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            cluster = run_petbind(bids, out, address, env, [p.pid for p in procs[1:]])
            cluster["w"] = 2
            _log(log, cluster)
        finally:
            stop_cluster(procs)
    _write(_read_logs([log]))


def _row(r: dict, where: str) -> str:
    st = r["stages"]
    study = st.get("region_statistics", 0) + st.get("voxel_statistics", 0)
    load = (" / ".join(f"{x:.1f}" for x in r["load"][:1])
            + (f" -> {r['load_after'][0]:.1f}" if "load_after" in r else ""))
    return (f"| {r['n']} | {where} | {r.get('started_utc', '')} | {r['wall']:.1f} | "
            f"{r['cpu']:.1f} | {r.get('cpu_workers', float('nan')) / r['n']:.2f} | "
            f"{r.get('cpu_main', float('nan')):.1f} | {st['scans']:.1f} | {study:.1f} | "
            f"{r['main_mib']:.0f} | {r['worker_mib']:.0f} | "
            f"{r['bytes_per_scan'] / 1e6:.1f} | {load} |")


def _ceiling_cells(ceilings: list[dict], pairs: list[float]) -> str:
    """``median (min-max) | pairs' median / ceilings' median |`` (blank without ceilings)."""
    if not ceilings:
        return " | |"
    c = [x["ceiling"] for x in ceilings]
    share = (f"{np.median(pairs) / np.median(c):.0%}" if pairs else "")
    return f"{np.median(c):.2f} ({min(c):.2f}-{max(c):.2f}) | {share} |"


def _write(state: dict) -> None:
    meta = state["meta"]
    runs = sorted((r for rs in state["runs"].values() for r in rs),
                  key=lambda r: (r["n"], r["w"], r.get("repeat", 0)))
    cluster = state["cluster"]
    scan_mib, overhead = meta["scan_mib"], meta["overhead_mib"]
    lines = [
        "# Cohort scale: `petbind run` on human-size simulated studies (issue 18, item 4)",
        "",
        "; ".join(f"`{c}` ({t})" for t, c in meta.get("commands", [(meta["utc"],
                                                                  meta["command"])]))
        + f" on {meta['host']} ({meta['cpus']} CPUs, shared with other jobs).",
        "",
        f"Scans: 2 mm grid {SHAPE[0]} x {SHAPE[1]} x {SHAPE[2]}, {meta['n_brain']:,} brain "
        f"voxels, 29 frames; one scan in float32 = {scan_mib:.0f} MiB (whole grid). Study: "
        "N/2 subjects x {baseline, drug}; models srtm, mrtm2, logan on 4 regions; MRTM2 map "
        "of every brain voxel; voxel statistics with 1000 sign flips (exact enumeration "
        "below 10 subjects).",
        "",
        "Columns: *CPU* is user + system of the whole run (main process and every worker); "
        "*worker CPU-s / scan* the workers' CPU divided by the scans (does not depend on "
        "the machine's load: the scaling measure on a shared machine); *main CPU* the "
        "`petbind run` process's own CPU (discovery, the study stage's region and voxel "
        "statistics, writing); *load* the 1-minute load average before -> after the run.",
        "",
        "| scans | scheduler | start (UTC) | wall (s) | CPU (s) | worker CPU-s / scan | "
        "main CPU (s) | scans stage (s) | study stage (s) | peak RSS main (MiB) | "
        "peak RSS per worker (MiB) | output / scan (MB) | load |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| --- |",
    ]
    for r in runs:
        lines.append(_row(r, r["scheduler"] + (f" (repeat {r['repeat'] + 1})"
                                               if "repeat" in r else "")))
    if cluster:
        lines.append(_row(cluster, "`dask scheduler` + 2 `dask worker` processes"))
    if state["gen_s"]:
        lines += ["", "Simulating the studies took "
                  + ", ".join(f"{v:.0f} s ({k} scans)" for k, v in state["gen_s"].items())
                  + " (not timed above; 0 s: already on disk)."]
    lines += [""]
    if runs:
        all_runs = runs + ([cluster] if cluster else [])
        worst = max(r["worker_mib"] for r in all_runs)
        # the workers draw the report's figures too: its imports are part of the overhead
        scan_overhead, overhead = overhead, meta.get("overhead_report_mib", overhead)
        limit = 2 * scan_mib + overhead
        idle = state["idle"]
        lines += [
            "## Memory per worker",
            "",
            f"Fixed overhead: {overhead:.0f} MiB, the RSS of a Python process that has "
            "imported what a scan task imports (distributed, petbind's pipeline, maps, "
            "models, io, pandas, scipy.optimize)"
            + (" and what a task of the report's figures imports (matplotlib, PIL: "
               "`petbind.report.figures`; the workers draw the report), before touching a "
               f"scan; the scan tasks' imports alone: {scan_overhead:.0f} MiB."
               if "overhead_report_mib" in meta else " before touching a scan.")
            + (" A `dask worker` process registered with the scheduler and before any "
               "task measured " + " and ".join(f"{x:.0f}" for x in idle["idle_worker_mib"])
               + " MiB (it imports petbind's modules with its first task)." if idle else "")
            + f" Budget: 2 x one scan's float32 size + overhead = 2 x {scan_mib:.0f} + "
            f"{overhead:.0f} = {limit:.0f} MiB. Largest worker peak measured: {worst:.0f} "
            "MiB: " + ("**within** the budget." if worst <= limit else "**over** the budget."),
            "",
        ]
        by: dict = {}
        for r in runs:
            by.setdefault(r["n"], {}).setdefault(r["w"], []).append(r)
        lines += ["## Scaling from 1 to 2 workers", "",
                  "Medians over the repeats; *pairs* are each repeat's 1-worker wall over "
                  "its 2-worker wall (run one after the other, so both met the same load).",
                  "",
                  "*Machine ceiling*: this machine's own speed-up from one to two "
                  "processes on a scan's kind of work (two `petbind parametric --scheduler "
                  "sync` of the study's scans at the same time against one alone: 2.00 on "
                  "two idle, independent cores; `two_process_speedup`), and the pairs' "
                  "median as a share of the ceilings' median: how much of what the "
                  "hardware gives the whole study gets.",
                  "",
                  "| scans | repeats | wall 1 worker (s) | wall 2 workers (s) | speed-up "
                  "(wall, medians) | speed-up of the pairs: median (min-max) | scans "
                  "stage speed-up | worker CPU-s / scan, 1 -> 2 workers | machine ceiling: "
                  "median (min-max) | pairs / ceiling |",
                  "| ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | --- | ---: |"]

        def med(rs: list[dict], f: Callable[[dict], float]) -> float:
            return float(np.median([f(r) for r in rs]))

        for n, d in sorted(by.items()):
            if 1 in d and 2 in d:
                one, two = d[1], d[2]
                pairs = [a["wall"] / b["wall"] for a in one for b in two
                         if a.get("repeat", 0) == b.get("repeat", 0)]
                w1, w2 = med(one, lambda r: r["wall"]), med(two, lambda r: r["wall"])
                s1 = med(one, lambda r: r["stages"]["scans"])
                s2 = med(two, lambda r: r["stages"]["scans"])
                lines.append(
                    f"| {n} | {min(len(one), len(two))} | {w1:.1f} | {w2:.1f} | "
                    f"{w1 / w2:.2f} | "
                    + (f"{np.median(pairs):.2f} ({min(pairs):.2f}-{max(pairs):.2f})"
                       if pairs else "") + " | "
                    f"{s1 / s2:.2f} | "
                    f"{med(one, lambda r: r.get('cpu_workers', np.nan)) / n:.2f} -> "
                    f"{med(two, lambda r: r.get('cpu_workers', np.nan)) / n:.2f} | "
                    + _ceiling_cells(state["ceilings"].get(n, []), pairs))
        m = model(runs)
        lines += ["", "## Extrapolation", "",
                  f"Measured (wall, under the load above): T(N, W) = f + N s / W + N g with "
                  f"f = {m['f']:.1f} s (start, discovery, outputs of the study), s = "
                  f"{m['s']:.2f} worker-seconds per scan (scans stage x W / N), g = "
                  f"{m['g']:.3f} s per scan of study-level statistics (wall; the voxel "
                  "flips on the workers) "
                  f"(medians over the runs of the largest study, {m['n']} scans).",
                  "",
                  f"Load-free (CPU seconds): workers {m['w0_cpu']:.1f} W + "
                  f"{m['s_cpu']:.2f} N CPU-s (least squares over all runs), main process "
                  f"{m['m0_cpu']:.1f} + {m['m_cpu']:.3f} N CPU-s, so T(N, W) = "
                  f"{m['m0_cpu'] + m['w0_cpu']:.1f} + {m['s_cpu']:.2f} N / W + "
                  f"{m['m_cpu']:.3f} N: the wall on a machine with W idle cores for the "
                  "workers and one for the main process (the main process's work is "
                  "counted as serial, which it mostly is: the study stage waits for the "
                  "scans). The main process's fixed part is the smallest study's main "
                  "CPU; its per-scan part the largest study's increase over that per "
                  "scan (mostly the voxel sign-flip test, which at a capped number of "
                  "flips grows with the subjects).", ""]
        if cluster:
            p = predict(m, cluster["n"], 2)
            pc = predict_cpu(m, cluster["n"], 2)
            lines += [f"Check against the separate-process cluster (`dask scheduler` + 2 "
                      f"`dask worker`, {cluster['n']} scans): wall {cluster['wall']:.1f} s "
                      f"against {p:.1f} s predicted from the local runs "
                      f"({(cluster['wall'] - p) / p * 100:+.0f} %); worker CPU-s per scan "
                      f"{cluster.get('cpu_workers', np.nan) / cluster['n']:.2f} against "
                      f"{m['s_cpu']:.2f} fitted on the local clusters; main-process CPU "
                      f"{cluster.get('cpu_main', np.nan):.1f} s against "
                      f"{m['m0_cpu'] + m['m_cpu'] * cluster['n']:.1f} s; load-free "
                      f"prediction {pc:.1f} s.", ""]
        lines += ["| 1,000 scans on N workers | predicted wall (measured model) | "
                  "predicted wall (load-free) |", "| ---: | ---: | ---: |"]
        for w in (2, 8, 32, 128):
            lines.append(f"| {w} | {predict(m, 1000, w) / 60:.1f} min | "
                         f"{predict_cpu(m, 1000, w) / 60:.1f} min |")
        lines += ["", "The study stage (N g: region statistics in the main process, the "
                  "voxel sign-flip test's flips on the workers since issue 18's voxstat "
                  "change, so g is measured at the workers of each run) is "
                  f"{1000 * m['g'] / 60:.1f} min of the measured total at 1,000 scans.", ""]
        main_voxel = [r["stages_cpu_main"].get("voxel_statistics") for r in runs
                      if r.get("stages_cpu_main")]
        if main_voxel:
            lines += ["Main-process CPU of the voxel statistics stage (preparing the "
                      "contrasts, merging the flips, p-values, clusters, writing): "
                      + ", ".join(f"{r['n']} scans {r['scheduler']}: "
                                  f"{r['stages_cpu_main']['voxel_statistics']:.1f} s"
                                  for r in runs if r.get("stages_cpu_main")) + ".", ""]
    if state["stats"]:
        state["stats"] = [state["stats"][k] for k in sorted(state["stats"])]
        lines += ["## Voxel statistics: memory of the sign-flip test", "",
                  "`sign_flip_test` on the benchmark's brain mask with random contrast "
                  "maps, each case in a fresh process; *before* is `stats/voxel.py` of "
                  f"{state['stats'][0]['before_rev'][:9]} (every flip's t map held at once, "
                  "F x V float64, plus two same-size copies), *streamed* this tree's (flips "
                  "in blocks of 64 MiB of flipped data). RSS before the call holds the "
                  "data (n x 645,120 float64).", "",
                  "| subjects | flips | voxels | F x V float64 (MiB) | peak RSS before "
                  "(MiB) | peak RSS streamed (MiB) | RSS before the call (MiB) | CPU before / "
                  "streamed (s) | same FWE p (sums of voxel and cluster p) |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
        for row in state["stats"]:
            b, s_ = row["before"], row["streamed"]
            lines.append(
                f"| {b['n']} | {b['flips']} | {b['voxels']:,} | "
                f"{b['flips'] * b['voxels'] * 8 / 2**20:.0f} | {b['peak_mib']:.0f} | "
                f"{s_['peak_mib']:.0f} | {s_['rss_before_mib']:.0f} | "
                f"{b['cpu_s']:.0f} / {s_['cpu_s']:.0f} | "
                + ("yes" if row["identical"] else "**no**") + " |")
        v = state["stats"][0]["before"]["voxels"]
        lines += ["", f"At the default 5000 flips (n >= 13 subjects) the array alone would "
                  f"be 5000 x {v:,} x 8 B = {5000 * v * 8 / 2**30:.1f} GiB before and stays "
                  "at the streamed row's peak now (memory does not depend on the number "
                  "of flips: `tests/stats/test_voxel.py`).", ""]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    notes = ""
    if RESULTS.exists():    # keep the notes written by hand under the generated part
        old = RESULTS.read_text()
        if HAND_NOTES in old:
            notes = old[old.index(HAND_NOTES):]
    RESULTS.write_text("\n".join(lines) + ("\n" + notes if notes else ""))


if __name__ == "__main__":
    main()
