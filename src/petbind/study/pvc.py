"""Partial-volume correction inside ``petbind run`` (the ``[pvc]`` section).

Per scan (:func:`correct_scan_outputs`, called by
:func:`petbind.study.scan_stage.process_scan` after the uncorrected fits), with
the scan's image and atlas:

- ``STEM_desc-pvc_tacs.tsv`` (+ ``.json``: method, PSF, GTM condition number,
  each region's recovery coefficient): the corrected region curves. For
  ``gtm`` / ``sgtm`` the GTM's label activities pooled by region; for the
  voxel methods the region means of the corrected image over the scan's atlas;
- ``STEM_desc-pvc_fits.tsv`` and ``STEM_desc-pvcfitted_tacs.tsv``: every
  configured model on the corrected curves, k2' estimated again from them;
- voxel methods only: ``STEM_desc-pvc_pet.nii.gz`` (the corrected 4D image)
  and the parametric maps of the tracer's ``map_model`` on it
  (``STEM_desc-pvc_model-<m>_*.nii.gz``).

Per study (:func:`pvc_statistics`): ``group/desc-pvc_outcomes.tsv`` and
``group/desc-pvc_roi_stats.tsv`` in the columns of the uncorrected tables,
and the primary models' rows in ``summary.json`` under ``pvc``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from petbind.pvc.files import atlas_table_path, corrected_sidecar, read_atlas
from petbind.study.region_fits import estimate_k2prime, fit_regions, target_regions
from petbind.study.tables import for_stats, outcome_rows, table_text

#: ``desc`` label of every corrected output.
DESC = "pvc"


def resolve_config(config: Any, bids: Path) -> Any:
    """``config`` with ``pvc.atlas`` made absolute (relative paths are relative to ``bids``).

    With ``[preprocess] enabled`` the scans lie in their native positions, where
    a ``pvc.atlas`` (a template-space atlas) does not fit: each scan's atlas
    from preprocessing is used instead (``pvc.atlas`` set to ``""``; the
    summary says so).
    """
    pvc = config.pvc
    if pvc.enabled and pvc.atlas and config.preprocess.enabled:
        return dataclasses.replace(config, pvc=dataclasses.replace(pvc, atlas=""))
    if not pvc.enabled or not pvc.atlas or Path(pvc.atlas).expanduser().is_absolute():
        return config
    return dataclasses.replace(config, pvc=dataclasses.replace(
        pvc, atlas=str((Path(bids) / pvc.atlas).resolve())))


def check_psf(pvc: Any, scans: Sequence[Any]) -> None:
    """Raise the PSF error of the scan stage before any scan runs.

    With ``[pvc]`` on and no ``pvc.fwhm_mm``, every scan's PET sidecar must give
    the PSF (``ScannerResolutionFWHM`` or a Gaussian ``ReconFilterSize``); the
    first that does not is named, as :func:`petbind.pvc.psf.resolve_psf` names it
    in the scan stage, but before any scan's work. A scan without a sidecar is
    left to the scan stage (its own error).
    """
    if pvc is None or not pvc.enabled or pvc.fwhm_mm is not None:
        return
    from petbind.io.bids import pet_sidecar
    from petbind.io.tables import read_json
    from petbind.pvc.psf import resolve_psf

    for scan in scans:  # a loop over scans (sidecars of a few hundred bytes)
        side = pet_sidecar(scan.pet)
        if side.is_file():
            resolve_psf(None, read_json(side), sidecar_path=side, config_field="pvc.fwhm_mm")


def scan_inputs(pvc: Any) -> dict[str, Path]:
    """Input files the correction adds to a scan's provenance."""
    if pvc is None or not pvc.enabled or not pvc.atlas:
        return {}
    return {"pvc_atlas": Path(pvc.atlas), "pvc_atlas_tsv": atlas_table_path(Path(pvc.atlas))}


