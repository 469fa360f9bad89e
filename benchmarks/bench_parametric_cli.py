"""Whole-process ``petbind parametric`` speed (issue 18, item 3) and ``petbind --help``.

Run: ``.venv/bin/python benchmarks/bench_parametric_cli.py [--voxels N] [--repeats R]
[--baseline SRC] [--no-mask]``; writes ``benchmarks/results/parametric_cli.md``
(``--no-mask``: ``parametric_cli_no_mask.md``), keeping the hand-written part of the file
below the line :data:`KEEP`. With ``--baseline`` (another checkout's ``src``, e.g.
``/work/main/src``) every repeat also runs the same command on that code, alternating, so
that before and after meet the same load. ``--no-mask`` runs the command without
``--mask`` (the brain mask derived from the scan).

Data: the independent generator of ``bench_parametric.py`` (analytic one-tissue
curves with a known BP_ND per voxel, counts-like noise, 29 frames over 90 min),
written as a BIDS-PET ``.nii.gz`` (float32, 1 M brain voxels on a 100 x 100 x
101 grid with one slab of reference voxels) with its JSON sidecar, a brain mask
and a reference mask. The command is the user's: ``petbind parametric PET
--model mrtm2 --ref-mask REF --mask BRAIN --out DIR`` (k2' ``auto``, the
default scheduler), timed from process start to exit, ``--repeats`` times.

Also measured: ``petbind --help`` (median of 7 starts), whether ``import
petbind.cli`` imports dask / distributed / SimpleITK / dipy / matplotlib, the
process CPU time of each phase in one process (imports, reading + masks + k2'
+ fit, the fit alone, writing nine maps), and compressing one float32 map with
zlib and with ISA-L at level 1. The machine is shared: the load average is
recorded before every repeat, and the CPU seconds (user + system of the child)
are the load-independent measure.
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


PHASES = r"""
import json, sys, time
c = [time.process_time(), time.perf_counter()]
out = {}
def lap(name):
    cc, w = time.process_time(), time.perf_counter()
    out[name] = [cc - c[0], w - c[1]]
    c[0], c[1] = cc, w
import petbind.cli
lap("import petbind.cli")
from petbind.parametric import RefCurve, parametric_maps, write_maps
import dask.threaded
lap("import maps, models, io, dask.threaded")
pet, brain, ref, dest = sys.argv[1:5]
res = parametric_maps(pet, model="mrtm2", ref_curve=RefCurve(mask=ref),
                      mask=None if brain == "-" else brain)
