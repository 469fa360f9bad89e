"""The study level of ``petbind run`` after the scans: outcome table and voxel statistics.

:func:`outcome_table` gathers every scan's fits (with the simulator's truth
when there is one, :func:`truth_table`); :func:`voxel_statistics` runs the
sign-flip permutation test of every contrast on the tracers' BP_ND maps. The
region statistics beyond the paired tests are :mod:`petbind.study.stats_stage`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from petbind.errors import DataError
from petbind.io.atomic import write_text_atomic
from petbind.study.config import StudyConfig
from petbind.study.discover import Scan
from petbind.study.layout import StudyLayout, read_table
from petbind.study.regions import scan_atlas
from petbind.study.scan_stage import scan_outputs
from petbind.study.tables import outcome_rows, table_text, with_scan_columns


def truth_table(bids: Path, config: StudyConfig) -> pd.DataFrame | None:
    """The simulator's truth per subject x condition x tracer x region, or None.

    ``dataset.truth``: ``"none"``; ``"auto"`` (``derivatives/petbind-sim/truth.tsv``
    when present); or a path (relative to the BIDS root).
    """
    if config.truth == "none":
        return None
    path = (bids / "derivatives" / "petbind-sim" / "truth.tsv" if config.truth == "auto"
            else Path(config.truth) if Path(config.truth).is_absolute()
            else bids / config.truth)
    if not path.exists():
        if config.truth != "auto":
            raise DataError("the truth table does not exist", path=path, field="dataset.truth",
                            fix="give the simulator's truth.tsv, 'auto' or 'none'")
        return None
    t = read_table(path)
    keep = ["subject", "condition", "tracer", "region", "bp_nd", "r1"]
    missing = [c for c in keep if c not in t.columns]
    if missing:
        raise DataError(f"the truth table lacks columns {missing}", path=path,
                        field=missing[0], fix="use the simulator's truth.tsv")
    return t[keep].rename(columns={"bp_nd": "bp_nd_true", "r1": "r1_true"})


def outcome_table(scans: list[Scan], out_dir: Path,
                  truth: pd.DataFrame | None = None) -> pd.DataFrame:
    """The tidy outcome table from every scan's ``_fits.tsv`` (docs/outputs.md)."""
    df = outcome_rows(((s, scan_outputs(out_dir, s).fits) for s in scans), truth)
    image = _image_truth(scans, out_dir)
    if image is not None:
        keys = ["subject", "condition", "tracer", "run", "region", "model"]
        df["run"] = df["run"].astype(object)
        df = df.merge(image, on=keys, how="left")
        after = "bp_nd_true" if "bp_nd_true" in df.columns else "valid"
        order = [c for c in df.columns if c != "bp_nd_true_image"]
        order.insert(order.index(after) + 1, "bp_nd_true_image")
        df = df[order]
    return df


def _image_truth(scans: list[Scan], out_dir: Path) -> pd.DataFrame | None:
    """``bp_nd_true_image`` of every scan with a ``_desc-noisefree_fits.tsv`` (else None)."""
    frames = []
    for s in scans:
        p = scan_outputs(out_dir, s).noisefree_fits
        if s.noisefree is None or not p.exists():
            continue
        f = read_table(p)[["region", "model", "bp_nd"]].rename(
            columns={"bp_nd": "bp_nd_true_image"})
        frames.append(with_scan_columns(f, s))
    if not frames:
        return None
    out = pd.concat(frames, ignore_index=True)
    out["run"] = out["run"].astype(object)
    return out


