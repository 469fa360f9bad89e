"""Benchmark reading a 4D BIDS-PET image: time and peak memory of petbind's readers.

A synthetic 96 x 96 x 48 x 29 float32 image (51 MB) with a JSON sidecar is
written as ``.nii`` and ``.nii.gz``. For each, in one process and ``--repeats``
times (median reported):

- baseline: ``nibabel.load(p, mmap=False).get_fdata(dtype=float32)`` (reads the
  whole array);
- ``load_pet`` + ``DynamicImage.get_data()`` (whole array, float32, scaled);
- ``voxel_curves(mask)`` for a 50 % mask (an ellipsoid);
- ``iter_chunks(mask, 50_000)`` consumed chunk by chunk;
- ``region_means(labels)`` for 20 labels.

Peak memory is Python-allocated memory (``tracemalloc``) during the call,
given as a multiple of the float32 image size. Writes
``benchmarks/results/io.md``. The machine is shared (2 cores, other engineers'
tests running): compare ratios, not absolute times.

Usage: ``python benchmarks/bench_io.py [--repeats N]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (96, 96, 48)
N_FRAMES = 29


def _measure(fn, repeats: int) -> tuple[float, float]:
    times, peaks = [], []
    for _ in range(repeats):
        tracemalloc.start()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return statistics.median(times), max(peaks)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from petbind.io.bids import load_pet
    from petbind.timing import FrameTiming

    rng = np.random.default_rng(0)
    data = rng.uniform(0, 20, SHAPE + (N_FRAMES,)).astype(np.float32)
    nbytes = data.nbytes
    grid = np.indices(SHAPE).astype(float)
    centre = (np.array(SHAPE) - 1)[:, None, None, None] / 2
    r = np.sqrt((((grid - centre) / (np.array(SHAPE)[:, None, None, None] * 0.49)) ** 2).sum(0))
    mask = r < 0.985  # about half the voxels
    labels = np.where(mask, 1 + (np.arange(mask.size).reshape(SHAPE) % 20), 0)
    timing = FrameTiming.from_schedule([(6, 10), (3, 20), (2, 30), (4, 60), (4, 120), (5, 300),
                                        (5, 600)], unit="s")
    side = {**timing.to_bids(), "Units": "Bq/mL", "TracerRadionuclide": "C11",
            "ImageDecayCorrected": False, "ImageDecayCorrectionTime": 0, "InjectionStart": 0,
            "ScanStart": 0, "TimeZero": "10:00:00"}
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for ext in (".nii", ".nii.gz"):
            p = Path(d) / f"sub-01_pet{ext}"
            nib.save(nib.Nifti1Image(data, np.eye(4)), str(p))
            Path(d, "sub-01_pet.json").write_text(json.dumps(side))
            cases = {
                "nibabel get_fdata(float32) [baseline]":
                    lambda p=p: nib.load(str(p), mmap=False).get_fdata(dtype=np.float32),
                "load_pet + get_data": lambda p=p: load_pet(p).get_data(),
                "load_pet + voxel_curves(50 % mask)": lambda p=p: load_pet(p).voxel_curves(mask),
                "load_pet + iter_chunks(mask, 50000)":
                    lambda p=p: [c.shape for _, c in load_pet(p).iter_chunks(mask, 50_000)],
                "load_pet + region_means(20 labels)":
                    lambda p=p: load_pet(p).region_means(labels),
            }
            base = None
            for name, fn in cases.items():
                t, peak = _measure(fn, args.repeats)
                base = t if base is None else base
                rows.append((ext, name, t, t / base, peak / nbytes))
                print(f"{ext:8s} {name:42s} {t:7.3f} s  x{t / base:5.2f}  "
                      f"peak {peak / nbytes:4.2f}")
    load = os.getloadavg()
    lines = [
        "# Reading a 4D PET image (benchmarks/bench_io.py)",
        "",
        f"Image {SHAPE} x {N_FRAMES} frames float32 ({nbytes / 1e6:.0f} MB), uncorrected Bq/mL "
        "(load_pet converts to kBq/mL and decay-corrects per frame); mask = "
        f"{mask.mean():.0%} of voxels. Median of {args.repeats} runs in one process; peak = "
        "largest tracemalloc peak over the runs / image size. Shared 2-core machine "
        f"(other engineers' tests running; load average {load[0]:.1f} {load[1]:.1f} "
        f"{load[2]:.1f}): compare ratios within a file type, not absolute times. "
        "Frame-wise readers hold one block of frames (16 MB, `DynamicImage.BLOCK_BYTES`) "
        "besides their output, so their peak / image falls for larger images.",
        "",
        "| file | operation | median s | ratio to baseline | peak / image |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {e} | {n} | {t:.3f} | {r:.2f} | {pk:.2f} |" for e, n, t, r, pk in rows]
    out = Path(__file__).parent / "results" / "io.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(out)


if __name__ == "__main__":
    main()
