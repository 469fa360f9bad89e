"""The main job: a BIDS study from dynamic scans to corrected statistics.

``run_study`` does, in order (docs/architecture.md, "The job, as data
flowing"; output files in docs/outputs.md):

1. discover the scans (:func:`petbind.study.discover.discover_scans`);
2. per scan (:func:`petbind.study.scan_stage.process_scan`, one task each of
   the study's task graph, :func:`study_tasks`, run by :mod:`petbind.compute`
   in-process or on dask):
   load and validate the image (:func:`petbind.io.bids.load_pet`), region
   TACs from the PET-space atlas (labels pooled by the dseg.tsv ``region``
   column), k2' by the tracer's strategy, every configured region model
   (the model registry), the parametric map of the tracer's ``map_model``
   (:func:`petbind.parametric.parametric_maps`), and the scan's provenance.
   With ``[preprocess] enabled`` each subject's T1w is first registered to
   the template once (:func:`petbind.study.preprocess.prepare_subject`, a
   task of its own that the subject's scan tasks wait for), each
   scan is preprocessed in its task before the fits
   (:func:`petbind.study.preprocess.preprocess_study_scan`), the realigned
   image is fitted with the atlas preprocessing put on its grid, and the
   BP_ND map is also written in template space;
3. per study: the outcome table, region statistics, mixed models, voxel
   statistics on the parametric maps (:mod:`petbind.study.group_stage`,
   :mod:`petbind.study.stats_stage`), ``summary.json`` and
   ``provenance.json``.

A scan whose provenance matches (same inputs, settings, version, intact
outputs) is skipped, so a rerun is cheap and a run killed at any point
resumes to the same outputs: every file is written atomically and the
provenance of a scan is written after its other outputs. Which subjects and
scans are current is decided in this process before any task is sent
(:func:`current_tasks`), so a rerun over complete outputs sends no task and
starts no worker for them.

This module is the orchestration: which stage runs when, on which engine, in
which locked output folder. The stages live below it (``scan_stage`` ->
``region_fits``, ``regions``, ``pvc``; ``group_stage``; ``stats_stage``;
``tables``); the names other code imports from here (:func:`run_study`,
:func:`process_scan`, :func:`outcome_table` ...) stay importable from here.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from petbind.errors import PetbindError
from petbind.io.atomic import write_json_atomic, write_text_atomic
from petbind.study.config import StudyConfig
from petbind.study.console import progress_bar
from petbind.study.discover import Scan, discover_scans
from petbind.study.group_stage import (
    outcome_table,
    start_voxel_statistics,
    truth_table,
    voxel_statistics,
)
from petbind.study.layout import OUTPUT_NAME, StudyLayout
from petbind.study.provenance import environment, settings_digest
from petbind.study.region_fits import estimate_k2prime, model_kwargs
from petbind.study.scan_stage import ScanResult, process_scan, scan_dir, scan_outputs
from petbind.study.tables import OUTCOME_PARAMS, for_stats, table_text

__all__ = ["OUTCOME_PARAMS", "ScanResult", "StudyResult", "check_output_location",
           "current_tasks", "estimate_k2prime", "model_kwargs", "outcome_table", "process_scan",
           "run_scans", "run_study", "scan_dir", "scan_outputs", "study_tasks", "voxel_statistics"]


# ----------------------------------------------------------------------------
# execution: in-process or dask
# ----------------------------------------------------------------------------
def _register_subject(plan: Any, subject: str, out_dir: Path) -> tuple[str, bool, float]:
    """Task: one subject's T1w -> template registration (cached); small result for dask."""
    from petbind.study.preprocess import prepare_subject

    t = time.perf_counter()
    _, skipped = prepare_subject(plan, subject, out_dir)
    return subject, skipped, time.perf_counter() - t


