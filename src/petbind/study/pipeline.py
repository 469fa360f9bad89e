"""The main job: a BIDS study from dynamic scans to corrected statistics.

``run_study`` does, in order (docs/architecture.md, "The job, as data
flowing"; output files in docs/outputs.md):

1. discover the scans (:func:`petbind.study.discover.discover_scans`);
2. per scan (:func:`process_scan`, one task each of the study's task graph,
   :func:`study_tasks`, run by :mod:`petbind.compute` in-process or on dask):
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
   statistics on the parametric maps, ``summary.json`` and
   ``provenance.json``.

A scan whose provenance matches (same inputs, settings, version, intact
outputs) is skipped, so a rerun is cheap and a run killed at any point
resumes to the same outputs: every file is written atomically and the
provenance of a scan is written after its other outputs.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from petbind.errors import DataError, PetbindError
from petbind.io.atomic import write_json_atomic, write_text_atomic
from petbind.models.k2prime import k2prime_for_tracer as estimate_k2prime
from petbind.models.k2prime import model_kwargs
from petbind.study.config import K2PRIME_MODELS, StudyConfig, TracerConfig
from petbind.study.discover import Scan, discover_scans
from petbind.study.layout import OUTPUT_NAME, ScanOutputs, StudyLayout, read_table
from petbind.study.provenance import (
    environment,
    scan_is_current,
    scan_record,
    settings_digest,
    write_scan_record,
)

#: Columns of ``outcomes.tsv`` taken from the region fits (when the model gives them).
OUTCOME_PARAMS = ("bp_nd", "bp_nd_se", "r1", "k2", "k2prime", "aic", "r2", "valid",
                  "invalid_reason")


def _tsv(df: pd.DataFrame) -> str:
    """Deterministic TSV text (``n/a`` for missing, 10 significant digits)."""
    return df.to_csv(sep="\t", index=False, na_rep="n/a", float_format="%.10g",
                     lineterminator="\n")


def _read_tsv(path: Path) -> pd.DataFrame:
    """A table the pipeline wrote (or the truth table), read by the layout's one policy."""
    return read_table(path)


# ----------------------------------------------------------------------------
# per scan
# ----------------------------------------------------------------------------
@dataclass
class ScanResult:
    """What :func:`process_scan` reports back (small and picklable)."""

    stem: str
    skipped: bool
    seconds: float
    warnings: list[str] = field(default_factory=list)


def scan_dir(out_dir: Path, scan: Scan) -> Path:
    """Output folder of a scan (mirrors the input's ``sub-*/ses-*/pet``)."""
    return scan_outputs(out_dir, scan).folder


def scan_outputs(out_dir: Path, scan: Scan) -> ScanOutputs:
    """The output files of a scan (:mod:`petbind.study.layout`)."""
    return StudyLayout(Path(out_dir)).scan(scan.rel_dir, scan.stem)


def _scan_settings(tracer: TracerConfig) -> dict[str, Any]:
    return {"tracer": tracer.name, "reference_region": tracer.reference_region,
            "target_regions": list(tracer.target_regions),
            "exclude_regions": list(tracer.exclude_regions), "models": list(tracer.models),
            "map_model": tracer.map_model, "k2prime": tracer.k2prime,
            "k2prime_region": tracer.k2prime_region,
            "model_settings": tracer.model_settings}


def _scan_inputs(scan: Scan, out: Path, plan: Any = None) -> dict[str, Path]:
    inputs = {"pet": scan.fit_pet, "dseg": scan.dseg, "dseg_tsv": scan.dseg_tsv}
    if scan.fit_sidecar.exists():
        inputs["pet_json"] = scan.fit_sidecar
    if scan.noisefree is not None:
        inputs["noisefree_tacs"] = scan.noisefree
    if plan is not None:
        from petbind.study.preprocess import preprocess_files, subject_files

        files = preprocess_files(out, scan.rel_dir, scan.stem, plan.options.motion)
        inputs.update(template=plan.template, xfm_pet_t1w=files["xfm_pet_t1w"],
                      xfm_t1w_template=subject_files(out, scan.subject)["xfm_t1w_template"])
    return inputs


