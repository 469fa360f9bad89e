"""Reference-tissue model engine: Monte Carlo bias / CV and fits per second.

Run on demand (not part of the test suite)::

    .venv/bin/python benchmarks/bench_models.py [--quick]

Writes ``benchmarks/results/models.md``.

Truth comes from the independent generator of the tests
(``tests/models/_kinetic_truth.py``: Feng 1993 plasma input, analytic
one-tissue reference and targets, Simpson frame means), on the demo frame
schedule (29 frames, 90 min). Noise is Gaussian with counts-based variance,
``sd_i = a * sqrt(C_i * DF_i / d_i)`` (C-11 decay factor ``DF_i``, frame
duration ``d_i``), with ``a`` set so that the mean frame CV of the target
equals the stated level; the reference curve is noise-free (a large region).
Every model uses counts weights (C-11) and, where it needs one, the true k2'.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "models"))

from _kinetic_truth import DEMO_SCHEDULE, REF, srtm_truth  # noqa: E402

from petbind.models import get_model  # noqa: E402
from petbind.numerics.convolution import ExpConvTable, PiecewiseLinear  # noqa: E402
from petbind.timing import FrameTiming  # noqa: E402

TIMING = FrameTiming.from_schedule(DEMO_SCHEDULE)
K2P = REF["k2"]
MODELS = [
    ("srtm", {}),
    ("srtm2", {"k2prime": K2P}),
    ("bfsrtm", {}),
    ("bfsrtm", {"k2prime": K2P}),
    ("mrtm", {}),
    ("mrtm2", {"k2prime": K2P}),
    ("logan", {"k2prime": K2P, "tstar": 30.0}),
    ("suvr", {}),
]
NOISE = [0.025, 0.05, 0.10]
BPS = [0.5, 1.5, 4.0]
R1 = 1.0


def _label(name: str, kw: dict) -> str:
    extra = []
    if "k2prime" in kw and name == "bfsrtm":
        extra.append("fixed k2'")
    if "tstar" in kw:
        extra.append(f"t*={kw['tstar']:g}")
    if name == "suvr":
        extra.append("60-90 min")
    return name + (f" ({', '.join(extra)})" if extra else "")


def _noisy(tgt: np.ndarray, level: float, n: int, rng: np.random.Generator) -> np.ndarray:
    df = TIMING.decay_factors("C-11")
    shape = np.sqrt(np.maximum(tgt, 0) * df / TIMING.duration)
    valid = tgt > 0
    a = level / np.mean(shape[valid] / tgt[valid])
    return tgt + a * shape * rng.standard_normal((n, tgt.size))


def monte_carlo(n_curves: int, seed: int = 20261127) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for bp in BPS:
        ref, tgt = srtm_truth(TIMING.start, TIMING.end, bp, R1)
        for level in NOISE:
            y = _noisy(tgt, level, n_curves, rng)
            for name, kw in MODELS:
                model = get_model(name, timing=TIMING, ref=ref, weights="counts",
                                  isotope="C-11", **kw)
                fit = model.fit(y)
                est = fit.bp_nd[fit.valid]
                rows.append({"model": _label(name, kw), "noise": level, "bp": bp,
                             "bias_mean": 100 * (np.mean(est) / bp - 1),
                             "bias_median": 100 * (np.median(est) / bp - 1),
                             "cv": 100 * np.std(est) / np.mean(est),
                             "valid": 100 * fit.valid.mean()})
    return rows


def _time(fun, repeats: int) -> tuple[float, float]:
    """Median wall-clock and CPU (process) seconds of ``fun()``."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fun()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return float(np.median(wall)), float(np.median(cpu))