def study_tasks(scans: list[Scan], config: StudyConfig, out_dir: Path, *,
                plan: Any = None) -> list[Any]:
    """The study's per-subject and per-scan work as one task graph (:class:`petbind.compute.Task`).

    With a preprocessing ``plan`` each subject's T1w -> template registration
    is a task (``petbind-subject-<label>``) and every scan of that subject
    waits for it; each scan (``petbind-scan-<stem>``) then preprocesses,
    fits and maps itself (:func:`process_scan`).
    """
    from petbind.compute import Task

    tasks: list[Task] = []
    after: dict[str, tuple[str, ...]] = {}
    if plan is not None:
        for subject in sorted({s.subject for s in scans}):
            key = f"petbind-subject-{subject}"
            tasks.append(Task(key, _register_subject, (plan, subject, out_dir)))
            after[subject] = (key,)
    for s in scans:
        tasks.append(Task(f"petbind-scan-{s.stem}", process_scan,
                          (s, config.tracers[s.tracer], out_dir), _scan_kwargs(config, plan),
                          after=after.get(s.subject, ())))
    return tasks


def _scan_kwargs(config: Any, plan: Any) -> dict[str, Any]:
    """The keyword arguments of every scan task (and of its pre-check, :func:`current_tasks`)."""
    return {"plan": plan, "pvc": config.pvc, "regions": config.regions,
            **_parametric_kwargs(config)}


def current_tasks(scans: list[Scan], config: StudyConfig, out_dir: Path, *,
                  plan: Any = None) -> dict[str, float]:
    """Keys of the :func:`study_tasks` whose outputs are current, with the seconds each check took.

    Checked here, in the caller's process, before any work is sent anywhere:
    a subject's registration with :func:`petbind.study.preprocess.subject_is_current`,
    a scan with :func:`petbind.study.scan_stage.scan_is_done` (the checks the
    tasks themselves make first: the SHA-256 of every input and output, the
    settings and the version in the provenance records). A scan counts as
    current only when its subject's registration is, since a registration run
    again may write other transforms, which are the scan's inputs. Files are
    hashed in threads (hashlib and file reads release the GIL), each unchanged
    file once (:func:`petbind.study.provenance.hash_memo`).
    """
    from concurrent.futures import ThreadPoolExecutor

    from petbind.compute import usable_cpus
    from petbind.study.provenance import hash_memo
    from petbind.study.scan_stage import scan_is_done

    if not scans:
        return {}
    kwargs = _scan_kwargs(config, plan)

    def timed(check: Callable[[], bool]) -> float | None:
        t = time.perf_counter()
        return time.perf_counter() - t if check() else None

    current: dict[str, float] = {}
    with hash_memo(), ThreadPoolExecutor(max_workers=usable_cpus(),
                                         thread_name_prefix="petbind-check") as pool:
        ok_subjects: set[str] = set()
        if plan is not None:
            from petbind.study.preprocess import subject_is_current

            subjects = sorted({s.subject for s in scans})
            for sub, sec in zip(subjects, pool.map(
                    lambda x: timed(lambda: subject_is_current(plan, x, out_dir)), subjects),
                    strict=True):
                if sec is not None:
                    ok_subjects.add(sub)
                    current[f"petbind-subject-{sub}"] = sec
        todo = [s for s in scans if plan is None or s.subject in ok_subjects]
        for s, sec in zip(todo, pool.map(
                lambda x: timed(lambda: scan_is_done(x, config.tracers[x.tracer], out_dir,
                                                     **kwargs)), todo), strict=True):
            if sec is not None:
                current[f"petbind-scan-{s.stem}"] = sec
    return current


def _parametric_kwargs(config: Any) -> dict[str, Any]:
    """``{"parametric": config.parametric}`` when it smooths the PET, else nothing."""
    par = getattr(config, "parametric", None)
    return {"parametric": par} if getattr(par, "pet_fwhm_mm", 0) else {}