def correct_scan_outputs(scan: Any, tracer: Any, pvc: Any, img: Any, labels: np.ndarray,
                         names: dict[int, str], folder: Path
                         ) -> tuple[list[Path], dict[str, Any]]:
    """Partial-volume-correct one scan and fit the corrected curves (files above).

    Parameters
    ----------
    scan : petbind.study.discover.Scan
    tracer : petbind.study.config.TracerConfig
    pvc : petbind.study.config.PvcConfig
        With ``atlas`` absolute (:func:`resolve_config`).
    img : DynamicImage
        The image the uncorrected fits used.
    labels, names : the scan's atlas on the PET grid and ``{index: region}``.
    folder : Path
        The scan's output folder.

    Returns
    -------
    written : list of Path
    info : dict
        What the correction assumed and found (for the provenance record).
    """
    from petbind.image import DynamicImage
    from petbind.io.atomic import write_text_atomic
    from petbind.io.bids import pet_sidecar, save_image
    from petbind.io.tables import write_tacs
    from petbind.pvc.psf import resolve_psf
    from petbind.pvc.scan import VOXEL_METHODS, correct_image
    from petbind.tac import TACTable

    psf = resolve_psf(pvc.fwhm_mm, img.metadata, sidecar_path=pet_sidecar(img.path),
                      config_field="pvc.fwhm_mm")
    if pvc.atlas:
        lab, nm, laff = read_atlas(Path(pvc.atlas))
    else:
        lab, nm, laff = labels, names, np.asarray(img.affine)
    data = img.get_data()
    res = correct_image(data, img.affine, lab, nm, psf, pvc.method, labels_affine=laff,
                        n_iter=pvc.iterations, non_grey=pvc.non_grey,
                        atlas_path=pvc.atlas or scan.dseg)
    info = {**res.info, "Atlas": str(pvc.atlas or scan.dseg)}
    stem = f"{scan.stem}_desc-{DESC}"
    written: list[Path] = []
    if pvc.method in VOXEL_METHODS:
        assert res.image is not None
        from petbind.io.bids import read_pet_sidecar

        side = corrected_sidecar(read_pet_sidecar(scan.fit_pet)[0], img.timing, info)
        written.append(save_image(folder / f"{stem}_pet.nii.gz", res.image, img.affine, side))
        corrected = DynamicImage(res.image, img.affine, img.timing, img.metadata)
        tacs = corrected.region_means(labels, names=names)
    else:
        tacs = TACTable(img.timing, res.tacs, res.regions)
    tacs = TACTable(tacs.timing, tacs.values, list(tacs.regions),
                    metadata={"PartialVolumeCorrection": info})
    written.append(write_tacs(folder / f"{stem}_tacs.tsv", tacs))
    written.append(folder / f"{stem}_tacs.json")
    # the corrected curves may hold regions too small for a majority voxel of the scan's atlas
    # (the pipeline's target, k2' and fit steps: the corrected fits take the tracer's
    # targets among the corrected curves' regions, which with a finer atlas may include
    # regions no PET voxel is mostly made of)
    targets = target_regions(scan, tracer, list(tacs.regions))
    k2, k2_info = estimate_k2prime(tracer, tacs, targets, str(scan.dseg_tsv))
    fits, curves = fit_regions(tracer, tacs, targets, k2)
    written.append(write_text_atomic(folder / f"{stem}_fits.tsv", table_text(fits)))
    written.append(write_text_atomic(folder / f"{scan.stem}_desc-{DESC}fitted_tacs.tsv",
                                     table_text(curves)))
    if pvc.method in VOXEL_METHODS and tracer.map_model:
        from petbind.parametric import K2PRIME_MODELS, parametric_maps, write_maps

        brain = np.isin(labels, [k for k, v in names.items()
                                 if v not in tracer.exclude_regions])
        result = parametric_maps(
            corrected, model=tracer.map_model, ref_curve=tacs.curve(tracer.reference_region),
            mask=brain, k2prime=k2 if tracer.map_model in K2PRIME_MODELS else None,
            scheduler="sync", model_settings=tracer.model_settings.get(tracer.map_model, {}))
        maps = write_maps(result, folder, stem, {"K2PrimeStrategy": k2_info,
                                                 "PartialVolumeCorrection": info},
                          entity="model")
        written.extend(maps)
        written.extend(p.with_name(p.name.removesuffix(".nii.gz") + ".json")
                       for p in maps if p.name.endswith(".nii.gz"))
    info["k2prime"] = {"value_per_min": k2, **k2_info}
    return written, info


