"""Delay and v_B from the early-frame 1TCM pre-fit: accuracy and cost.

Run on demand: ``.venv/bin/python benchmarks/bench_plasma_prefit.py [--quick] [--delay-only]``.
Writes ``benchmarks/results/plasma_prefit.md`` (``--delay-only``: only the last
section, to ``benchmarks/results/delay_fit.md``).

Truth: the generator of ``bench_plasma.py`` (Feng 1993 input, closed-form
1TCM / 2TCM curves, frame means by Simpson's rule, v_B = 0.05, counts-like
noise), with an arterial line that records the input 12 s late (samples of
``C_P(t - 0.2)``): the true delay is -0.2 min.

Monte Carlo: Logan and MA1 (t* = 30 min) given the true delay and v_B, given
nothing (delay 0, v_B 0: the only choice before the pre-fit existed), and
with ``delay="fit", vb="fit"``. Cost: the same graphical fit with and
without the pre-fit, and 2TCM ``delay="fit"`` with and without the
full-model refinement of the delay, each pair timed in the same process.

Delay fit: :func:`petbind.models.delay.fit_delay` (the compartment models'
one-tissue engine with the candidate delays on the batch axis) against the
algorithm it replaced (``_delay_previous.py``), CPU and wall time in the same
process, and the delays both find on noiseless curves.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import time

from _delay_previous import fit_delay_previous
from bench_plasma import PB, TIMING, VB, cp, median_time, noisy, pet, vt_of

from petbind.blood import build_input_function
from petbind.io.atomic import write_text_atomic
from petbind.models.delay import fit_delay
from petbind.models.plasma import MA1, LoganPlasma, TwoTCM

LAG = 0.2  # min: the arterial line sees the input this late
STEP = 1.0 / 60.0


def late_line_input(lag=LAG):
    """Input sampled like an arterial line (1 s for 3 min, then 15 s), ``lag`` min late."""
    s = np.unique(np.concatenate([np.arange(0, 3, STEP), np.arange(3, 90.001, 0.25)]))
    c = cp(s - lag)
    return build_input_function(plasma=(s, c), whole_blood=(s, c / PB))


def robust(err):
    med = float(np.median(err))
    return 100 * med, 100 * 1.4826 * float(np.median(np.abs(err - med)))


def _cpu_wall(func, repeat):
    """Least CPU (user + sys of this process) and wall seconds over ``repeat`` runs."""
    cpu, wall = [], []
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        func()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
    return min(cpu), min(wall)


def delay_section(rng, quick: bool) -> list[str]:
    """The delay fit: the engine vs the previous algorithm, same process, same curves."""
    lines = ["## Delay fit: the compartment engine vs the previous algorithm", "",
             "Early frames (ending by 10 min) of 1TCM curves (K1 0.3, k2 0.15, v_B 0.05) "
             "on the Feng input, the tissue seeing the input at the delay below; search "
             "+-1 min, 1-s step. Each row times both functions on the same curves, "
             "alternating, least of the repeats; CPU = user + sys of this process.", "",
             "| curves | noise (% of peak) | previous CPU s | engine CPU s | ratio CPU | "
             "previous wall s | engine wall s | ratio wall |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    inp = late_line_input()
    base = pet((0.3, 0.15))
    for n, level, repeat in ((3, 0.01, 5), (64, 0.03, 3), (256, 0.03, 2),
                             *(() if quick else ((2000, 0.03, 1),))):
        data, _ = noisy(base, level, n, rng)
        old = _cpu_wall(lambda d=data: fit_delay_previous(inp, TIMING, d), repeat)
        new = _cpu_wall(lambda d=data: fit_delay(inp, TIMING, d), repeat)
        lines.append(f"| {n} | {level * 100:.0f} | {old[0]:.3f} | {new[0]:.3f} | "
                     f"{new[0] / old[0]:.2f} | {old[1]:.3f} | {new[1]:.3f} | "
                     f"{new[1] / old[1]:.2f} |")
        print("delay", n, flush=True)
    lines += ["", "Noiseless curves, the arterial line recording the input `lag` s late "
              "(true delay = -lag): delay found (s) and v_B (truth 0.05).", "",
              "| true delay s | previous s | previous v_B | engine s | engine v_B |",
              "| ---: | ---: | ---: | ---: | ---: |"]
    y = pet((0.3, 0.15))[None]
    for lag in (0.0, 0.05, 0.123, 0.2, 0.5, 0.77):
        line = late_line_input(lag)
        a = fit_delay_previous(line, TIMING, y)
        b = fit_delay(line, TIMING, y)
        lines.append(f"| {-lag * 60:+.2f} | {a.delay[0] * 60:+.0f} | {a.vb[0]:.4f} | "
                     f"{b.delay[0] * 60:+.0f} | {b.vb[0]:.4f} |")
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer curves")
    ap.add_argument("--delay-only", action="store_true",
                    help="only the delay-fit comparison (writes results/delay_fit.md)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                         "plasma_prefit.md"))
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    if args.delay_only:
        out = Path(__file__).parent / "results" / "delay_fit.md"
        text = "\n".join(["# Delay fit: the compartment engine vs the previous algorithm", "",
                          f"`python benchmarks/bench_plasma_prefit.py --delay-only"
                          f"{' --quick' if args.quick else ''}`, Python "
                          f"{platform.python_version()}, numpy {np.__version__}, "
                          f"{os.cpu_count()} CPU cores on a machine **shared with other "
                          "engineers' jobs** (wall times are inflated; ratios within one "
                          "row are the meaningful numbers).", "",
                          *delay_section(rng, args.quick)]) + "\n"
        print(text, end="")
        print(f"wrote {write_text_atomic(out, text)}")
        return
    n_mc = 60 if args.quick else 200
    inp = late_line_input()
    lines = ["# Graphical methods with the delay / v_B pre-fit", "",
             f"`python benchmarks/bench_plasma_prefit.py{' --quick' if args.quick else ''}`,"
             f" Python {platform.python_version()}, numpy {np.__version__}, "
             f"{os.cpu_count()} CPU cores on a machine **shared with other engineers' jobs** "
             "(load average 5-8 while this ran; timings are medians and noisy, ratios within "
             "one run are the meaningful numbers).", "",
             "Truth: Feng 1993 input, closed-form tissue curves, v_B = 0.05, the arterial "
             f"line {LAG * 60:.0f} s late (true delay {-LAG:g} min); Logan and MA1 with "
             "t* = 30 min.", ""]

    # ---- accuracy ----------------------------------------------------------------
    cases = {"1TCM K1=0.3 k2=0.15 (V_T 2)": (0.3, 0.15),
             "2TCM K1=0.4 k2=0.3 k3=0.2 k4=0.3 (V_T 2.22)": (0.4, 0.3, 0.2, 0.3),
             "2TCM K1=0.3 k2=0.15 k3=0.08 k4=0.05 (V_T 5.2)": (0.3, 0.15, 0.08, 0.05)}
    settings = {"true delay and v_B": {"delay": -LAG, "vb": VB},
                "none (delay 0, v_B 0)": {"delay": 0.0, "vb": 0.0},
                "pre-fit (fit, fit)": {"delay": "fit", "vb": "fit"}}
    lines += ["## Monte Carlo accuracy of V_T", "",
              f"{n_mc} noisy curves per row; bias = median relative error of V_T, CV = "
              "robust SD (1.4826 MAD) / truth; for the pre-fit also the median fitted delay, "
              "the share of curves whose delay is within one 1-s step of the truth, and the "
              "median v_B.", "",
              "| truth | noise (% of peak) | model | delay / v_B | bias % | CV % | "
              "delay s | within 1 s | v_B |",
              "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for label, p in cases.items():
        y = pet(p)
        vt = vt_of(p)
        for level in (0.01, 0.03, 0.05):
            data, _ = noisy(y, level, n_mc, rng)
            for cls in (LoganPlasma, MA1):
                for how, kw in settings.items():
                    fit = cls(TIMING, inp, tstar=30.0, **kw).fit(data)
                    bias, cv = robust(fit.vt[fit.valid] / vt - 1)
                    extra = "| | |"
                    if kw["delay"] == "fit":
                        d = fit.params["delay"][fit.valid]
                        near = np.mean(np.abs(d + LAG) <= STEP + 1e-9)
                        extra = (f"| {np.median(d) * 60:+.0f} | {near:.2f} | "
                                 f"{np.median(fit.params['vb'][fit.valid]):.4f}")
                    lines.append(f"| {label} | {level * 100:.0f} | {cls.name} | {how} | "
                                 f"{bias:+.2f} | {cv:.2f} {extra} |")
            print(label, level, flush=True)
    lines.append("")

    # ---- cost ------------------------------------------------------------------
    n_vox = 500 if args.quick else 2000
    vox, _ = noisy(pet((0.3, 0.15)), 0.03, n_vox, rng)
    given = LoganPlasma(TIMING, inp, tstar=30.0, delay=-LAG, vb=VB)
    prefit = LoganPlasma(TIMING, inp, tstar=30.0, delay="fit", vb="fit")
    t_given, _ = median_time(lambda: given.fit(vox))
    t_pre, _ = median_time(lambda: prefit.fit(vox), repeat=1)
    lines += ["## Cost", "",
              "| fit | curves | median s | curves/s | time vs given |",
              "| --- | ---: | ---: | ---: | ---: |",
              f"| logan-plasma, given delay and v_B | {n_vox} | {t_given:.3f} | "
              f"{n_vox / t_given:,.0f} | 1.0 |",
              f"| logan-plasma, delay and v_B fitted | {n_vox} | {t_pre:.3f} | "
              f"{n_vox / t_pre:,.0f} | {t_pre / t_given:.0f} |", ""]

    # ---- 2TCM delay: pre-fit alone vs refined with the full model ----------------
    two = [(0.4, 0.3, 0.2, 0.3), (0.3, 0.15, 0.08, 0.05)]
    n2 = 10 if args.quick else 40
    truth = np.repeat([vt_of(q) for q in two], n2 // 2)
    lines += ["## 2TCM `delay=\"fit\"`: pre-fit delay alone vs refined (+-2 steps)", "",
              f"{n2} curves per row (half of each 2TCM case above); exact = share of curves "
              "with the true delay, |d| = mean absolute delay error.", "",
              "| noise (% of peak) | delay_refine | s | exact | abs delay error s | "
              "median abs V_T error % | median abs k3 error % |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for level in (0.0, 0.005, 0.01):
        if level:
            b2 = np.concatenate([noisy(pet(q), level, n2 // 2, rng)[0] for q in two])
        else:
            b2 = np.repeat([pet(q) for q in two], n2 // 2, axis=0)
        k3 = np.repeat([q[2] for q in two], n2 // 2)
        for refine in (0, 2):
            t_fit, f = median_time(lambda r=refine, b=b2: TwoTCM(
                TIMING, inp, delay="fit", delay_refine=r).fit(b), repeat=1)
            lines.append(f"| {level * 100:.1f} | {refine} | {t_fit:.1f} | "
                         f"{np.mean(np.abs(f.delay + LAG) < 1e-9):.2f} | "
                         f"{60 * np.mean(np.abs(f.delay + LAG)):.2f} | "
                         f"{100 * np.median(np.abs(f.vt / truth - 1)):.2f} | "
                         f"{100 * np.median(np.abs(f.k3 / k3 - 1)):.1f} |")
        print("2tcm", level, flush=True)
    lines.append("")
    lines += delay_section(rng, args.quick)
    text = "\n".join(lines) + "\n"
    print(text, end="")
    print(f"wrote {write_text_atomic(args.out, text)}")


if __name__ == "__main__":
    sys.exit(main())
