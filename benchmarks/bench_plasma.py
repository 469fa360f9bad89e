"""Plasma-input models: speed and Monte Carlo accuracy.

Run on demand: ``.venv/bin/python benchmarks/bench_plasma.py [--quick]``.
Writes ``benchmarks/results/plasma.md``.

Truth: Feng et al. (1993) input, closed-form 1TCM / 2TCM tissue curves,
frame means by Simpson's rule (2001 points per frame), the demo frame
schedule (29 frames, 90 min), v_B = 0.05. Noise: Gaussian, SD proportional to
``sqrt(C(t) exp(lambda t) / duration)`` (counts-like, C-11), scaled to a
stated percentage of the peak frame.

Speed: curves fitted per second by each model in one batched call, against a
baseline in the same process: ``scipy.optimize.curve_fit`` on one curve at a
time with the same exact frame model (what a per-curve loop would do).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy.integrate import simpson
from scipy.optimize import curve_fit

from petbind.blood import build_input_function
from petbind.models.plasma import MA1, LoganPlasma, OneTCM, Patlak, TwoTCM
from petbind.timing import FrameTiming

A1, A2, A3 = 851.1225, 21.8798, 20.8113
L1, L2, L3 = 4.133859, 0.01043449, 0.1190996
PB = 1.25
VB = 0.05
TIMING = FrameTiming.from_schedule([(6, 10), (3, 20), (2, 30), (4, 60), (4, 120), (5, 300),
                                    (5, 600)])
LAM = np.log(2) / 20.364


def cp(t):
    t = np.asarray(t, dtype=float)
    return np.where(t >= 0, (A1 * t - A2 - A3) * np.exp(-L1 * t) + A2 * np.exp(-L2 * t)
                    + A3 * np.exp(-L3 * t), 0.0)


def conv_exp(t, k):
    t = np.asarray(t, dtype=float)

    def e(lam):
        return (np.exp(-lam * t) - np.exp(-k * t)) / (k - lam)

    def te(lam):
        d = k - lam
        return np.exp(-lam * t) * (t / d - 1 / d**2) + np.exp(-k * t) / d**2

    return A1 * te(L1) - (A2 + A3) * e(L1) + A2 * e(L2) + A3 * e(L3)


def tissue(t, k1, k2, k3=0.0, k4=0.0):
    if k3 == 0:
        return k1 * conv_exp(t, k2)
    s = k2 + k3 + k4
    disc = np.sqrt(s * s - 4 * k2 * k4)
    a1, a2 = (s - disc) / 2, (s + disc) / 2
    return k1 / (a2 - a1) * ((k3 + k4 - a1) * conv_exp(t, a1) + (a2 - k3 - k4) * conv_exp(t, a2))


def frame_means(f):
    out = []
    for a, d in zip(TIMING.start, TIMING.duration, strict=True):
        tt = np.linspace(a, a + d, 2001)
        out.append(simpson(f(tt), x=tt) / d)
    return np.array(out)


def pet(p):
    return frame_means(lambda t: (1 - VB) * tissue(t, *p) + VB * cp(t) / PB)


def noisy(y, level, n, rng):
    sd = np.sqrt(np.maximum(y, 1e-9) * np.exp(LAM * TIMING.mid) / TIMING.duration)
    sd *= level * y.max() / sd[np.argmax(y)]
    return y + rng.normal(size=(n, y.size)) * sd, 1.0 / sd**2


def vt_of(p):
    return p[0] / p[1] * (1 + (p[2] / p[3] if len(p) == 4 else 0.0))


def median_time(func, repeat=3):
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = func()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer curves")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "plasma.md"))
    args = ap.parse_args()
    rng = np.random.default_rng(2026)
    n_mc = 100 if args.quick else 300
    samples = np.unique(np.concatenate([np.arange(0, 3, 1 / 60), np.arange(3, 90.001, 0.25)]))
    inp = build_input_function(plasma=(samples, cp(samples)),
                               whole_blood=(samples, cp(samples) / PB))
    lines = ["# Plasma-input models: speed and accuracy", "",
             f"`python benchmarks/bench_plasma.py{' --quick' if args.quick else ''}`, "
             f"Python {platform.python_version()}, numpy {np.__version__}, "
             f"{os.cpu_count()} CPU cores on a machine **shared with other engineers' jobs** "
             "(timings are medians of 3 runs and noisy; ratios to the baseline run in the "
             "same process are the meaningful numbers).", "",
             "Truth: Feng 1993 input, closed-form tissue curves, frame means by Simpson's rule "
             "(demo schedule, 29 frames, 90 min), v_B = 0.05; input sampled every 1 s for "
             "3 min then every 15 s.", ""]

    # ---- speed -------------------------------------------------------------
    one = (0.3, 0.15)
    y1 = pet(one)
    batch, w = noisy(y1, 0.02, 200, rng)
    m1 = OneTCM(TIMING, inp)
    t_batch, _ = median_time(lambda: m1.fit(batch, weights=w))
    n_base = 10
    pl = inp.plasma
    cbm = inp.blood.frame_means(TIMING)

    def model(_x, k1, k2, vb):
        return (1 - vb) * k1 * pl.exp_conv_frame_means(k2, TIMING) + vb * cbm

    def baseline():
        out = []
        for i in range(n_base):
            p, _ = curve_fit(model, TIMING.mid, batch[i], p0=(0.1, 0.1, 0.05),
                             sigma=1 / np.sqrt(w), bounds=([0, 1e-4, 0], [10, 10, 0.9]))
            out.append(p)
        return out

    t_base, _ = median_time(baseline)
    rate_b = 200 / t_batch
    rate_0 = n_base / t_base
    lines += ["## Speed", "", "| model | curves | median s | curves/s | vs baseline |",
              "| --- | ---: | ---: | ---: | ---: |",
              f"| baseline: curve_fit 1TCM, one curve at a time | {n_base} | {t_base:.3f} | "
              f"{rate_0:.1f} | 1.0 |",
              f"| 1tcm (batched LM) | 200 | {t_batch:.3f} | {rate_b:.1f} | "
              f"{rate_b / rate_0:.1f} |"]
    y2 = pet((0.3, 0.15, 0.08, 0.05))
    b2, w2 = noisy(y2, 0.02, 50, rng)
    t2, _ = median_time(lambda: TwoTCM(TIMING, inp).fit(b2, weights=w2), repeat=1)
    lines.append(f"| 2tcm (batched LM) | 50 | {t2:.3f} | {50 / t2:.1f} | "
                 f"{50 / t2 / rate_0:.1f} |")
    n_vox = 20_000 if args.quick else 100_000
    vox, _ = noisy(y1, 0.05, n_vox, rng)
    for cls in (LoganPlasma, MA1, Patlak):
        mdl = cls(TIMING, inp, tstar=30.0, vb=VB)
        tv, _ = median_time(lambda mdl=mdl: mdl.fit(vox))
        lines.append(f"| {cls.name} (t* = 30 min) | {n_vox} | {tv:.3f} | {n_vox / tv:,.0f} | "
                     f"{n_vox / tv / rate_0:,.0f} |")
    lines.append("")

    # ---- accuracy ------------------------------------------------------------
    cases = {"1TCM K1=0.3 k2=0.15 (V_T 2)": one,
             "2TCM K1=0.4 k2=0.3 k3=0.2 k4=0.3 (V_T 2.22)": (0.4, 0.3, 0.2, 0.3),
             "2TCM K1=0.3 k2=0.15 k3=0.08 k4=0.05 (V_T 5.2)": (0.3, 0.15, 0.08, 0.05)}
    lines += ["## Monte Carlo accuracy of V_T", "",
              f"{n_mc} noisy curves per cell; bias = median relative error, CV = robust SD "
              "(1.4826 MAD) / truth, valid = fraction with a valid fit. Graphical methods "
              "use t* = 30 min and the known v_B.", "",
              "| truth | noise (% of peak) | model | bias % | CV % | valid |",
              "| --- | ---: | --- | ---: | ---: | ---: |"]
    for label, p in cases.items():
        y = pet(p)
        vt = vt_of(p)
        for level in (0.01, 0.03, 0.05):
            data, wts = noisy(y, level, n_mc, rng)
            models = {"1tcm": OneTCM(TIMING, inp), "2tcm": TwoTCM(TIMING, inp),
                      "logan-plasma": LoganPlasma(TIMING, inp, tstar=30.0, vb=VB),
                      "ma1": MA1(TIMING, inp, tstar=30.0, vb=VB)}
            for name, mdl in models.items():
                fit = mdl.fit(data, weights=wts)
                err = fit.vt[fit.valid] / vt - 1
                med = np.median(err) if err.size else np.nan
                mad = 1.4826 * np.median(np.abs(err - med)) if err.size else np.nan
                lines.append(f"| {label} | {level * 100:.0f} | {name} | {100 * med:+.2f} | "
                             f"{100 * mad:.2f} | {fit.valid.mean():.2f} |")
            print(label, level, flush=True)
    lines.append("")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
