"""Whole-process ``petbind parametric`` speed (issue 18, item 3) and ``petbind --help``.

Run: ``.venv/bin/python benchmarks/bench_parametric_cli.py [--voxels N] [--repeats R]
[--baseline SRC] [--no-mask] [--input gz|petbind|nii|both|all]``; writes
``benchmarks/results/parametric_cli.md`` (``--no-mask``: ``parametric_cli_no_mask.md``),
keeping the hand-written part of the file below the line :data:`KEEP`. With
``--baseline`` (another checkout's ``src``, e.g. ``/work/main/src``) every repeat also runs
the same command on that code, alternating, so that before and after meet the same load.
``--no-mask`` runs the command without ``--mask`` (the brain mask derived from the scan).
``--input`` (default ``all``): the scan as ``.nii.gz`` written by nibabel (101 MB, one
gzip stream, as a scanner or another tool writes it), as ``.nii.gz`` written by petbind
(99 MB, one gzip member per frame: how petbind writes its own images, e.g. a motion-
corrected scan; :mod:`petbind.gz`), as ``.nii`` (117 MB, the same image uncompressed);
``both`` is the first and the last; each its own table.

Data: the independent generator of ``bench_parametric.py`` (analytic one-tissue
curves with a known BP_ND per voxel, counts-like noise, 29 frames over 90 min),
written as a BIDS-PET ``.nii.gz`` (float32, 1 M brain voxels on a 100 x 100 x
101 grid with one slab of reference voxels) with its JSON sidecar, a brain mask
and a reference mask, and the same image as ``.nii``. The command is the user's:
``petbind parametric PET --model mrtm2 --ref-mask REF --mask BRAIN --out DIR`` (k2'
``auto``, the default scheduler), timed from process start to exit, ``--repeats``
times after one untimed start of each tree (page cache and bytecode warm).

The children run with ``PYTHONPYCACHEPREFIX`` in the work folder (and without
``PYTHONDONTWRITEBYTECODE``), so both trees start from compiled bytecode as an
installed package does; with ``PYTHONDONTWRITEBYTECODE=1`` and no cache every start
compiled petbind's modules again (about 0.1 CPU-s).

Also measured: how many cores are free (the speedup of two CPU-bound processes run
together over one alone: 2.0 on two idle cores, 1.0 when another job holds one),
before and after the repeats; ``petbind --help`` (median of 7 starts); whether
``import petbind.cli`` imports dask / distributed / SimpleITK / dipy / matplotlib; a
timeline of one command (wall clock and the main thread's CPU at each step, and
the CPU of the thread that reads the scan ahead); and compressing one float32 map
with zlib and with ISA-L at level 1. The machine is shared: the load average is
recorded before every repeat, and the CPU seconds (user + system of the child) are
the load-independent measure.

Outputs are compared with the baseline's: the nine maps' NIfTI bytes (inflated: the gzip
members of a baseline from before petbind wrote one member per frame differ); the
sidecars after setting ``Settings.scheduler`` aside (``dask threads (N workers)``
before the in-process thread pool, ``threads (N workers)`` after: a deliberate change,
docs/compute.md), whose texts are listed.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "parametric_cli.md"
#: The results file's hand-written part starts at this line and is kept when regenerating.
KEEP = "<!-- hand-written below this line; bench_parametric_cli.py keeps it -->"
FORBIDDEN = ("dask", "distributed", "SimpleITK", "dipy", "matplotlib")
#: Who wrote each ``--input`` kind of scan (the section titles).
WRITTEN = {"gz": ", written by nibabel: one gzip stream",
           "petbind": ", written by petbind: a gzip member per frame"}


def _bench_parametric():
    spec = importlib.util.spec_from_file_location("bench_parametric",
                                                  HERE / "bench_parametric.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_scan(folder: Path, n_vox: int) -> dict[str, Path]:
    """The BIDS-PET scan, its sidecar, brain and reference masks (built once per size)."""
    bp = _bench_parametric()
    pet = folder / "sub-01" / "pet" / "sub-01_trc-DASB_pet.nii.gz"
    files = {"pet": pet, "brain": folder / "brain_mask.nii.gz",
             "ref": folder / "ref_mask.nii.gz"}
    if all(p.exists() for p in files.values()):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    curves, _bp, _r1, ref = bp.synthetic(n_vox)
    plain, masks = bp.write_image(curves, ref, folder)
    img = nib.load(plain)
    pet.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine), pet)
    m = np.load(masks)
    nib.save(nib.Nifti1Image(m["brain"].astype(np.uint8), img.affine), files["brain"])
    nib.save(nib.Nifti1Image(m["ref"].astype(np.uint8), img.affine), files["ref"])
    t = bp.TIMING
    side = {"Units": "kBq/mL", "TracerName": "DASB", "TracerRadionuclide": "C11",
            "FrameTimesStart": t.start_s.tolist(), "FrameDuration": t.duration_s.tolist(),
            "ImageDecayCorrected": True, "ImageDecayCorrectionTime": 0,
            "TimeZero": "10:00:00", "ScanStart": 0, "InjectionStart": 0}
    pet.with_name("sub-01_trc-DASB_pet.json").write_text(json.dumps(side))
    plain.unlink()
    return files


def plain_scan(files: dict[str, Path], folder: Path) -> dict[str, Path]:
    """The same scan uncompressed (``.nii``) with its sidecar, in its own folder."""
    pet = folder / "sub-01" / "pet" / "sub-01_trc-DASB_pet.nii"
    out = {"pet": pet, "brain": files["brain"], "ref": files["ref"]}
    if not pet.exists():
        pet.parent.mkdir(parents=True, exist_ok=True)
        tmp = pet.with_suffix(".part")
        with gzip.open(files["pet"], "rb") as src, open(tmp, "wb") as dst:
            while b := src.read(1 << 22):
                dst.write(b)
        tmp.rename(pet)
        side = files["pet"].with_name("sub-01_trc-DASB_pet.json")
        pet.with_name(side.name).write_bytes(side.read_bytes())
    return out


def petbind_scan(files: dict[str, Path], folder: Path) -> dict[str, Path]:
    """The same scan written by petbind (:func:`petbind.io.bids.save_image`: one gzip
    member per frame), with its sidecar, in its own folder (rewritten when its members
    are not petbind's, e.g. by an older petbind)."""
    from petbind.gz import member_index
    from petbind.io.bids import save_image

    pet = folder / "sub-01" / "pet" / "sub-01_trc-DASB_pet.nii.gz"
    out = {"pet": pet, "brain": files["brain"], "ref": files["ref"]}
    if not pet.exists() or member_index(pet) is None:
        pet.parent.mkdir(parents=True, exist_ok=True)
        img = nib.load(files["pet"])
        save_image(pet, np.asarray(img.dataobj), img.affine)
        side = files["pet"].with_name("sub-01_trc-DASB_pet.json")
        pet.with_name(side.name).write_bytes(side.read_bytes())
    return out


def loadavg() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def timed(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MiB) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return {"wall": wall, "cpu": (after.ru_utime - before.ru_utime)
            + (after.ru_stime - before.ru_stime), "rss_mib": after.ru_maxrss / 1024}


TIMELINE = r"""
import sys, threading, time, importlib.abc, importlib.util, json
T0 = time.perf_counter()
EV = []
def ev(name):
    EV.append([name, time.perf_counter() - T0, time.thread_time(),
               threading.current_thread().name, time.process_time()])
def wrap(obj, attr, label):
    f = getattr(obj, attr)
    def w(*a, **k):
        try:
            return f(*a, **k)
        finally:
            ev(label)
    setattr(obj, attr, w)
PATCH = {
    "petbind.parametric": lambda m: (wrap(m, "parametric_maps", "assemble maps"),
                                     wrap(m, "write_maps", "write 9 maps (threads)")),
    "petbind.parametric.core": lambda m: (
        wrap(m, "_as_image", "import numpy, nibabel; open the scan's header"),
        wrap(m, "_gather", "gather the curves (waits for the read-ahead)"),
        wrap(m, "_usable_voxels", "usable-voxel checks") if hasattr(m, "_usable_voxels")
        else None,
        wrap(m, "estimate_k2prime", "k2' auto"),
        wrap(m, "_run_chunks", "MRTM2 fit (threads)")),
}
class Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in PATCH:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            PATCH[name](module)
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, Finder())
import petbind.cli
ev("import petbind.cli (typer, rich)")
ahead = {}
try:
    import petbind.io.prefetch as pf
    fill = pf._Prefetch._fill
    def timed_fill(self):
        c = time.thread_time()
        try:
            fill(self)
        finally:
            ahead["cpu"] = time.thread_time() - c
            ahead["end"] = time.perf_counter() - T0
    pf._Prefetch._fill = timed_fill
except ImportError:
    pass
import petbind.commands.parametric as pc
if hasattr(pc, "early"):
    wrap(pc, "early", "start reading the scan ahead")
try:
    petbind.cli.main(sys.argv[1:])
except SystemExit:
    pass
ev("exit")
print(json.dumps({"events": [e for e in EV if e[3] == "MainThread"], "ahead": ahead}))
"""


def gzip_compare(n: int) -> list[tuple[str, float, float]]:
    """Seconds and MB to compress one float32 map of ``n`` voxels at level 1."""
    rng = np.random.default_rng(0)
    data = (1.0 + 0.3 * rng.standard_normal(n)).astype(np.float32)
    data[rng.random(n) < 0.05] = np.nan
    raw = data.tobytes()
    rows = []
    t = time.process_time()
    z = gzip.compress(raw, 1, mtime=0)
    rows.append(("zlib (gzip module)", time.process_time() - t, len(z) / 1e6))
    try:
        from isal import igzip
    except ImportError:  # pragma: no cover
        return rows
    t = time.process_time()
    z = igzip.compress(raw, 1, mtime=0)
    rows.append(("ISA-L (isal.igzip)", time.process_time() - t, len(z) / 1e6))
    return rows


def free_cores() -> float:
    """Speedup of two CPU-bound processes run together over one alone (2.0: two idle cores)."""
    code = "import time\nt=time.perf_counter()\nfor i in range(3_000_000): pass\n" \
           "print(time.perf_counter()-t)"

    def spin(n: int) -> float:
        t = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL)
                 for _ in range(n)]
        for q in procs:
            q.wait()
        return time.perf_counter() - t

    one = min(spin(1) for _ in range(2))
    two = min(spin(2) for _ in range(2))
    return 2 * one / two


