"""One scan of a study: everything ``petbind run`` writes for it (one task of the graph).

:func:`process_scan` loads and validates the image, takes its region curves
(:func:`petbind.study.regions.region_curves`), fits every configured model
(:mod:`petbind.study.region_fits`), writes the parametric maps of the tracer's
``map_model`` and, last, the scan's provenance record; with ``[preprocess]``
it preprocesses the scan first and also writes the BP_ND map in template
space; with ``[pvc]`` it writes the corrected outputs (:mod:`petbind.study.pvc`).
A scan whose provenance is current is skipped. The file names are
:mod:`petbind.study.layout`'s.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from petbind.errors import DataError
from petbind.io.atomic import write_text_atomic
from petbind.study.config import TracerConfig
from petbind.study.discover import Scan
from petbind.study.layout import ScanOutputs, StudyLayout
from petbind.study.provenance import scan_is_current, scan_record, write_scan_record
from petbind.study.region_fits import estimate_k2prime, fit_regions, model_kwargs, target_regions
from petbind.study.regions import region_curves
from petbind.study.tables import table_text


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


def _scan_check(scan: Scan, tracer: TracerConfig, out_root: Path, *, plan: Any = None,
                pvc: Any = None, regions: dict[str, tuple[str, ...]] | None = None,
                parametric: Any = None) -> tuple[dict[str, Path], dict[str, Any]]:
    """The inputs and settings a scan's provenance records (:func:`process_scan`)."""
    inputs = _scan_inputs(scan, out_root, plan)
    settings = _scan_settings(tracer)
    if regions:
        settings["regions"] = {k: list(v) for k, v in regions.items()}
    if plan is not None:
        settings["preprocess"] = plan.settings()
    pet_fwhm = float(getattr(parametric, "pet_fwhm_mm", 0.0) or 0.0)
    if pet_fwhm > 0 and tracer.map_model:  # absent when off: earlier outputs stay current
        settings["parametric"] = {"pet_fwhm_mm": pet_fwhm}
    if pvc is not None and pvc.enabled:
        from petbind.study.pvc import scan_inputs

        inputs.update(scan_inputs(pvc))
        settings["pvc"] = pvc.to_dict()
        if settings["pvc"].get("atlas"):
            # the atlas is an input (its bytes' SHA-256 above), not a setting: its
            # absolute path (resolve_config) would make a moved study refit every scan
            settings["pvc"]["atlas"] = "inputs.pvc_atlas"
    return inputs, settings


def scan_is_done(scan: Scan, tracer: TracerConfig, out_dir: str | os.PathLike, *,
                 plan: Any = None, pvc: Any = None,
                 regions: dict[str, tuple[str, ...]] | None = None,
                 parametric: Any = None) -> bool:
    """True when :func:`process_scan` with these arguments would do nothing.

    The same checks it makes, in the same order, without loading anything:
    with a ``plan`` the scan's preprocessing provenance
    (:func:`petbind.study.preprocess.preprocess_is_current`), then the scan's
    own (inputs' and outputs' SHA-256, settings, version). The pipeline asks
    it in its own process before it sends work to a worker, so a rerun over
    complete outputs submits no scan task. With a ``plan``, the subject's
    transforms must be current too (the caller checks that first: a subject
    registered again may write other transforms, which are inputs here).
    """
    out_root = Path(out_dir)
    if plan is not None:
        from petbind.study.preprocess import preprocess_is_current

        if not preprocess_is_current(plan, scan, out_root):
            return False
    inputs, settings = _scan_check(scan, tracer, out_root, plan=plan, pvc=pvc,
                                   regions=regions, parametric=parametric)
    return scan_is_current(scan_outputs(out_root, scan).provenance, inputs, settings, out_root)


def process_scan(scan: Scan, tracer: TracerConfig, out_dir: str | os.PathLike, *,
                 map_scheduler: Any = "sync", plan: Any = None, pvc: Any = None,
                 regions: dict[str, tuple[str, ...]] | None = None,
                 parametric: Any = None) -> ScanResult:
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
    parametric : ParametricConfig, optional
        The study's ``[parametric]`` (PET smoothing before the voxel fits).

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
    inputs, settings = _scan_check(scan, tracer, out_root, plan=plan, pvc=pvc,
                                   regions=regions, parametric=parametric)
    pet_fwhm = float(getattr(parametric, "pet_fwhm_mm", 0.0) or 0.0)
    if scan_is_current(prov, inputs, settings, out_root):
        return ScanResult(scan.stem, prep_skipped, time.perf_counter() - t0)

    # no separate whole-stream check of a .nii.gz: the region curves read every frame in
    # order through one stream and check its end (CRC-32, length) before they return
    # (DynamicImage._in_order), so the scan is inflated once here, not twice (issue 18)
    img = load_pet(scan.fit_pet, verify_gzip=False)
    labels, names, tacs, atlas_info = region_curves(scan, img, regions or {}, plan, out_root)
    regions_found = list(tacs.regions)
    targets = target_regions(scan, tracer, regions_found)
    written: list[Path] = []
    written.append(write_tacs(files.tacs, tacs))
    written.append(files.tacs_json)

    k2, k2_info = estimate_k2prime(tracer, tacs, targets, str(scan.dseg_tsv))
    models_used: dict[str, Any] = {}
    fits, curves = fit_regions(tracer, tacs, targets, k2, models_used)
    written.append(write_text_atomic(files.fits, table_text(fits)))
    written.append(write_text_atomic(files.fitted, table_text(curves)))
    if scan.noisefree is not None:
        written.append(_noisefree_fits(scan, tracer, targets, k2, folder, tacs.timing))
    pvc_info = None
    if pvc is not None and pvc.enabled:
        from petbind.study.pvc import correct_scan_outputs

        pvc_written, pvc_info = correct_scan_outputs(scan, tracer, pvc, img, labels, names,
                                                     folder)
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
            model_settings=model_kwargs(tracer, tracer.map_model, tacs), pet_fwhm_mm=pet_fwhm)
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
    fits, _ = fit_regions(one, nf, names, k2)
    return write_text_atomic(StudyLayout(folder).scan(".", scan.stem).noisefree_fits,
                             table_text(fits))


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