def speed(n_curves: int, repeats: int) -> tuple[list[dict], dict]:
    from scipy.optimize import curve_fit
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(1)
    ref, tgt = srtm_truth(TIMING.start, TIMING.end, 1.5, R1)
    y = _noisy(tgt, 0.05, n_curves, rng)
    rows = []
    with threadpool_limits(1):
        for name, kw in MODELS + [("bfsrtm", {"compute_se": False}),
                                  ("srtm", {"compute_se": False})]:
            model = get_model(name, timing=TIMING, ref=ref, weights="counts",
                              isotope="C-11", **kw)
            model.fit(y[:1000])  # build tables / caches once, as a map run does per scan
            t, c = _time(lambda model=model: model.fit(y), repeats)
            label = _label(name, kw) + (" no SE" if kw.get("compute_se") is False else "")
            rows.append({"model": label, "seconds": t, "per_s": n_curves / t,
                         "cpu_per_s": n_curves / c})
        # baseline in the same process: scipy curve_fit per curve (the loop the engine replaces)
        form = PiecewiseLinear.mean_preserving(TIMING, ref)
        table = ExpConvTable(form, TIMING, 0.001, 2.0)

        def srtm_one(_t, r1, k2, bp):
            th = k2 / (1 + bp)
            return r1 * ref + (k2 - r1 * th) * table(np.array([th]))[0]

        n_base = 200
        t_base, c_base = _time(lambda: [curve_fit(srtm_one, None, yi, p0=(1.0, 0.15, 1.0),
                                                  bounds=([0, 0, -0.9], [10, 10, 50]))
                                        for yi in y[:n_base]], 1)
        base = {"model": "srtm, scipy curve_fit per curve (baseline)",
                "seconds": t_base * n_curves / n_base, "per_s": n_base / t_base,
                "cpu_per_s": n_base / c_base}
        rates = np.geomspace(0.001, 2.0, n_curves)
        t_kernel = _time(lambda: form.exp_conv_frame_means(rates, TIMING), repeats)[1]
        t_table = _time(lambda: table(rates, derivative=True), repeats)[1]
    extra = {"baseline": base, "kernel_s": t_kernel, "table_s": t_table}
    return rows, extra


def write(mc: list[dict], sp: list[dict], extra: dict, n_mc: int, n_speed: int,
          out: Path) -> None:
    lines = ["# Reference-tissue models: accuracy and speed", "",
             f"Generated by `benchmarks/bench_models.py` on {time.strftime('%Y-%m-%d %H:%M')} "
             f"UTC; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
             f"numpy {np.__version__}. **The machine has 2 cores shared with other engineers "
             "running tests and benchmarks at the same time (load average "
             f"{os.getloadavg()[0]:.1f} when this ran), so absolute times are noisy and "
             "pessimistic; ratios within this run are the meaningful numbers.**", "",
             "## Monte Carlo: bias and CV of BP_ND", "",
             f"{n_mc} curves per cell; demo frames (29 frames, 90 min); one-tissue target "
             f"with R1 = {R1:g}, reference K1' = {REF['k1']:g} mL/cm3/min, "
             f"k2' = {REF['k2']:g} /min (noise-free); counts-based Gaussian noise at the stated "
             "mean frame CV; counts weights (C-11); fixed-k2' models get the true k2'. "
             "Bias is of the valid fits, in % of the true BP_ND; CV = SD / mean.", "",
             "| model | noise | BP_ND | mean bias % | median bias % | CV % | valid % |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in mc:
        lines.append(f"| {r['model']} | {100 * r['noise']:g} % | {r['bp']:g} | "
                     f"{r['bias_mean']:+.2f} | {r['bias_median']:+.2f} | {r['cv']:.2f} | "
                     f"{r['valid']:.1f} |")
    base = extra["baseline"]
    lines += ["", "## Speed: fits per second", "",
              f"{n_speed:,} curves of 29 frames (BP_ND 1.5, 5 % noise), one BLAS thread, "
              "median of repeated runs after one warm-up fit (tables and caches built once "
              "per model, as per scan in a map run). Ratio = fits/s over the baseline "
              "(scipy `curve_fit` SRTM, one curve at a time, same process; its seconds are "
              f"extrapolated from 200 curves to {n_speed:,}). CPU fits/s divide by the "
              "process CPU time instead of the wall clock: what one free core gives.", "",
              "| model | wall s | fits/s (wall) | fits/s (CPU) | ratio vs baseline (CPU) |",
              "| --- | --- | --- | --- | --- |"]
    for r in sp + [base]:
        lines.append(f"| {r['model']} | {r['seconds']:.3f} | {r['per_s']:,.0f} | "
                     f"{r['cpu_per_s']:,.0f} | {r['cpu_per_s'] / base['cpu_per_s']:,.0f}x |")
    lines += ["", f"Exact kernel `exp_conv_frame_means` for {n_speed:,} rates: "
              f"{extra['kernel_s']:.3f} s CPU; spline table (values + derivative): "
              f"{extra['table_s']:.3f} s CPU.", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 curves MC, 10,000 for speed")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "models.md")
    args = ap.parse_args()
    n_mc, n_speed, reps = (100, 10_000, 1) if args.quick else (1000, 100_000, 3)
    mc = monte_carlo(n_mc)
    sp, extra = speed(n_speed, reps)
    write(mc, sp, extra, n_mc, n_speed, args.out)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