lap("read, masks, k2' auto, fit, hash")
out["fit alone (dask threads)"] = [res.cpu_s, res.elapsed_s]
write_maps(res, dest, "sub-01_trc-DASB")
lap("write 9 maps (.nii.gz + .json)")
print(json.dumps(out))
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voxels", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--work", type=Path, default=Path("/tmp/petbind-bench-parametric-cli"))
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another petbind src folder, run alternately for a before/after")
    ap.add_argument("--no-mask", action="store_true",
                    help="run without --mask (brain mask derived from the scan)")
    args = ap.parse_args()
    results = RESULTS.with_name("parametric_cli_no_mask.md") if args.no_mask else RESULTS
    src = str(HERE.parent / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    files = make_scan(args.work / f"v{args.voxels}", args.voxels)
    petbind = [sys.executable, "-m", "petbind"]

    helps = []
    for _ in range(7):
        helps.append(timed([*petbind, "--help"], env))
    imp = subprocess.run([sys.executable, "-X", "importtime", "-c", "import petbind.cli"],
                         capture_output=True, text=True, env=env)
    mods = {ln.rsplit("|", 1)[-1].strip() for ln in imp.stderr.splitlines()
            if ln.startswith("import time:")}
    heavy = sorted(m for m in mods if m.split(".")[0] in FORBIDDEN)

    def command(dest: Path) -> list[str]:
        return [*petbind, "parametric", str(files["pet"]), "--model", "mrtm2",
                "--ref-mask", str(files["ref"]),
                *([] if args.no_mask else ["--mask", str(files["brain"])]),
                "--out", str(dest)]

    base_env = None if args.baseline is None else {
        **os.environ, "PYTHONPATH": str(args.baseline.resolve())}
    runs, base_runs = [], []
    for i in range(args.repeats):
        load = loadavg()
        r = timed(command(args.work / f"out{i}"), env)
        r["load"] = load
        runs.append(r)
        print(f"run {i + 1}: {r['wall']:.2f} s wall, {r['cpu']:.2f} s CPU, load {load}",
              flush=True)
        if base_env is not None:
            b = timed(command(args.work / f"base{i}"), base_env)
            b["load"] = loadavg()
            base_runs.append(b)
            print(f"  baseline: {b['wall']:.2f} s wall, {b['cpu']:.2f} s CPU", flush=True)
            same = all((args.work / f"out{i}" / f.name).read_bytes() == f.read_bytes()
                       for f in sorted((args.work / f"base{i}").iterdir()))
            b["same"] = same and len(list((args.work / f"out{i}").iterdir())) == len(
                list((args.work / f"base{i}").iterdir()))
    phases = json.loads(subprocess.run(
        [sys.executable, "-c", PHASES, str(files["pet"]),
         "-" if args.no_mask else str(files["brain"]),
         str(files["ref"]), str(args.work / "phases")], capture_output=True, text=True,
        env=env, check=True).stdout)
    gz = gzip_compare(args.voxels)
    map_mb = sum(p.stat().st_size for p in (args.work / "out0").glob("*.nii.gz")) / 1e6

    walls = [r["wall"] for r in runs]
    cpus = [r["cpu"] for r in runs]
    med = statistics.median(walls)
    lines = [
        "# Whole-process `petbind parametric` (issue 18, item 3)",
        "",
        f"`python benchmarks/bench_parametric_cli.py --voxels {args.voxels} "
        f"--repeats {args.repeats}"
        + ("" if args.baseline is None else f" --baseline {args.baseline}")
        + (" --no-mask" if args.no_mask else "")
        + f"` on {platform.node()} ({os.cpu_count()} CPUs, shared), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; Python "
        f"{platform.python_version()}.",
        "",
        f"Scan: {args.voxels:,} brain voxels x 29 frames, float32 `.nii.gz` "
        f"({files['pet'].stat().st_size / 1e6:.0f} MB); MRTM2, k2' auto, default scheduler, "
        + ("brain mask derived (no `--mask`); " if args.no_mask else "`--mask` given; ") +
        f"outputs: nine `.nii.gz` maps ({map_mb:.1f} MB) with sidecars.",
        "",
        "| repeat | wall (s) | voxels/s (wall) | CPU user+sys (s) | voxels per CPU-s | "
        "peak RSS (MiB) | load average (1/5/15 min) before |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for i, r in enumerate(runs, 1):
        lines.append(f"| {i} | {r['wall']:.2f} | {args.voxels / r['wall']:,.0f} | "
                     f"{r['cpu']:.2f} | {args.voxels / r['cpu']:,.0f} | "
                     f"{r['rss_mib']:.0f} | {r['load']} |")
    lines += [
        "",
        f"Median: {med:.2f} s wall = **{args.voxels / med:,.0f} voxels/s** end to end; "
        f"median CPU {statistics.median(cpus):.2f} s = "
        f"{args.voxels / statistics.median(cpus):,.0f} voxels per CPU-second. "
        "Target: 1,000,000 voxels/s wall on 2 cores.",
        "",
    ]
    if base_runs:
        bw = [b["wall"] for b in base_runs]
        bc = [b["cpu"] for b in base_runs]
        lines += [
            f"Baseline `{args.baseline}`, run alternately with the repeats above: median "
            f"{statistics.median(bw):.2f} s wall, {statistics.median(bc):.2f} s CPU "
            f"(walls {', '.join(f'{w:.2f}' for w in bw)}; CPU "
            f"{', '.join(f'{c:.2f}' for c in bc)}). Ratio of medians (this / baseline): "
            f"wall {med / statistics.median(bw):.2f}, CPU "
            f"{statistics.median(cpus) / statistics.median(bc):.2f}. Outputs (maps and "
            "sidecars) byte-identical to the baseline's in every repeat: "
            f"{'yes' if all(b['same'] for b in base_runs) else '**no**'}.",
            "",
        ]
    lines += [
        "## Phases (one process, CPU seconds and wall seconds)",
        "",
        "| phase | CPU (s) | wall (s) |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {k} | {v[0]:.2f} | {v[1]:.2f} |" for k, v in phases.items()]
    lines += [
        "",
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
