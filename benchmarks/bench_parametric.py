"""Parametric-map speed, memory and accuracy (issue 6).

Run: ``.venv/bin/python benchmarks/bench_parametric.py [--quick]
[--petpal-python PATH]``; writes ``benchmarks/results/parametric.md``.
PETPAL (GPL-3, Python >= 3.12) is an optional peer, never a dependency:
``python3.12 -m venv /tmp/petpal && /tmp/petpal/bin/pip install petpal``,
then ``--petpal-python /tmp/petpal/bin/python``.

Data: a synthetic 4D image with a known BP_ND and R1 in every voxel, the demo
frame schedule (29 frames, 90 min), built here from an independent analytic
generator (sum-of-exponentials plasma input; one-tissue reference and target
with equal V_ND, so SRTM holds exactly; exact frame means of the closed-form
convolution) plus counts-like Gaussian noise, frame SD
``s * sqrt(C(t) exp(lambda t_mid) / duration)`` (PET_PRIMER section 5). The
image is written as an uncompressed float32 NIfTI and read lazily.

Measured, per model and size (10^5 and 10^6 voxels): fit throughput
(voxels / second of fitting, median of repeats), end-to-end time (reading the
curves from the file + fitting + assembling maps) and peak traced memory
(``tracemalloc``, numpy allocations) relative to the 4D input in float32.
Baseline in the same process: a per-voxel ``scipy.optimize.curve_fit`` SRTM
loop (1024-point uniform grid, np.convolve, mid-frame sampling, as peer tools do)
on a subset. Accuracy: error of BP_ND against the truth, and the largest
difference between the map and a region-level fit (the engine's ``fit`` on
the same curves as a table).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.optimize import curve_fit

from petbind import __version__
from petbind.image import DynamicImage
from petbind.models import make_model
from petbind.parametric import parametric_maps
from petbind.timing import FrameTiming

SCHEDULE = [(6, 10), (3, 20), (2, 30), (4, 60), (4, 120), (5, 300), (5, 600)]
TIMING = FrameTiming.from_schedule(SCHEDULE, unit="s")
CP_A = np.array([40.0, 4.0, -44.0])
CP_L = np.array([1.2137, 0.04321, 6.037])
K1_REF, K2_REF = 0.4, 0.1
LAM = np.log(2) / 20.38  # C-11, 1/min
NOISE = 0.2
RESULTS = Path(__file__).parent / "results" / "parametric.md"
TARGETS = {"mrtm2": 5_000_000, "bfsrtm": 500_000, "srtm": 50_000}


# -- independent generator ----------------------------------------------------
def _frame_mean_exp(rate: np.ndarray) -> np.ndarray:
    r = np.asarray(rate, dtype=float)[..., None]
    s, e = TIMING.start, TIMING.end
    return (np.exp(-r * s) - np.exp(-r * e)) / (r * (e - s))


def one_tissue(k1: np.ndarray, k2: np.ndarray) -> np.ndarray:
    """Exact frame means of K1 exp(-k2 t) (*) Cp."""
    k1 = np.asarray(k1, dtype=float)
    k2 = np.asarray(k2, dtype=float)
    fk = _frame_mean_exp(k2)
    out = np.zeros(k2.shape + (TIMING.n_frames,))
    for a, lam in zip(CP_A, CP_L, strict=True):
        out += (a / (k2 - lam))[..., None] * (_frame_mean_exp(lam) - fk)
    return k1[..., None] * out


def synthetic(n_vox: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                  np.ndarray]:
    """(curves float32 (V, T), true BP_ND (V,), true R1 (V,), reference (T,))."""
    rng = np.random.default_rng(seed)
    bp = rng.uniform(0.2, 3.0, n_vox)
    r1 = rng.uniform(0.8, 1.25, n_vox)
    out = np.empty((n_vox, TIMING.n_frames), dtype=np.float32)
    step = 200_000
    for a in range(0, n_vox, step):
        sl = slice(a, a + step)
        c = one_tissue(r1[sl] * K1_REF, r1[sl] * K2_REF / (1 + bp[sl]))
        sd = NOISE * np.sqrt(c * np.exp(LAM * TIMING.mid) / TIMING.duration)
        out[sl] = c + sd * rng.standard_normal(c.shape)
    ref = one_tissue(np.array(K1_REF), np.array(K2_REF))
    return out, bp, r1, ref


def write_image(curves: np.ndarray, ref: np.ndarray, folder: Path) -> tuple[Path, Path]:
    """A (X, Y, Z, T) float32 NIfTI: the voxels, then one slab of reference voxels."""
    v = curves.shape[0]
    nx = 100
    ny = 100
    nz = -(-v // (nx * ny)) + 1          # + one reference slab
    data = np.zeros((nx * ny * nz, TIMING.n_frames), dtype=np.float32)
    data[:v] = curves
    data[-nx * ny:] = ref.astype(np.float32)
    vol = data.reshape(nz, ny, nx, TIMING.n_frames).transpose(2, 1, 0, 3)
    p = folder / f"pet_{v}.nii"
    nib.save(nib.Nifti1Image(np.asfortranarray(vol), np.diag([2.0, 2.0, 2.0, 1.0])), p)
    flat_idx = np.arange(nx * ny * nz).reshape(nz, ny, nx).transpose(2, 1, 0)
    brain = flat_idx < v
    refm = flat_idx >= nx * ny * (nz - 1)
    mp = folder / f"masks_{v}.npz"
    np.savez(mp, brain=brain, ref=refm, order=flat_idx[brain])
    return p, mp


def open_image(p: Path) -> DynamicImage:
    img = nib.load(p)
    return DynamicImage(img.dataobj, img.affine, TIMING, {}, str(p))


# -- per-voxel curve_fit baseline -----------------------------------------------
def curve_fit_srtm(curves: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, float]:
    """SRTM per voxel with scipy curve_fit (the conventional loop). Returns BP_ND, voxels/s.

    As in peer tools (e.g. kinfitr): the reference curve interpolated onto a
    uniform grid of 1024 points, discrete convolution with ``np.convolve``,
    the model sampled at frame mid-times.
    """
    t = np.linspace(0.0, TIMING.end[-1], 1024)
    dt = t[1] - t[0]
    cr = np.interp(t, np.concatenate([[0.0], TIMING.mid]), np.concatenate([[0.0], ref]))

    def srtm(_x: np.ndarray, r1: float, k2: float, bp: float) -> np.ndarray:
        k2a = k2 / (1.0 + bp)
        conv = np.convolve(cr, np.exp(-k2a * t))[: t.size] * dt
        return np.interp(TIMING.mid, t, r1 * cr + (k2 - r1 * k2a) * conv)

    out = np.full(curves.shape[0], np.nan)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, y in enumerate(curves.astype(float)):
            try:
                p, _ = curve_fit(srtm, TIMING.mid, y, p0=(1.0, 0.1, 1.0),
                                 bounds=([0, 0, -1], [10, 2, 20]), maxfev=2000)
                out[i] = p[2]
            except RuntimeError:
                pass
    return out, curves.shape[0] / (time.perf_counter() - t0)


# -- optional peer: PETPAL in its own venv (never a dependency) -------------------
PETPAL_SCRIPT = """
import sys, time, numpy as np
from petpal.kinetic_modeling.parametric_images import apply_mrtm2_to_all_voxels
d = np.load(sys.argv[1])
img = d["curves"].astype(float)[:, None, None, :]
mask = np.ones(img.shape[:3])
args = dict(tac_times_in_minutes=d["mid"], ref_tac_vals=d["ref"], k2_prime=float(d["k2"]),
            t_thresh_in_mins=0.0)