def run_scans(scans: list[Scan], config: StudyConfig, out_dir: Path, *,
              scheduler: Any = None, progress: bool = True,
              console: Any = None, plan: Any = None,
              log: Callable[[str], None] | None = None, stages: Any = None
              ) -> list[ScanResult]:
    """Run the study's task graph (:func:`study_tasks`) on the compute engine.

    Subjects and scans found current first (:func:`current_tasks`) are
    reported as skipped and not sent; the engine is opened only when some
    task is left.

    Parameters
    ----------
    scheduler : None or a ``--scheduler`` word
        Any value of :func:`petbind.compute.parse_scheduler`; None: in this
        process (``sync``), subjects first, then scans in order.
        ``"local"``: one single-threaded worker process per CPU (at most one
        per task); ``HOST:PORT``: a running dask scheduler.
    plan : PreprocessPlan, optional
        Register each subject's T1w and preprocess each scan first (see
        :func:`process_scan`).
    log : callable, optional
        Receives one line per subject registration.
    stages : optional
        Marks ``register_subjects`` done when the last registration finishes.
    """
    import dataclasses

    from petbind.compute import open_engine, parse_scheduler

    parse_scheduler(scheduler)  # a wrong word fails now, even when nothing is to be sent
    say = log or (lambda _m: None)
    tasks = study_tasks(scans, config, out_dir, plan=plan)
    n_subjects = sum(t.key.startswith("petbind-subject-") for t in tasks)
    results: list[ScanResult] = []
    # what is current is decided here, before any work is sent: a rerun over complete
    # outputs submits no task and opens no engine (a local cluster starts on first use)
    current = current_tasks(scans, config, out_dir, plan=plan)
    todo = [dataclasses.replace(t, after=tuple(d for d in t.after if d not in current))
            for t in tasks if t.key not in current]
    with progress_bar(progress, console) as bar:
        task = bar.add_task("scans", total=len(tasks))
        left = [n_subjects]

        def on_done(t: Any, r: Any) -> None:
            if isinstance(r, ScanResult):
                results.append(r)
                bar.update(task, description=f"scan {r.stem}")
            else:
                subject, skipped, seconds = r
                say(f"sub-{subject}: T1w -> template "
                    + ("transforms are current" if skipped else f"registered in {seconds:.0f} s"))
                left[0] -= 1
                if not left[0] and stages is not None:
                    stages.done("register_subjects")
            bar.advance(task)

        for t in tasks:  # in the graph's order: subjects first
            if t.key in current:
                on_done(t, (t.args[1], True, current[t.key])
                        if t.key.startswith("petbind-subject-")
                        else ScanResult(t.args[0].stem, True, current[t.key]))
        if todo:
            with open_engine(scheduler, n_tasks=len(todo), default="sync") as engine:
                engine.run(todo, on_done)
        bar.update(task, description="scans")
    order = {s.stem: i for i, s in enumerate(scans)}
    return sorted(results, key=lambda r: order[r.stem])



# ----------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------
def _is_our_output(folder: Path) -> bool:
    """True when ``folder`` holds outputs of an earlier ``petbind run``."""
    from petbind.io.tables import read_json

    try:
        desc = read_json(folder / "dataset_description.json")
    except PetbindError:
        return False
    return desc.get("Name") == OUTPUT_NAME


def check_output_location(bids: Path, out_dir: Path) -> None:
    """Refuse an output folder inside the input tree other than under ``derivatives/``."""
    b = bids.resolve()
    o = out_dir.resolve()
    deriv = b / "derivatives"
    inside = o == b or (o.is_relative_to(b) and not o.is_relative_to(deriv)) or o == deriv
    if not inside and o.is_relative_to(deriv):
        # another pipeline's derivatives (e.g. the simulator's atlases) are input too
        top = deriv / o.relative_to(deriv).parts[0]
        inside = (top.name != "petbind" and top.is_dir() and any(top.iterdir())
                  and not _is_our_output(top))
    if inside:
        raise PetbindError("the output folder lies in the input dataset", path=out_dir,
                           field="--out",
                           fix="write to BIDS_DIR/derivatives/petbind (the default), a new "
                           "folder under derivatives/, or outside the dataset")


def _description(out_dir: Path, bids: Path) -> None:
    from petbind import __version__

    write_json_atomic(StudyLayout(out_dir).description, {
        "Name": OUTPUT_NAME, "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "petbind", "Version": __version__}],
        "SourceDatasets": [{"URL": bids.resolve().as_uri()}]})