def _load_map(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from petbind.io.images import read_volume

    vol = read_volume(path, dtype=np.float64)
    return vol.data, vol.affine


def _compact(values: np.ndarray) -> np.ndarray:
    """``values`` (float64) as float32 when that is exact (maps are stored as float32), else as is.

    Converting back to float64 then gives the same numbers bit for bit, so the
    statistics do not change while a study's maps take half the memory.
    """
    small = values.astype(np.float32)
    return small if np.array_equal(small.astype(np.float64), values, equal_nan=True) else values


@dataclass
class _VoxelJob:
    """One tracer x contrast of :func:`voxel_statistics`, ready for its flips."""

    tracer: str
    model: str
    contrast: Any
    subjects: list[str]
    prep: Any            # petbind.stats.voxel.SignFlipInput
    affine: np.ndarray


def voxel_statistics(scans: list[Scan], config: StudyConfig, out_dir: Path, *,
                     plan: Any = None, scheduler: Any = None) -> tuple[list[Path], list[str]]:
    """Sign-flip voxel statistics of every contrast on the tracers' BP_ND maps.

    ``start_voxel_statistics(...).finish()``: the flips run while this waits.
    """
    return start_voxel_statistics(scans, config, out_dir, plan=plan,
                                  scheduler=scheduler).finish()


def start_voxel_statistics(scans: list[Scan], config: StudyConfig, out_dir: Path, *,
                           plan: Any = None, scheduler: Any = None) -> VoxelStatistics:
    """Prepare the sign-flip voxel statistics and send their flips; :meth:`VoxelStatistics.finish`
    merges them and writes the outputs.

    Without preprocessing the maps are the scans' own (every scan on one PET
    grid) and the analysis mask comes from the first scan's atlas. With a
    preprocessing ``plan`` the maps are the ``STEM_space-template_model-<m>``
    ones (subjects in native positions brought to the template) and the
    analysis mask is the template atlas on that grid.

    Only the analysis mask's voxels of each map are kept (float32 when the
    maps are, which is exact). The flips of every tracer x contrast run as
    tasks of one compute engine (``scheduler``: any ``--scheduler`` value of
    :func:`petbind.compute.parse_scheduler`, or the client of
    :func:`petbind.compute.shared_scheduler`; None: in this process),
    :func:`petbind.stats.voxel_null.flip_null_tasks`: ranges of flips, or slabs of
    planes when a contrast's values exceed ``SLAB_BYTES``, so that a worker's
    memory does not grow with the subjects; the p-values, maps and cluster
    tables are made here from the merged null distributions and do not depend
    on where the flips ran.
    """
    from petbind.stats.voxel import prepare_sign_flip

    vx = config.statistics.voxel
    notes: list[str] = []
    jobs: list[_VoxelJob] = []
    for tracer, tcfg in config.tracers.items():
        mine = [s for s in scans if s.tracer == tracer]
        if not tcfg.map_model or not mine:
            continue
        model = tcfg.map_model
        maps: dict[tuple[str, str], list[np.ndarray]] = {}
        affine = None
        shape = None
        space = "template" if plan is not None else None
        for s in mine:
            so = scan_outputs(out_dir, s)
            bp, aff = _load_map(so.map(model, "bpnd", space))
            valid, _ = _load_map(so.map(model, "mask", space))
            if shape is None:
                shape, affine = bp.shape, aff
                if plan is not None:
                    from petbind.study.preprocess import template_atlas

                    atlas, names = template_atlas(plan, shape, aff)
                elif s.segmentation is not None:
                    from petbind.study.segmentation import labels_on_grid

                    atlas, names = labels_on_grid(s.segmentation, shape, aff)
                else:
                    atlas, names = scan_atlas(s, shape, aff)
                if config.regions:
                    from petbind.study.regions import resolve_regions

                    groups = resolve_regions(config.regions, list(names.values()))
                    names = {k: next(r for r, m in groups.items() if n in m)
                             for k, n in names.items()
                             if any(n in m for m in groups.values())}
                analysis = np.isin(atlas, [k for k, v in names.items()
                                           if v not in tcfg.exclude_regions
                                           and v != tcfg.reference_region])
            elif bp.shape != shape or not np.allclose(aff, affine, atol=1e-3):
                notes.append(f"voxel statistics of {tracer} skipped: the maps of "
                             f"{s.stem} are on another grid (no common space)")
                shape = None
                break
            maps.setdefault((s.subject, s.condition), []).append(
                _compact(np.where(valid[analysis] > 0, bp[analysis], np.nan)))
            del bp, valid
        if shape is None:
            continue
        mean_maps = {k: np.mean(np.asarray(v, dtype=np.float64), axis=0)
                     for k, v in maps.items()}
        del maps
        subjects = sorted({k[0] for k in mean_maps})
        for c in config.contrasts:
            subj = [s for s in subjects if all((s, x) in mean_maps for x in c.conditions)]
            if len(subj) < 2:
                notes.append(f"voxel statistics of {tracer} {c.expr} skipped: "
                             f"{len(subj)} subject(s) with every condition")
                continue
            # (subjects, analysis voxels)
            stack = {x: np.stack([mean_maps[(s, x)] for s in subj]) for x in c.conditions}
            a, b, effect = c.combine(stack)
            diffs = a - b
            effect = np.where(np.isfinite(effect), effect, np.nan)
            prep = prepare_sign_flip(
                diffs, analysis, affine=affine, effect=effect,
                cluster_forming_p=vx.cluster_forming_p, n_permutations=vx.n_permutations,
                seed=vx.seed, smoothing_fwhm_mm=vx.smoothing_fwhm_mm, atlas=atlas,
                atlas_names=names)
            jobs.append(_VoxelJob(tracer, model, c, subj, prep, affine))
            del stack, a, b, effect, diffs
        del mean_maps
    return VoxelStatistics(jobs, notes, out_dir, scheduler)


class VoxelStatistics:
    """The flips of :func:`start_voxel_statistics`' jobs, running; :meth:`finish` ends them.

    On a cluster (``scheduler`` a client of :func:`petbind.compute.shared_scheduler`,
    a local cluster or a scheduler address) the flip tasks are sent at once and
    a background thread only waits for them (it runs no statistics and draws no
    warnings of its own), so that this process can go on, e.g. with the region
    statistics, while the workers flip. In-process (``sync``, ``threads``, None)
    the flips run in :meth:`finish`, as before. The results do not depend on it.
    """

    def __init__(self, jobs: list[_VoxelJob], notes: list[str], out_dir: Path,
                 scheduler: Any) -> None:
        import contextlib
        from concurrent.futures import ThreadPoolExecutor

        from petbind.compute import open_engine, parse_scheduler
        from petbind.stats.voxel_null import flip_null_tasks, run_flip_tasks

        self.jobs, self.notes, self.out_dir = jobs, notes, out_dir
        self._stack = contextlib.ExitStack()
        self._future: Any = None
        self._pool: Any = None
        self._run: Any = None
        if not jobs:
            return
        engine = self._stack.enter_context(open_engine(scheduler, default="sync"))
        self.tasks = [flip_null_tasks(j.prep.d, j.prep.flips, j.prep.mask, j.prep.threshold,
                                      engine, key=f"petbind-voxel-{k}-flips")
                      for k, j in enumerate(jobs)]
        flat = [t for ts in self.tasks for t in ts]
        if parse_scheduler(scheduler, default="sync").kind in ("local", "client", "address"):
            self._pool = ThreadPoolExecutor(max_workers=1,
                                            thread_name_prefix="petbind-voxel-flips")
            self._future = self._pool.submit(run_flip_tasks, engine, flat)
        else:
            self._run = lambda: run_flip_tasks(engine, flat)

    def finish(self) -> tuple[list[Path], list[str]]:
        """Wait for the flips, then the p-values, maps and cluster tables: ``(written, notes)``."""
        from petbind.stats.voxel import finish_sign_flip
        from petbind.stats.voxel_null import merge_flip_null

        if not self.jobs:
            return [], self.notes
        with self._stack:
            if self._future is not None:
                results = self._future.result()
                self._pool.shutdown()
            else:
                results = self._run()
        written: list[Path] = []
        lay = StudyLayout(self.out_dir)
        for j, ts in zip(self.jobs, self.tasks, strict=True):
            res = finish_sign_flip(j.prep, merge_flip_null([results.pop(t.key) for t in ts]))
            written.extend(_write_voxel_outputs(lay, j, res))
        return written, self.notes

    def cancel(self) -> None:
        """Stop waiting (a stage before :meth:`finish` failed): the flips' results are
        dropped once they arrive; nothing is written."""
        if self._future is not None:  # the thread ends when the engine closes
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._stack.close()


def _write_voxel_outputs(lay: StudyLayout, j: _VoxelJob, res: Any) -> list[Path]:
    """The maps, mask and cluster table of one tracer x contrast (docs/outputs.md)."""
    from petbind.io.bids import save_image

    c, affine = j.contrast, j.affine
    pre = lay.voxel_prefix(j.tracer, j.model, c.name)
    side = {"Tracer": j.tracer, "Model": j.model, "Contrast": c.expr,
            "Subjects": j.subjects, **res.info,
            "Note": (f"sign-flip permutation over {res.info['n_flips']} flips "
                     f"({'exact enumeration' if res.info['exact'] else 'random'}); "
                     f"the smallest attainable FWE p is "
                     f"{res.info['min_attainable_p']:.4g}")}
    written = []
    for tag, vol, what in (("stat-t", res.t, "paired t"),
                           ("stat-effect", res.effect, "mean % change"),
                           ("stat-p", res.p, "uncorrected two-sided p"),
                           ("stat-pfwe", res.p_fwe, "voxel-level FWE p"),
                           ("stat-pfdr", res.p_fdr, "BH-adjusted p")):
        written.append(save_image(Path(f"{pre}_{tag}.nii.gz"),
                                  vol.astype(np.float32), affine,
                                  {**side, "Statistic": what}))
    written.append(save_image(Path(f"{pre}_mask.nii.gz"),
                              res.mask.astype(np.uint8), affine,
                              {**side, "Statistic": "analysis mask"}))
    written.append(write_text_atomic(Path(f"{pre}_clusters.tsv"), table_text(res.clusters)))
    return written