def _atlas(scan: Scan, shape: tuple[int, ...], affine: np.ndarray
           ) -> tuple[np.ndarray, dict[int, str]]:
    """Label image and ``{index: region}`` of a scan's atlas, checked against the PET grid."""
    from petbind.io.bids import open_nifti
    from petbind.io.tables import read_tsv

    img = open_nifti(scan.dseg)  # verified (gzip CRC): a damaged atlas is refused
    labels = np.asanyarray(img.dataobj)
    if labels.shape != tuple(shape):
        raise DataError(f"atlas shape {labels.shape} differs from the PET grid {shape}",
                        path=scan.dseg, field="shape",
                        fix="resample the atlas onto the PET image (nearest neighbour)")
    if not np.allclose(img.affine, affine, atol=1e-3):
        raise DataError("atlas affine differs from the PET image's", path=scan.dseg,
                        field="affine", fix="resample the atlas onto the PET grid")
    if not scan.dseg_tsv.exists():
        raise DataError("the atlas has no label table", path=scan.dseg_tsv, field="dseg.tsv",
                        fix="write the BIDS _dseg.tsv (index, name, region) beside the atlas")
    table = read_tsv(scan.dseg_tsv)
    if "index" not in table.columns:
        raise DataError("label table has no 'index' column", path=scan.dseg_tsv,
                        field="index", fix="use BIDS dseg columns: index, name[, region]")
    col = "region" if "region" in table.columns else "name"
    if col not in table.columns:
        raise DataError("label table has neither 'region' nor 'name'", path=scan.dseg_tsv,
                        field="region", fix="add a region (or name) column")
    names = {int(i): str(r) for i, r in zip(table["index"], table[col], strict=True)}
    return np.rint(labels).astype(np.int64), names


def _targets(scan: Scan, tracer: TracerConfig, regions: list[str]) -> list[str]:
    ref = tracer.reference_region
    if ref not in regions:
        raise DataError(f"the reference region {ref!r} of tracer {tracer.name} is not in "
                        "the atlas", path=scan.dseg_tsv, field="region",
                        fix=f"set tracers.{tracer.name}.reference_region to one of: "
                        f"{', '.join(regions)}")
    if tracer.target_regions:
        missing = [r for r in tracer.target_regions if r not in regions]
        if missing:
            raise DataError(f"target region(s) {missing} of tracer {tracer.name} are not in "
                            "the atlas", path=scan.dseg_tsv, field="region",
                            fix=f"use regions of the atlas: {', '.join(regions)}")
        return list(tracer.target_regions)
    return [r for r in regions if r != ref and r not in tracer.exclude_regions]