def _prepare_subjects(bids: Path, config: StudyConfig, scans: list[Scan]) -> Any:
    """Check the preprocessing inputs (template, atlas, every T1w) before any long step.

    The registrations themselves are tasks of the study graph (:func:`study_tasks`).
    """
    from petbind.study.preprocess import make_plan

    first: dict[str, Path] = {}
    for s in scans:
        first.setdefault(s.subject, s.pet)
    return make_plan(bids, config.preprocess, sorted(first.items()))


class _Stages:
    """Wall and CPU (this process) seconds per stage."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._t = (time.perf_counter(), time.process_time())

    def lap(self) -> tuple[float, float]:
        """Wall and CPU seconds since the last stage ended (or the last lap), not recorded."""
        w, c = time.perf_counter(), time.process_time()
        lap = (w - self._t[0], c - self._t[1])
        self._t = (w, c)
        return lap

    def done(self, name: str, extra: tuple[float, float] = (0.0, 0.0)) -> None:
        """Record the stage ``name``: the seconds since the last stage ended, plus
        ``extra`` (a :meth:`lap` of the same stage run earlier)."""
        w, c = self.lap()
        self.wall[name] = w + extra[0]
        self.cpu[name] = c + extra[1]


@dataclass
class StudyResult:
    """What :func:`run_study` produced."""

    out_dir: Path
    outcomes: pd.DataFrame
    roi_stats: pd.DataFrame
    mixed: pd.DataFrame
    summary: dict[str, Any]
    warnings: list[str]
    seconds: dict[str, float]
    cpu_seconds: dict[str, float] = field(default_factory=dict)


def run_study(bids_dir: str | os.PathLike, config: StudyConfig, *,
              out_dir: str | os.PathLike | None = None, scheduler: Any = None,
              progress: bool = True, console: Any = None,
              log: Callable[[str], None] | None = None, engine: Any = None) -> StudyResult:
    """Run the whole study: per-scan outputs, outcome table and statistics.

    Parameters
    ----------
    bids_dir : path
        BIDS root (never written to except ``derivatives/petbind``).
    config : StudyConfig
    out_dir : path, optional
        Output root; default ``BIDS_DIR/derivatives/petbind``.
    scheduler : None or a ``--scheduler`` word (:func:`petbind.compute.parse_scheduler`)
        Where the subject and scan tasks run (see :func:`run_scans`); None: in
        this process.
    progress : bool
        Show progress bars (rich).
    console : rich Console, optional
    log : callable, optional
        Receives one line per stage.
    engine : optional
        Where the scan tasks and the voxel statistics' flip tasks run when the
        caller already holds it (:func:`petbind.compute.shared_scheduler` of
        ``scheduler``, e.g. ``petbind run`` sharing one local cluster with the
        report); None: one is opened here for both stages.

    Returns
    -------
    StudyResult

    Raises
    ------
    PetbindError
        Another run holds the output folder (:func:`petbind.study.outdir.lock_output`).
    """
    from petbind.compute import shared_scheduler
    from petbind.study.outdir import lock_output, sweep_temporaries

    out = Path(out_dir) if out_dir is not None else Path(bids_dir) / "derivatives" / "petbind"
    check_output_location(Path(bids_dir), out)
    with lock_output(out):
        swept = sweep_temporaries(out)
        if swept and log is not None:
            log(f"removed {len(swept)} temporary file(s) of an interrupted run")
        # one local cluster for the scan tasks and the voxel statistics' flip tasks
        with (contextlib.nullcontext(engine) if engine is not None
              else shared_scheduler(scheduler)) as engine:
            return _run_study(bids_dir, config, out_dir=out, scheduler=scheduler,
                              progress=progress, console=console, log=log, engine=engine)


def _run_study(bids_dir: str | os.PathLike, config: StudyConfig, *,
               out_dir: str | os.PathLike | None = None, scheduler: str | None = None,
               progress: bool = True, console: Any = None,
               log: Callable[[str], None] | None = None, engine: Any = None) -> StudyResult:
    """:func:`run_study`'s work, with the output folder locked.

    ``engine``: where the scan tasks and the voxel statistics' flip tasks run
    (:func:`petbind.compute.shared_scheduler` of ``scheduler``: the client of one
    local cluster for both stages); None: ``scheduler``. The power stage keeps
    ``scheduler`` (its records name it).
    """
    from petbind.study.outdir import previous_config_digest, remove_stale_outputs

    engine = scheduler if engine is None else engine

    say = log or (lambda _m: None)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    stages = _Stages()
    bids = Path(bids_dir)
    out = Path(out_dir) if out_dir is not None else bids / "derivatives" / "petbind"
    check_output_location(bids, out)

    scans, notes = discover_scans(bids, config, out_dir=out)
    for n in notes:
        say(f"warning: {n}")
    out.mkdir(parents=True, exist_ok=True)
    _description(out, bids)
    write_text_atomic(StudyLayout(out).config, config.to_toml())
    if config.pvc.enabled:
        from petbind.study.pvc import check_psf, resolve_config

        config = resolve_config(config, bids)
        check_psf(config.pvc, scans)
    stages.done("discover")
    say(f"{len(scans)} scans of {len({s.subject for s in scans})} subjects")

    plan = None
    if config.preprocess.enabled:
        plan = _prepare_subjects(bids, config, scans)
    results = run_scans(scans, config, out, scheduler=engine, progress=progress,
                        console=console, plan=plan, log=say, stages=stages)
    stages.done("scans")
    for r in results:
        notes.extend(r.warnings)

    # the voxel statistics' flips first: on a cluster the workers flip while this
    # process does the region statistics (stage seconds: the voxel statistics' preparation
    # and what is left of them after the region statistics)
    voxel = None
    if config.statistics.voxel.enabled:
        voxel = start_voxel_statistics(scans, config, out, plan=plan, scheduler=engine)
    voxel_wall, voxel_cpu = stages.lap()
    try:
        outcomes, roi, mixed, truth = _region_statistics(bids, config, scans, out, say,
                                                         scheduler, notes)
    except BaseException:
        if voxel is not None:
            voxel.cancel()
        raise
    stages.done("region_statistics")

    vwritten: list[Path] = []
    if voxel is not None:
        vwritten, vnotes = voxel.finish()
        notes.extend(vnotes)
    stages.done("voxel_statistics", extra=(voxel_wall, voxel_cpu))

    group = out / "group"
    lay = StudyLayout(out)
    primary = pd.concat([roi[(roi["tracer"] == tr) & (roi["model"] == tc.primary_model)]
                         for tr, tc in config.tracers.items()], ignore_index=True)
    n_invalid = int((~outcomes["valid"]).sum())
    reasons = outcomes.loc[~outcomes["valid"], "invalid_reason"].fillna("").astype(str)
    invalid_reasons = {r or "not recorded": int(n) for r, n in
                       reasons.value_counts().sort_index().items()}
    summary = {
        "n_scans": len(scans), "n_subjects": len({s.subject for s in scans}),
        "conditions": sorted({s.condition for s in scans}),
        "tracers": sorted({s.tracer for s in scans}),
        "models": {tr: list(tc.models) for tr, tc in config.tracers.items()},
        "primary_models": {tr: tc.primary_model for tr, tc in config.tracers.items()},
        "contrasts": [{"expr": c.expr, "name": c.name, "kind": c.kind}
                      for c in config.contrasts],
        "warnings": notes, "n_invalid_fits": n_invalid, "invalid_reasons": invalid_reasons,
        "simulated": truth is not None,
        "highlights": primary.replace({np.nan: None}).to_dict(orient="records"),
        "paths": {"outcomes": lay.relative(lay.outcomes),
                  "roi_stats": lay.relative(lay.roi_stats),
                  "mixed_model": lay.relative(lay.mixed_model),
                  "voxel": lay.relative(lay.voxel)},
    }
    if config.pvc.enabled:
        from petbind.study.pvc import pvc_statistics

        summary["pvc"] = pvc_statistics(scans, config, out, truth)
        summary["paths"].update({f"pvc_{k}": v for k, v in
                                 (summary["pvc"] or {}).get("paths", {}).items()})
    previous = previous_config_digest(out)
    digest = settings_digest(config.to_dict())
    removed = remove_stale_outputs(
        out, scans, [group / n for n in ("outcomes.tsv", "roi_stats.tsv", "mixed_model.tsv",
                                         "summary.json", "provenance.json")] + vwritten,
        config_changed=previous is not None and previous != digest,
        started=datetime.fromisoformat(started).timestamp())
    if removed:
        say(f"removed {len(removed)} output(s) of an earlier config (see provenance.json)")
    write_json_atomic(lay.summary, summary)
    finished = datetime.now(UTC).isoformat(timespec="seconds")
    write_json_atomic(lay.provenance, {
        **environment(), "command": sys.argv, "config": config.to_dict(),
        "config_sha256": digest, "previous_config_sha256": previous,
        "removed_outputs": removed,
        "dataset": str(bids.resolve()), "started": started, "finished": finished,
        "run_seconds": stages.wall, "run_cpu_seconds": stages.cpu,
        "skipped_scans": [r.stem for r in results if r.skipped],
        "scans": [lay.scan_entry(s.subject, s.condition, s.tracer, s.run, s.rel_dir, s.stem,
                                 s.pet.relative_to(bids).as_posix()) for s in scans],
        "seed": config.statistics.voxel.seed})
    return StudyResult(out_dir=out, outcomes=outcomes, roi_stats=roi, mixed=mixed,
                       summary=summary, warnings=notes, seconds=stages.wall,
                       cpu_seconds=stages.cpu)


def _region_statistics(bids: Path, config: StudyConfig, scans: list[Scan], out: Path,
                       say: Callable[[str], None], scheduler: Any, notes: list[str]
                       ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, Any]:
    """The outcome table, fit QC, region and mixed-model statistics, design statistics and
    power (:func:`run_study`'s region stage): ``(outcomes, roi, mixed, truth)``; the power
    stage's notes are added to ``notes``."""
    from petbind.stats.roi import mixed_model_statistics, roi_statistics

    truth = truth_table(bids, config)
    outcomes = outcome_table(scans, out, truth)
    from petbind.stats.design import attach_covariates  # group / covariate columns

    outcomes = attach_covariates(outcomes, bids, group=config.statistics.group,
                                 covariates=config.statistics.covariates)
    lay = StudyLayout(out)
    write_text_atomic(lay.outcomes, table_text(outcomes))
    from petbind.study.stats_stage import write_fit_qc  # fit QC, model comparison

    write_fit_qc(scans, out)
    stats_in = for_stats(outcomes)
    alpha = config.statistics.alpha
    roi_parts, mixed_parts = [], []
    for tracer, tcfg in config.tracers.items():
        sub = stats_in[stats_in["tracer"] == tracer]
        if sub.empty:
            continue
        regions = sorted(set(sub["region"]))
        roi_parts.append(roi_statistics(sub, config.contrasts, alpha=alpha, regions=regions,
                                        truth="bp_nd_true" if truth is not None else None))
        # the mixed model (about 0.1 s per fit) for the primary model only
        mixed_parts.append(mixed_model_statistics(
            sub[sub["model"] == tcfg.primary_model], config.contrasts,
            baseline=config.statistics.baseline_condition, alpha=alpha, regions=regions))
    roi = pd.concat(roi_parts, ignore_index=True)
    mixed = pd.concat(mixed_parts, ignore_index=True)
    write_text_atomic(lay.roi_stats, table_text(roi))
    write_text_atomic(lay.mixed_model, table_text(mixed))
    from petbind.study.stats_stage import write_design_statistics

    write_design_statistics(outcomes, stats_in, config, out, bids)
    if config.power.enabled:  # [power]: prospective power of this study's design
        from petbind.study.power_stage import power_stage

        notes.extend(power_stage(config, out, outcomes, scheduler=scheduler, log=say))
    return outcomes, roi, mixed, truth