apply_mrtm2_to_all_voxels(tgt_image=img[:10], mask_img=mask[:10], **args)  # numba compile
t0 = time.perf_counter()
bp, _ = apply_mrtm2_to_all_voxels(tgt_image=img, mask_img=mask, **args)
dt = time.perf_counter() - t0
np.save(sys.argv[2], bp[:, 0, 0])
print(img.shape[0] / dt)
"""


def petpal_mrtm2(python: str, curves: np.ndarray, ref: np.ndarray, folder: Path
                 ) -> tuple[float, np.ndarray]:
    """PETPAL's voxelwise MRTM2 (``apply_mrtm2_to_all_voxels``) on the same curves.

    Returns voxels/s and its BP_ND. PETPAL samples at frame mid-times and
    integrates by trapezoids from the first mid-time (its convention).
    """
    import subprocess

    data = folder / "petpal_in.npz"
    out = folder / "petpal_bp.npy"
    np.savez(data, curves=curves, ref=ref, mid=TIMING.mid, k2=K2_REF)
    script = folder / "petpal_run.py"
    script.write_text(PETPAL_SCRIPT)
    res = subprocess.run([python, str(script), str(data), str(out)], check=True,
                         capture_output=True, text=True)
    return float(res.stdout.strip().splitlines()[-1]), np.load(out)


# -- runs ------------------------------------------------------------------------
MODELS = {
    "mrtm2": {"k2prime": K2_REF},
    "logan": {"k2prime": K2_REF, "model_settings": {"tstar": 35.0}},
    "bfsrtm": {},
    "srtm2": {"k2prime": K2_REF},
    "srtm": {},
}


def run(path: Path, masks: dict, model: str, scheduler: str | None = None,
        chunk: int | None = None) -> tuple[float, float, object]:
    """One ``parametric_maps`` call: (fit wall s, end-to-end wall s, result)."""
    kw = dict(MODELS[model])
    t0 = time.perf_counter()
    res = parametric_maps(open_image(path), model=model, ref_curve=masks["ref"],
                          mask=masks["brain"], k2prime=kw.pop("k2prime", None),
                          chunk_voxels=chunk, scheduler=scheduler, **kw)
    return res.elapsed_s, time.perf_counter() - t0, res


def loadavg() -> str:
    """The 1-minute load average (other processes on the machine), as text."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:  # pragma: no cover - not Linux
        return "?"