def _fit_regions(tracer: TracerConfig, tacs: Any, targets: list[str], k2: float | None,
                 used: dict[str, Any] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every configured model on the target curves: (fits table, fitted-curves table).

    ``counts`` weights take the radionuclide of the scan's sidecar
    (``TracerRadionuclide``) unless the model settings name one. ``used``,
    when given, receives each model's settings as the model applied them
    (weights, window, isotope, t* rule ...), for the provenance and Methods.
    """
    from petbind.models import make_model, model_spec

    timing = tacs.timing
    ref = tacs.curve(tracer.reference_region)
    data = np.stack([tacs.curve(r) for r in targets])
    fits, curves = [], []
    for name in tracer.models:
        kw = dict(tracer.model_settings.get(name, {}))
        if k2 is not None and name in K2PRIME_MODELS and model_spec(name).k2prime != "no":
            kw["k2prime"] = k2
        iso_from_sidecar = (kw.get("weights") == "counts" and "isotope" not in kw
                            and bool(tacs.metadata.get("isotope")))
        if iso_from_sidecar:
            kw["isotope"] = tacs.metadata["isotope"]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = make_model(name, timing, ref, **kw)
            fit = model.fit(data)
        if used is not None:
            used[name] = {**model.settings,
                          "isotope_source": ("TracerRadionuclide" if iso_from_sidecar
                                             else "model_settings" if "isotope" in kw
                                             else None)}
        frame = fit.to_frame(names=targets)
        if "k2prime" in kw and "k2prime" not in frame.columns:
            frame["k2prime"] = kw["k2prime"]
        fits.append(frame)
        fitted = np.broadcast_to(fit.fitted, data.shape)
        n_t = timing.n_frames
        curves.append(pd.DataFrame({
            "model": name, "region": np.repeat(targets, n_t),
            "frame": np.tile(np.arange(n_t), len(targets)),
            "frame_start": np.tile(timing.start_s, len(targets)),
            "frame_end": np.tile(timing.start_s + timing.duration_s, len(targets)),
            "frame_mid": np.tile(timing.start_s + timing.duration_s / 2, len(targets)),
            "measured": data.reshape(-1), "fitted": fitted.reshape(-1)}))
    table = pd.concat(fits, ignore_index=True)
    first = ["region", "model"]
    table = table[first + [c for c in table.columns if c not in first]]
    return table, pd.concat(curves, ignore_index=True)


def process_scan(scan: Scan, tracer: TracerConfig, out_dir: str | os.PathLike, *,
                 map_scheduler: Any = "sync", plan: Any = None, pvc: Any = None,
                 regions: dict[str, tuple[str, ...]] | None = None) -> ScanResult:
    """All per-scan outputs of one scan, or nothing when its provenance is current.

    Parameters
    ----------
    scan : Scan
    tracer : TracerConfig
    out_dir : path
        Output root (``derivatives/petbind`` or ``--out``).
    map_scheduler : optional
        Passed to :func:`petbind.parametric.parametric_maps`. ``"sync"`` (the
        default) keeps a scan in one thread: the pipeline's parallelism is
        across scans (dask), and the maps' sidecars, which record the
        scheduler, are then the same in-process and on dask.
    plan : PreprocessPlan, optional
        Preprocess the scan first (:func:`petbind.study.preprocess.preprocess_study_scan`,
        cached); then the motion-corrected image is fitted with the atlas in
        PET space that preprocessing wrote, and the BP_ND map and its mask are
        also written on the template grid (``STEM_space-template_model-<m>_*``).
    pvc : PvcConfig, optional
        Partial-volume correction (``[pvc]``); when enabled the corrected
        ``desc-pvc`` outputs are written too (:mod:`petbind.study.pvc`).
    regions : dict, optional
        The study's ``[regions]`` (analysis region -> atlas labels/patterns).

    Returns
    -------
    ScanResult
    """
    from petbind.io.bids import load_pet
    from petbind.io.tables import write_tacs

    t0 = time.perf_counter()
    out_root = Path(out_dir)
    files = scan_outputs(out_root, scan)
    folder = files.folder
    prov = files.provenance
    prep_summary: dict[str, Any] | None = None
    prep_skipped = True
    if plan is not None:
        from petbind.study.preprocess import preprocess_study_scan

        prep_summary, prep_skipped = preprocess_study_scan(plan, scan, out_root)
    inputs = _scan_inputs(scan, out_root, plan)
    settings = _scan_settings(tracer)
    if regions:
        settings["regions"] = {k: list(v) for k, v in regions.items()}
    if plan is not None:
        settings["preprocess"] = plan.settings()
    if pvc is not None and pvc.enabled:
        from petbind.study.pvc import scan_inputs

        inputs.update(scan_inputs(pvc))
        settings["pvc"] = pvc.to_dict()
    if scan_is_current(prov, inputs, settings, out_root):
        return ScanResult(scan.stem, prep_skipped, time.perf_counter() - t0)

    img = load_pet(scan.fit_pet)
    from petbind.study.regions import region_curves

    labels, names, tacs, atlas_info = region_curves(scan, img, regions or {}, plan, out_root,
                                                    read_atlas=_atlas)
    regions_found = list(tacs.regions)
    targets = _targets(scan, tracer, regions_found)
    written: list[Path] = []
    written.append(write_tacs(files.tacs, tacs))
    written.append(files.tacs_json)

    k2, k2_info = estimate_k2prime(tracer, tacs, targets, str(scan.dseg_tsv))
    models_used: dict[str, Any] = {}
    fits, curves = _fit_regions(tracer, tacs, targets, k2, models_used)
    written.append(write_text_atomic(files.fits, _tsv(fits)))
    written.append(write_text_atomic(files.fitted, _tsv(curves)))
    if scan.noisefree is not None:
        written.append(_noisefree_fits(scan, tracer, targets, k2, folder, tacs.timing))
    pvc_info = None
    if pvc is not None and pvc.enabled:
        from petbind.study.pvc import correct_scan_outputs

        pvc_written, pvc_info = correct_scan_outputs(scan, tracer, pvc, img, labels, names,
                                                     folder, _pvc_fns())
        written.extend(pvc_written)
    notes: list[str] = []
    n_bad = int((~fits["valid"].astype(bool)).sum())
    if n_bad:
        bad = fits.loc[~fits["valid"].astype(bool), ["model", "region"]]
        notes.append(f"{scan.key}: {n_bad} invalid region fit(s): "
                     + ", ".join(f"{m}/{r}" for m, r in bad.itertuples(index=False)))

    if tracer.map_model:
        from petbind.parametric import K2PRIME_MODELS, parametric_maps, write_maps

        brain = np.isin(labels, [k for k, v in names.items()
                                 if v not in tracer.exclude_regions])
        result = parametric_maps(
            img, model=tracer.map_model, ref_curve=tacs.curve(tracer.reference_region),
            mask=brain, k2prime=k2 if tracer.map_model in K2PRIME_MODELS else None,
            scheduler=map_scheduler,
            model_settings=model_kwargs(tracer, tracer.map_model, tacs))
        extra = {"K2PrimeStrategy": k2_info, "Atlas": str(scan.dseg)}
        written.extend(write_maps(result, folder, scan.stem, extra, entity="model"))
        if plan is not None:
            written.extend(_template_maps(scan, tracer.map_model, folder, img.affine, plan,
                                          out_root, extra))
        written.extend(p.with_name(p.name.removesuffix(".nii.gz") + ".json")
                       for p in list(written) if p.name.endswith(".nii.gz"))

    record = scan_record(inputs, settings, [p for p in written if p.exists()], out_root)
    record["k2prime"] = {"value_per_min": k2, **k2_info}
    record["models"] = models_used
    record["atlas"] = atlas_info
    record["reference_region"] = tracer.reference_region
    record["scan"] = {"subject": scan.subject, "condition": scan.condition,
                      "tracer": scan.tracer, "run": scan.run}
    if pvc_info is not None:
        record["pvc"] = pvc_info
    if prep_summary is not None:
        record["preprocess"] = prep_summary
        flagged = prep_summary.get("flagged_frames") or []
        if flagged:
            notes.append(f"{scan.key}: {len(flagged)} frame(s) moved more than the "
                         f"framewise-displacement threshold (frames {flagged}); realigned, "
                         "see the motion QC figure")
    write_scan_record(prov, record)
    return ScanResult(scan.stem, False, time.perf_counter() - t0, notes)


def _pvc_fns() -> Any:
    """This module's steps that the partial-volume-corrected outputs reuse (petbind.study.pvc)."""
    from petbind.study.pvc import PipelineFns

    return PipelineFns(targets=_targets, k2prime=estimate_k2prime, fit=_fit_regions, tsv=_tsv,
                       read_tsv=_read_tsv, for_stats=_for_stats, outcome_params=OUTCOME_PARAMS)


def _noisefree_fits(scan: Scan, tracer: TracerConfig, targets: list[str], k2: float | None,
                    folder: Path, timing: Any) -> Path:
    """The primary model fitted to the simulator's noise-free region curves of the scan.

    Same model settings and the same k2' as the scan's own fits: the result
    (``bp_nd_true_image`` in the outcome table) is what a noise-free analysis
    of the blurred image gives, which separates partial-volume bias (truth vs
    image truth) from noise (image truth vs estimate).
    """
    from petbind.io.tables import read_tacs

    nf = read_tacs(scan.noisefree)
    if nf.timing.n_frames != timing.n_frames or not np.allclose(nf.timing.start, timing.start,
                                                                 atol=1e-3):
        raise DataError("the noise-free curves have other frames than the scan",
                        path=scan.noisefree, field="frame_start",
                        fix="simulate the dataset again (petbind simulate)")
    names = [r for r in targets if r in nf.regions]
    if tracer.reference_region not in nf.regions or not names:
        raise DataError(f"the noise-free curves lack the reference region or every target "
                        f"of tracer {tracer.name}", path=scan.noisefree, field="region",
                        fix="use the simulator's region names in the study config")
    one = dataclasses.replace(tracer, models=(tracer.primary_model,))
    fits, _ = _fit_regions(one, nf, names, k2)
    return write_text_atomic(StudyLayout(folder).scan(".", scan.stem).noisefree_fits,
                             _tsv(fits))


def _template_maps(scan: Scan, model: str, folder: Path, affine: np.ndarray, plan: Any,
                   out_root: Path, extra: dict[str, Any]) -> list[Path]:
    """The BP_ND map and its mask of a preprocessed scan, resampled onto the template grid."""
    from petbind.io.bids import save_image
    from petbind.io.images import read_volume
    from petbind.study.preprocess import maps_to_template, preprocess_files, subject_files

    so = StudyLayout(folder).scan(".", scan.stem)
    bp = read_volume(so.map(model, "bpnd"), dtype=None).data
    valid = read_volume(so.map(model, "mask"), dtype=None).data
    files = preprocess_files(out_root, scan.rel_dir, scan.stem, plan.options.motion)
    xfm = subject_files(out_root, scan.subject)["xfm_t1w_template"]
    tbp, tmask, taff = maps_to_template(bp, valid, affine, plan, files, xfm)
    side = {**extra, "Model": model, "Space": "template", "Template": str(plan.template),
            "Sources": [so.map(model, "bpnd").name, so.map(model, "mask").name],
            "Transforms": [str(xfm), str(files["xfm_pet_t1w"])],
            "Resampling": "linear; NaN where under half of the neighbourhood was valid or "
                          "outside the PET field of view"}
    return [save_image(so.map(model, "bpnd", "template"), tbp.astype(np.float32), taff,
                       {**side, "Units": "unitless", "Description": "BP_ND"}),
            save_image(so.map(model, "mask", "template"), tmask, taff,
                       {**side, "Description": "1 = valid BP_ND in template space"})]


# ----------------------------------------------------------------------------
# execution: in-process or dask
# ----------------------------------------------------------------------------
def _progress(enabled: bool, console: Any) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, disable=not enabled,
                    transient=False)


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
                          (s, config.tracers[s.tracer], out_dir),
                          {"plan": plan, "pvc": config.pvc, "regions": config.regions},
                          after=after.get(s.subject, ())))
    return tasks


