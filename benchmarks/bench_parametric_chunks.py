"""MRTM2 maps at 10^6 voxels: repeated, alternating runs per chunk size (wall clock).

MRTM2's speed sits close to its target (issue 6: >= 5 M voxels/s on 2
cores), so one median of 3 is not enough to say which side it is on. This
script fits the seeded image of ``bench_parametric.py`` with
``chunk_voxels`` = automatic / 50,000 / 25,000 / 12,500, alternating the
sizes in every round (so drifts of the machine's load hit all of them), and
writes every measurement and the medians to
``benchmarks/results/parametric_chunks.md``.

Run: ``python benchmarks/bench_parametric_chunks.py [--rounds 4]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import bench_parametric as base

from petbind.io.atomic import write_text_atomic

N_VOX = 1_000_000
CHUNKS = (None, 50_000, 25_000, 12_500)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "results" / "parametric_chunks.md")
    args = ap.parse_args()
    load0 = os.getloadavg()
    rates: dict[int | None, list[float]] = {c: [] for c in CHUNKS}
    with tempfile.TemporaryDirectory() as tmp:
        curves, _bp, _r1, ref = base.synthetic(N_VOX)
        path, mpath = base.write_image(curves, ref, Path(tmp))
        masks = dict(np.load(mpath))
        masks.pop("order")
        base.run(path, masks, "mrtm2")  # warm-up: imports, page cache
        for _ in range(args.rounds):
            for c in CHUNKS:
                fit_s, _wall, _res = base.run(path, masks, "mrtm2", chunk=c)
                rates[c].append(N_VOX / fit_s)
    load1 = os.getloadavg()
    lines = [
        "# MRTM2 maps: chunk size and run-to-run spread",
        "",
        f"`python benchmarks/bench_parametric_chunks.py --rounds {args.rounds}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs). "
        f"Load average (1 min) {load0[0]:.2f} before, {load1[0]:.2f} after. "
        f"{N_VOX:,} voxels, 29 frames, the seeded data of `bench_parametric.py`, default "
        "scheduler (dask threads); fit wall time of `parametric_maps` "
        "(`ParametricResult.elapsed_s`); chunk sizes alternate within every round.",
        "",
        "| chunk_voxels | voxels/s per round (M) | median (M) |",
        "| --- | --- | ---: |",
    ]
    for c in CHUNKS:
        r = np.array(rates[c]) / 1e6
        lines.append(f"| {'auto' if c is None else f'{c:,}'} | "
                     f"{', '.join(f'{x:.2f}' for x in r)} | {np.median(r):.2f} |")
    lines += ["", "Issue 6 target: MRTM2 >= 5 M voxels/s on 2 cores (wall clock)."]
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