def _petpal_version(python: str) -> str:
    import subprocess

    res = subprocess.run([python, "-c", "import importlib.metadata as m; "
                          "print(m.version('petpal'))"], capture_output=True, text=True)
    return res.stdout.strip() or "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10^5 only, fewer repeats")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--petpal-python", default=None,
                    help="python of a separate venv with petpal installed (optional peer)")
    args = ap.parse_args()
    sizes = [100_000] if args.quick else [100_000, 1_000_000]
    rows: list[str] = []
    acc_rows: list[str] = []
    mem_rows: list[str] = []
    rates: dict[tuple[str, int], float] = {}
    cpu_rates: dict[tuple[str, int], float] = {}
    load_start = loadavg()
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            curves, bp, _r1, ref = synthetic(n)
            path, mpath = write_image(curves, ref, Path(tmp))
            masks = dict(np.load(mpath))
            order = masks.pop("order")
            true_bp = bp[order]
            input_mb = curves.nbytes / 2**20
            del curves
            if n == sizes[0]:
                # untimed: first-call costs of the process (threadpoolctl's library scan,
                # dask's thread pool), not of any model
                run(path, masks, "mrtm2")
            for model in MODELS:
                slow = model in ("srtm", "srtm2")
                reps = 1 if (slow and n >= 1_000_000) or args.quick else 3
                fits, walls, cpus, loads = [], [], [], []
                for _ in range(reps):
                    loads.append(loadavg())
                    fit_s, wall_s, res = run(path, masks, model)
                    fits.append(fit_s)
                    walls.append(wall_s)
                    cpus.append(res.cpu_s)
                fit_s, wall_s = float(np.median(fits)), float(np.median(walls))
                cpu_s = float(np.median(cpus))
                rates[(model, n)] = n / fit_s
                cpu_rates[(model, n)] = n / cpu_s
                est = res.bp_nd[masks["brain"]]
                err = est - true_bp
                ok = np.isfinite(err)
                rows.append(f"| {model} | {n:,} | {reps} | {fit_s:.3f} | {n / fit_s:,.0f} | "
                            f"{cpu_s:.3f} | {n / cpu_s:,.0f} | "
                            f"{wall_s:.3f} | {n / wall_s:,.0f} | {res.counts['n_valid']:,} | "
                            f"{res.settings['scheduler']}, {res.settings['n_chunks']} chunks | "
                            f"{' '.join(loads)} |")
                if n == sizes[0]:
                    sub = np.flatnonzero(ok)[:2000]
                    img = open_image(path)
                    vc = np.stack([img.frame(t)[masks["brain"]][sub]
                                   for t in range(TIMING.n_frames)], axis=1)
                    refc = np.mean([img.frame(t)[masks["ref"]] for t in
                                    range(TIMING.n_frames)], axis=1, dtype=np.float64)
                    mk = {"k2prime": K2_REF} if "k2prime" in MODELS[model] else {}
                    mk.update(MODELS[model].get("model_settings", {}))
                    region = make_model(model, TIMING, refc, **mk).fit(vc.astype(np.float64))
                    diff = np.nanmax(np.abs(region.params["bp_nd"] - est[sub]))
                    acc_rows.append(
                        f"| {model} | {np.median(err[ok]):+.4f} | "
                        f"{np.median(np.abs(err[ok])):.4f} | "
                        f"{np.median(np.abs(err[ok]) / true_bp[ok]) * 100:.2f} | "
                        f"{ok.mean() * 100:.2f} | {diff:.2e} |")
            # memory: one traced run per model (tracing slows numpy-heavy code slightly)
            for model in ("mrtm2", "bfsrtm", "srtm"):
                if model == "srtm" and n > 100_000 and not args.quick:
                    continue
                tracemalloc.start()
                run(path, masks, model)
                _cur, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                mem_rows.append(f"| {model} | {n:,} | {input_mb:.0f} | {peak / 2**20:.0f} | "
                                f"{peak / 2**20 / input_mb:.2f} |")
            if n == max(sizes):
                sched_rows = []
                for model in ("mrtm2", "bfsrtm"):
                    for sched in ("sync", "threads"):
                        got = [run(path, masks, model, scheduler=sched) for _ in range(3)]
                        fit_s = float(np.median([g[0] for g in got]))
                        cpu_s = float(np.median([g[2].cpu_s for g in got]))
                        sched_rows.append(f"| {model} | {n:,} | {sched} | {fit_s:.3f} | "
                                          f"{n / fit_s:,.0f} | {cpu_s:.3f} | "
                                          f"{n / cpu_s:,.0f} | {loadavg()} |")
            path.unlink()
        # baseline on a subset of the first size
        curves, bp, _r1, ref = synthetic(100_000)
        nb = 100 if args.quick else 300
        cf_bp, cf_rate = curve_fit_srtm(curves[:nb], ref)
        cf_err = np.nanmedian(np.abs(cf_bp - bp[:nb]))
        peer_line = ("PETPAL not run (give --petpal-python PATH to a venv with petpal "
                     "installed).")
        if args.petpal_python:
            n_pp = 20_000
            pp_rate, pp_bp = petpal_mrtm2(args.petpal_python, curves[:n_pp], ref, Path(tmp))
            p_pp, m_pp = write_image(curves[:n_pp], ref, Path(tmp))
            mk = dict(np.load(m_pp))
            order_pp = mk.pop("order")
            fit_s, _w, res_pp = run(p_pp, mk, "mrtm2", scheduler="sync")
            ours = n_pp / fit_s
            ok = np.isfinite(pp_bp)
            peer_line = (
                f"PETPAL {_petpal_version(args.petpal_python)} `apply_mrtm2_to_all_voxels` "
                f"(numba inner fit, Python loop over voxels), {n_pp:,} voxels, k2' given: "
                f"{pp_rate:,.0f} voxels/s; petbind MRTM2 in-process on the same voxels: "
                f"{ours:,.0f} voxels/s (x{ours / pp_rate:,.0f}). Median |BP_ND error|: "
                f"PETPAL {np.median(np.abs(pp_bp[ok] - bp[:n_pp][ok])):.4f}, petbind "
                f"{np.nanmedian(np.abs(res_pp.bp_nd[mk['brain']] - bp[:n_pp][order_pp])):.4f} "
                "(PETPAL samples at frame mid-times; petbind integrates over frames).")
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n_cpu = len(os.sched_getaffinity(0))
    total_min = (time.perf_counter() - t_start) / 60
    load_end = loadavg()
    lines = [
        "# Parametric maps: speed, memory, accuracy",
        "",
        f"`python benchmarks/bench_parametric.py {' '.join(sys.argv[1:])}`".replace(" `", "`")
        + " "
        f"(petbind {__version__}, Python {platform.python_version()}, numpy "
        f"{np.__version__}, {n_cpu} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        "",
        f"Machine: {n_cpu} cores, **shared with other engineers running tests and "
        "benchmarks at the same time**, so absolute times are noisy (medians of "
        "repeats); ratios within one run are more reliable. 1-minute load average "
        f"(`/proc/loadavg`): {load_start} at the start, {load_end} at the end, and before "
        f"each repeat in the table (a load above {n_cpu} means other processes took "
        f"part of these {n_cpu} cores). Whole run: {total_min:.1f} min.",
        "",
        "CPU s = CPU time of this process during the fits (all threads). On a loaded "
        "machine the wall-clock rate understates the code; voxels per CPU-second is "
        "what the code does per core whatever the load (times the cores it gets, "
        "less the threads' overhead: see the last table).",
        "",
        f"Data: synthetic image, 29 frames (demo schedule), BP_ND ~ U(0.2, 3), R1 ~ "
        f"U(0.8, 1.25), one-tissue reference k2' = {K2_REF}/min, counts-like noise "
        f"(s = {NOISE}), float32 NIfTI read lazily; default scheduler (dask threads), "
        "automatic chunk size, k2' given (true value) for mrtm2/srtm2/logan.",
        "",
        "## Throughput",
        "",
        "fit = time in the model fits (chunks on dask); end-to-end = `parametric_maps` "
        "wall time (reading the curves from the file, fitting, assembling the maps).",
        "",
        "| model | voxels | repeats | fit s (median) | voxels/s (fit) | fit CPU s | "
        "voxels per CPU-s | end-to-end s | voxels/s (end-to-end) | valid | scheduler | "
        "load before each repeat |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
        *rows,
        "",
        "Targets (issue 6, 2 cores, wall clock): " + ", ".join(
            f"{m} >= {t:,} voxels/s: {'met' if rates.get((m, max(sizes)), 0) >= t else 'NOT met'}"
            f" ({rates.get((m, max(sizes)), float('nan')):,.0f} at {max(sizes):,}; "
            f"{cpu_rates.get((m, max(sizes)), float('nan')):,.0f} per CPU-s)"
            for m, t in TARGETS.items()) + ".",
        "",
        "## Baseline: per-voxel scipy `curve_fit` SRTM (same process)",
        "",
        f"{nb} voxels: {cf_rate:,.1f} voxels/s (median |BP_ND error| {cf_err:.4f}). "
        "Speed-up of each map model at "
        f"{sizes[0]:,} voxels over this loop: " + ", ".join(
            f"{m} x{rates[(m, sizes[0])] / cf_rate:,.0f}" for m in MODELS) + ".",
        "",
        "## Peer: PETPAL (optional, its own Python 3.12 venv)",
        "",
        peer_line,
        "",
        "## Accuracy (first size; against the truth and against region-level fits)",
        "",
        "Region fit = the engine's `make_model(...).fit` on 2,000 of the same voxel "
        "curves as a table; the difference is the largest |BP_ND map - region fit|.",
        "",
        "| model | median error | median abs error | median abs error % | valid % | "
        "max diff vs region fit |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *acc_rows,
        "",
        "## Peak memory (tracemalloc, numpy allocations during `parametric_maps`)",
        "",
        "| model | voxels | 4D input float32 MiB | peak MiB | peak / input |",
        "| --- | ---: | ---: | ---: | ---: |",
        *mem_rows,
        "",
        f"Process max RSS over the whole benchmark: {maxrss_mb:,.0f} MiB (includes the "
        "generator's own arrays).",
    ]
    if not args.quick:
        lines += ["", "## In-process vs dask threads (median of 3)", "",
                  "| model | voxels | scheduler | fit s | voxels/s | fit CPU s | "
                  "voxels per CPU-s | load after |",
                  "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |", *sched_rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