def run_scans(scans: list[Scan], config: StudyConfig, out_dir: Path, *,
              scheduler: Any = None, progress: bool = True,
              console: Any = None, plan: Any = None,
              log: Callable[[str], None] | None = None, stages: Any = None
              ) -> list[ScanResult]:
    """Run the study's task graph (:func:`study_tasks`) on the compute engine.

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
    from petbind.compute import open_engine

    say = log or (lambda _m: None)
    tasks = study_tasks(scans, config, out_dir, plan=plan)
    n_subjects = sum(t.key.startswith("petbind-subject-") for t in tasks)
    results: list[ScanResult] = []
    with _progress(progress, console) as bar, \
            open_engine(scheduler, n_tasks=len(tasks), default="sync") as engine:
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

        engine.run(tasks, on_done)
        bar.update(task, description="scans")
    order = {s.stem: i for i, s in enumerate(scans)}
    return sorted(results, key=lambda r: order[r.stem])


# ----------------------------------------------------------------------------
# study level
# ----------------------------------------------------------------------------
def _truth_table(bids: Path, config: StudyConfig) -> pd.DataFrame | None:
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
    t = _read_tsv(path)
    keep = ["subject", "condition", "tracer", "region", "bp_nd", "r1"]
    missing = [c for c in keep if c not in t.columns]
    if missing:
        raise DataError(f"the truth table lacks columns {missing}", path=path,
                        field=missing[0], fix="use the simulator's truth.tsv")
    return t[keep].rename(columns={"bp_nd": "bp_nd_true", "r1": "r1_true"})


def outcome_table(scans: list[Scan], out_dir: Path,
                  truth: pd.DataFrame | None = None) -> pd.DataFrame:
    """The tidy outcome table from every scan's ``_fits.tsv`` (docs/outputs.md)."""
    frames = []
    for s in scans:
        f = _read_tsv(scan_outputs(out_dir, s).fits)
        f.insert(0, "run", s.run if s.run is not None else np.nan)
        f.insert(0, "tracer", s.tracer)
        f.insert(0, "condition", s.condition)
        f.insert(0, "subject", s.subject)
        frames.append(f)
    df = pd.concat(frames, ignore_index=True)
    for c in OUTCOME_PARAMS:
        if c not in df.columns:
            df[c] = np.nan
    df["valid"] = df["valid"].astype(str).str.lower().isin(["true", "1"])
    cols = ["subject", "condition", "tracer", "run", "region", "model", *OUTCOME_PARAMS]
    df = df[cols]
    if truth is not None:
        df = df.merge(truth, on=["subject", "condition", "tracer", "region"], how="left")
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
        f = _read_tsv(p)[["region", "model", "bp_nd"]].rename(
            columns={"bp_nd": "bp_nd_true_image"})
        f.insert(0, "run", s.run if s.run is not None else np.nan)
        f.insert(0, "tracer", s.tracer)
        f.insert(0, "condition", s.condition)
        f.insert(0, "subject", s.subject)
        frames.append(f)
    if not frames:
        return None
    out = pd.concat(frames, ignore_index=True)
    out["run"] = out["run"].astype(object)
    return out