def sidecar_text(path: Path) -> tuple[str, str]:
    """A sidecar without ``Settings.scheduler``, and that scheduler text."""
    d = json.loads(path.read_text())
    sched = d.get("Settings", {}).pop("scheduler", "")
    return json.dumps(d, sort_keys=True), sched


def compare(mine: Path, base: Path) -> dict[str, object]:
    """Maps' NIfTI bytes (inflated); sidecars byte for byte apart from ``Settings.scheduler``."""
    a = sorted(f.name for f in mine.iterdir())
    b = sorted(f.name for f in base.iterdir())
    maps = a == b and all(gzip.decompress((mine / n).read_bytes())
                          == gzip.decompress((base / n).read_bytes())
                          for n in a if n.endswith(".nii.gz"))
    sides, scheds = a == b, set()
    for n in (n for n in a if n.endswith(".json")):
        x, sx = sidecar_text(mine / n)
        y, sy = sidecar_text(base / n)
        sides &= x == y
        scheds.add((sx, sy))
    return {"maps": maps, "sidecars": sides, "schedulers": sorted(scheds)}


def run_input(args: argparse.Namespace, label: str, files: dict[str, Path],
              env: dict[str, str], base_env: dict[str, str] | None) -> list[str]:
    """Warm-up, the alternating repeats and the timeline of one input; its markdown."""
    petbind = [sys.executable, "-m", "petbind"]
    work = args.work / label

    def command(dest: Path) -> list[str]:
        return [*petbind, "parametric", str(files["pet"]), "--model", "mrtm2",
                "--ref-mask", str(files["ref"]),
                *([] if args.no_mask else ["--mask", str(files["brain"])]),
                "--out", str(dest)]

    timed(command(work / "warm"), env)
    if base_env is not None:
        timed(command(work / "warm-base"), base_env)
    runs, base_runs = [], []
    for i in range(args.repeats):
        load = loadavg()
        r = timed(command(work / f"out{i}"), env)
        r["load"] = load
        runs.append(r)
        print(f"{label} run {i + 1}: {r['wall']:.2f} s wall, {r['cpu']:.2f} s CPU, "
              f"load {load}", flush=True)
        if base_env is not None:
            b = timed(command(work / f"base{i}"), base_env)
            b.update(compare(work / f"out{i}", work / f"base{i}"))
            base_runs.append(b)
            print(f"  baseline: {b['wall']:.2f} s wall, {b['cpu']:.2f} s CPU; maps "
                  f"identical {b['maps']}, sidecars {b['sidecars']}", flush=True)
    tl = json.loads(subprocess.run(
        [sys.executable, "-c", TIMELINE, *command(work / "timeline")[3:]],
        capture_output=True, text=True, env=env, check=True).stdout.splitlines()[-1])

    walls = [r["wall"] for r in runs]
    cpus = [r["cpu"] for r in runs]
    med = statistics.median(walls)
    size = files["pet"].stat().st_size / 1e6
    lines = [
        f"## `{files['pet'].name}` ({size:.0f} MB{WRITTEN.get(label, '')})",
        "",
        "| repeat | wall (s) | voxels/s (wall) | CPU user+sys (s) | voxels per CPU-s | "
        "peak RSS (MiB) | load average (1/5/15 min) before |"
        + (" baseline wall / CPU (s) |" if base_runs else ""),
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- |" + (" ---: |" if base_runs else ""),
    ]
    for i, r in enumerate(runs, 1):
        lines.append(f"| {i} | {r['wall']:.2f} | {args.voxels / r['wall']:,.0f} | "
                     f"{r['cpu']:.2f} | {args.voxels / r['cpu']:,.0f} | "
                     f"{r['rss_mib']:.0f} | {r['load']} |"
                     + (f" {base_runs[i - 1]['wall']:.2f} / {base_runs[i - 1]['cpu']:.2f} |"
                        if base_runs else ""))
    lines += [
        "",
        f"Median: {med:.2f} s wall = **{args.voxels / med:,.0f} voxels/s** end to end "
        f"(best {min(walls):.2f} s = {args.voxels / min(walls):,.0f} voxels/s); median CPU "
        f"{statistics.median(cpus):.2f} s = {args.voxels / statistics.median(cpus):,.0f} "
        "voxels per CPU-second. Target: 1,000,000 voxels/s wall on 2 cores.",
        "",
    ]
    if base_runs:
        bw = [b["wall"] for b in base_runs]
        bc = [b["cpu"] for b in base_runs]
        scheds = sorted({s for b in base_runs for s in b["schedulers"]})
        lines += [
            f"Baseline `{args.baseline}`, alternating: median {statistics.median(bw):.2f} s "
            f"wall, {statistics.median(bc):.2f} s CPU. Ratio of medians (this / baseline): "
            f"wall {med / statistics.median(bw):.2f}, CPU "
            f"{statistics.median(cpus) / statistics.median(bc):.2f}. The nine maps "
            "byte-identical to the baseline's in every repeat: "
            f"{'yes' if all(b['maps'] for b in base_runs) else '**no**'}; sidecars "
            "identical apart from `Settings.scheduler`: "
            f"{'yes' if all(b['sidecars'] for b in base_runs) else '**no**'} (scheduler "
            "this / baseline: "
            + "; ".join(f"`{a}` / `{b}`" for a, b in scheds) + ").",
            "",
        ]
    lines += [
        f"Timeline of one command (this tree; wall clock since the interpreter ran the "
        f"driver, the main thread's CPU and the whole process's CPU, both since the "
        f"process started). Load before: {loadavg()}.",
        "",
        "| step done | wall (s) | main-thread CPU (s) | process CPU, all threads (s) |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {n} | {w:.3f} | {c:.3f} | {pc:.3f} |" for n, w, c, _t, pc in tl["events"]]
    if tl["ahead"]:
        lines += ["", f"The read-ahead thread (`petbind.io.prefetch`): done at "
                  f"{tl['ahead']['end']:.3f} s, {tl['ahead']['cpu']:.3f} CPU-s "
                  "(inflating / reading the scan)."]
    lines.append("")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voxels", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--work", type=Path, default=Path("/tmp/petbind-bench-parametric-cli"))
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another petbind src folder, run alternately for a before/after")
    ap.add_argument("--no-mask", action="store_true",
                    help="run without --mask (brain mask derived from the scan)")
    ap.add_argument("--input", choices=("gz", "petbind", "nii", "both", "all"),
                    default="all",
                    help="the scan as .nii.gz (nibabel's), as .nii.gz written by petbind, "
                    "as .nii, both (gz and nii) or all three (default)")
    args = ap.parse_args()
    results = RESULTS.with_name("parametric_cli_no_mask.md") if args.no_mask else RESULTS
    src = str(HERE.parent / "src")
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env = {**clean, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONPYCACHEPREFIX": str(args.work / "pycache" / "this")}
    base_env = None if args.baseline is None else {
        **clean, "PYTHONPATH": str(args.baseline.resolve()),
        "PYTHONPYCACHEPREFIX": str(args.work / "pycache" / "baseline")}
    files = make_scan(args.work / f"v{args.voxels}", args.voxels)
    inputs = {}
    if args.input in ("gz", "both", "all"):
        inputs["gz"] = files
    if args.input in ("petbind", "all"):
        inputs["petbind"] = petbind_scan(files, args.work / f"v{args.voxels}_petbind")
    if args.input in ("nii", "both", "all"):
        inputs["nii"] = plain_scan(files, args.work / f"v{args.voxels}_nii")
    petbind = [sys.executable, "-m", "petbind"]

    cores_before = free_cores()
    print(f"free cores (speedup of 2 processes): {cores_before:.2f}", flush=True)
    sections = []
    for label, f in inputs.items():
        sections += run_input(args, label, f, env, base_env)
    cores_after = free_cores()

    helps = []
    for _ in range(7):
        helps.append(timed([*petbind, "--help"], env))
    imp = subprocess.run([sys.executable, "-X", "importtime", "-c", "import petbind.cli"],
                         capture_output=True, text=True, env=env)
    mods = {ln.rsplit("|", 1)[-1].strip() for ln in imp.stderr.splitlines()
            if ln.startswith("import time:")}
    heavy = sorted(m for m in mods if m.split(".")[0] in FORBIDDEN)
    gz = gzip_compare(args.voxels)
    map_mb = sum(p.stat().st_size for p in
                 (args.work / next(iter(inputs)) / "out0").glob("*.nii.gz")) / 1e6

    lines = [
        "# Whole-process `petbind parametric` (issue 18, item 3)",
        "",
        f"`python benchmarks/bench_parametric_cli.py --voxels {args.voxels} "
        f"--repeats {args.repeats}"
        + ("" if args.baseline is None else f" --baseline {args.baseline}")
        + (" --no-mask" if args.no_mask else "")
        + f" --input {args.input}` on {platform.node()} ({os.cpu_count()} CPUs, shared), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; Python "
        f"{platform.python_version()}.",
        "",
        f"Scan: {args.voxels:,} brain voxels x 29 frames, float32, as `.nii.gz` "
        "(nibabel's, petbind's) and/or `.nii`; MRTM2, k2' auto, default scheduler, "
        + ("brain mask derived (no `--mask`); " if args.no_mask else "`--mask` given; ") +
        f"outputs: nine `.nii.gz` maps ({map_mb:.1f} MB) with sidecars. Free cores "
        f"(speedup of two CPU-bound processes together over one; 2.0 = two idle cores): "
        f"**{cores_before:.2f} before, {cores_after:.2f} after** the repeats.",
        "",
        *sections,
        "## gzip back-ends (one float32 map, level 1, CPU seconds)",
        "",
        "| back-end | CPU (s) | output (MB) |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {n} | {s:.3f} | {mb:.2f} |" for n, s, mb in gz]
    hs = [h["wall"] for h in helps]
    lines += [
        "",
        "## `petbind --help` and the CLI's imports",
        "",
        f"- `petbind --help`: median {statistics.median(hs):.3f} s wall over 7 starts "
        f"(min {min(hs):.3f}, max {max(hs):.3f}); target < 0.5 s. CPU user+sys median "
        f"{statistics.median(h['cpu'] for h in helps):.3f} s. Load before: {loadavg()}.",
        "- `python -X importtime -c \"import petbind.cli\"` imports "
        + (f"**{', '.join(heavy)}**" if heavy else
           "none of dask, distributed, SimpleITK, dipy, matplotlib") + ".",
        "",
    ]
    kept = ""
    if results.exists() and KEEP in results.read_text():
        kept = results.read_text().split(KEEP, 1)[1]
    lines += [KEEP]
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text("\n".join(lines) + kept)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