def pvc_outcomes(scans: list[Any], out_dir: Path,
                 truth: pd.DataFrame | None) -> pd.DataFrame | None:
    """The outcome table of the corrected fits (columns of ``outcomes.tsv``), or None."""
    fits = [(s, out_dir / s.rel_dir / f"{s.stem}_desc-{DESC}_fits.tsv") for s in scans]
    if not fits or not all(p.exists() for _, p in fits):
        return None
    return outcome_rows(fits, truth)


def _scan_infos(scans: list[Any], out_dir: Path) -> dict[str, Any]:
    """PSF(s), GTM condition numbers and mean recovery per region over the scans' sidecars."""
    from petbind.errors import PetbindError
    from petbind.io.tables import read_json

    psfs, conds, rec = [], [], {}
    for s in scans:
        p = out_dir / s.rel_dir / f"{s.stem}_desc-{DESC}_tacs.json"
        try:
            info = read_json(p)["PartialVolumeCorrection"]
        except (PetbindError, KeyError):
            continue
        if info["PSF"] not in psfs:
            psfs.append(info["PSF"])
        conds.append(float(info["GTMConditionNumber"]))
        for r, v in info["RecoveryCoefficient"].items():
            rec.setdefault(r, []).append(float(v))
    return {"psf": psfs, "assumes": _assumes(scans, out_dir),
            "condition_number": [min(conds), max(conds)] if conds else None,
            "recovery": {r: float(np.mean(v)) for r, v in rec.items()}}


def _assumes(scans: list[Any], out_dir: Path) -> str | None:
    from petbind.io.tables import read_json

    for s in scans:
        p = out_dir / s.rel_dir / f"{s.stem}_desc-{DESC}_tacs.json"
        if p.exists():
            return read_json(p)["PartialVolumeCorrection"].get("Assumes")
    return None


def pvc_statistics(scans: list[Any], config: Any, out_dir: Path,
                   truth: pd.DataFrame | None) -> dict[str, Any] | None:
    """``group/desc-pvc_outcomes.tsv`` and ``group/desc-pvc_roi_stats.tsv``; summary entry.

    Returns
    -------
    dict or None
        ``{"method", "psf", "assumes", "condition_number", "recovery", "atlas",
        "highlights", "paths"}`` for ``summary.json``
        (None when the correction is off or some scan has no corrected fits).
    """
    from petbind.io.atomic import write_text_atomic
    from petbind.stats.roi import roi_statistics

    if not config.pvc.enabled:
        return None
    outcomes = pvc_outcomes(scans, out_dir, truth)
    if outcomes is None:
        return None
    group = out_dir / "group"
    write_text_atomic(group / f"desc-{DESC}_outcomes.tsv", table_text(outcomes))
    stats_in = for_stats(outcomes)
    parts = []
    for tracer in config.tracers:
        sub = stats_in[stats_in["tracer"] == tracer]
        if sub.empty:
            continue
        parts.append(roi_statistics(sub, config.contrasts, alpha=config.statistics.alpha,
                                    regions=sorted(set(sub["region"])),
                                    truth="bp_nd_true" if truth is not None else None))
    roi = pd.concat(parts, ignore_index=True)
    write_text_atomic(group / f"desc-{DESC}_roi_stats.tsv", table_text(roi))
    primary = pd.concat([roi[(roi["tracer"] == tr) & (roi["model"] == tc.primary_model)]
                         for tr, tc in config.tracers.items()], ignore_index=True)
    return {"method": config.pvc.method, **_scan_infos(scans, out_dir),
            "atlas": config.pvc.atlas or (
                "each scan's atlas from preprocessing (pvc.atlas is not used with "
                "preprocessing)" if config.preprocess.enabled else "each scan's atlas"),
            "highlights": primary.replace({np.nan: None}).to_dict(orient="records"),
            "paths": {"outcomes": f"group/desc-{DESC}_outcomes.tsv",
                      "roi_stats": f"group/desc-{DESC}_roi_stats.tsv"}}