def _for_stats(outcomes: pd.DataFrame) -> pd.DataFrame:
    """One row per subject x condition x tracer x region x model (runs averaged)."""
    df = outcomes.copy()
    df.loc[~df["valid"], "bp_nd"] = np.nan
    keys = ["subject", "condition", "tracer", "region", "model"]
    if not df.duplicated(keys).any():
        return df
    agg = {"bp_nd": "mean", "valid": "any"}
    for c in ("bp_nd_true", "bp_nd_true_image"):
        if c in df:
            agg[c] = "mean"
    return df.groupby(keys, as_index=False, sort=True).agg(agg)


def _load_map(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from petbind.io.images import read_volume

    vol = read_volume(path, dtype=np.float64)
    return vol.data, vol.affine


def voxel_statistics(scans: list[Scan], config: StudyConfig, out_dir: Path, *,
                     plan: Any = None) -> tuple[list[Path], list[str]]:
    """Sign-flip voxel statistics of every contrast on the tracers' BP_ND maps.

    Without preprocessing the maps are the scans' own (every scan on one PET
    grid) and the analysis mask comes from the first scan's atlas. With a
    preprocessing ``plan`` the maps are the ``STEM_space-template_model-<m>``
    ones (subjects in native positions brought to the template) and the
    analysis mask is the template atlas on that grid.
    """
    from petbind.io.bids import save_image
    from petbind.stats.voxel import sign_flip_test

    vx = config.statistics.voxel
    written: list[Path] = []
    notes: list[str] = []
    lay = StudyLayout(out_dir)
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
                    atlas, names = _atlas(s, shape, aff)
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
                np.where(valid > 0, bp, np.nan))
        if shape is None:
            continue
        mean_maps = {k: np.mean(v, axis=0) for k, v in maps.items()}
        subjects = sorted({k[0] for k in mean_maps})
        for c in config.contrasts:
            subj = [s for s in subjects if all((s, x) in mean_maps for x in c.conditions)]
            if len(subj) < 2:
                notes.append(f"voxel statistics of {tracer} {c.expr} skipped: "
                             f"{len(subj)} subject(s) with every condition")
                continue
            stack = {x: np.stack([mean_maps[(s, x)] for s in subj]) for x in c.conditions}
            a, b, effect = c.combine(stack)
            diffs = a - b
            effect = np.where(np.isfinite(effect), effect, np.nan)
            res = sign_flip_test(
                diffs, analysis, affine=affine, effect=effect,
                cluster_forming_p=vx.cluster_forming_p, n_permutations=vx.n_permutations,
                seed=vx.seed, smoothing_fwhm_mm=vx.smoothing_fwhm_mm, atlas=atlas,
                atlas_names=names)
            pre = lay.voxel_prefix(tracer, model, c.name)
            side = {"Tracer": tracer, "Model": model, "Contrast": c.expr,
                    "Subjects": subj, **res.info,
                    "Note": (f"sign-flip permutation over {res.info['n_flips']} flips "
                             f"({'exact enumeration' if res.info['exact'] else 'random'}); "
                             f"the smallest attainable FWE p is "
                             f"{res.info['min_attainable_p']:.4g}")}
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
            written.append(write_text_atomic(Path(f"{pre}_clusters.tsv"), _tsv(res.clusters)))
    return written, notes


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

    def done(self, name: str) -> None:
        w, c = time.perf_counter(), time.process_time()
        self.wall[name] = w - self._t[0]
        self.cpu[name] = c - self._t[1]
        self._t = (w, c)


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
              log: Callable[[str], None] | None = None) -> StudyResult:
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

    Returns
    -------
    StudyResult

    Raises
    ------
    PetbindError
        Another run holds the output folder (:func:`petbind.study.outdir.lock_output`).
    """
    from petbind.study.outdir import lock_output, sweep_temporaries

    out = Path(out_dir) if out_dir is not None else Path(bids_dir) / "derivatives" / "petbind"
    check_output_location(Path(bids_dir), out)
    with lock_output(out):
        swept = sweep_temporaries(out)
        if swept and log is not None:
            log(f"removed {len(swept)} temporary file(s) of an interrupted run")
        return _run_study(bids_dir, config, out_dir=out, scheduler=scheduler,
                          progress=progress, console=console, log=log)


def _run_study(bids_dir: str | os.PathLike, config: StudyConfig, *,
               out_dir: str | os.PathLike | None = None, scheduler: str | None = None,
               progress: bool = True, console: Any = None,
               log: Callable[[str], None] | None = None) -> StudyResult:
    """:func:`run_study`'s work, with the output folder locked."""
    from petbind.stats.roi import mixed_model_statistics, roi_statistics
    from petbind.study.outdir import previous_config_digest, remove_stale_outputs

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
        from petbind.study.pvc import resolve_config

        config = resolve_config(config, bids)
    stages.done("discover")
    say(f"{len(scans)} scans of {len({s.subject for s in scans})} subjects")

    plan = None
    if config.preprocess.enabled:
        plan = _prepare_subjects(bids, config, scans)
    results = run_scans(scans, config, out, scheduler=scheduler, progress=progress,
                        console=console, plan=plan, log=say, stages=stages)
    stages.done("scans")
    for r in results:
        notes.extend(r.warnings)

    truth = _truth_table(bids, config)
    outcomes = outcome_table(scans, out, truth)
    from petbind.stats.design import attach_covariates  # group / covariate columns

    outcomes = attach_covariates(outcomes, bids, group=config.statistics.group,
                                 covariates=config.statistics.covariates)
    group = out / "group"
    lay = StudyLayout(out)
    write_text_atomic(lay.outcomes, _tsv(outcomes))
    from petbind.study.stats_stage import write_fit_qc  # fit QC, model comparison

    write_fit_qc(scans, out)
    stats_in = _for_stats(outcomes)
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
    write_text_atomic(lay.roi_stats, _tsv(roi))
    write_text_atomic(lay.mixed_model, _tsv(mixed))
    from petbind.study.stats_stage import write_design_statistics

    write_design_statistics(outcomes, stats_in, config, out, bids)
    stages.done("region_statistics")

    vwritten: list[Path] = []
    if config.statistics.voxel.enabled:
        vwritten, vnotes = voxel_statistics(scans, config, out, plan=plan)
        notes.extend(vnotes)
    stages.done("voxel_statistics")

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

        summary["pvc"] = pvc_statistics(scans, config, out, truth, _pvc_fns())
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
