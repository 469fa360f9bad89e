"""The Voxelwise section: t maps over anatomy, % change maps, clusters, the viewer's volumes.

The page's viewer (NiiVue) gets its volumes as base64 NIfTI (:func:`nifti_b64`).
"""

from __future__ import annotations

import base64
import gzip
from pathlib import Path
from typing import Any

import numpy as np

from petbind.report.formatting import number
from petbind.report.outputs import StudyOutputs, cfg_get, load_map, maybe_json, maybe_table
from petbind.report.sections.truth import native_truth, true_effect_map

#: Clusters listed per t map (the largest first, as the pipeline writes them).
MAX_CLUSTERS = 10


def mean_map(study: StudyOutputs, tracer: str, model: str | None,
              shape: tuple[int, ...], condition: str | None = None,
              space: str | None = None) -> np.ndarray | None:
    """Mean BP_ND map over the tracer's scans (of one condition, if given) on ``shape``.

    ``space="template"`` averages the maps preprocessing resampled to the template.
    The first call for a tracer, model, grid and space reads each map once and
    keeps the mean of every condition and of all scans (``study.cache``): the
    sections ask for several of them (the report read every map three times).
    """
    key = ("mean_map", tracer, model, tuple(shape), space)
    if key not in study.cache:
        study.cache[key] = _mean_maps(study, tracer, model, shape, space)
    mean = study.cache[key].get(condition)
    return None if mean is None else mean.copy()


def _mean_maps(study: StudyOutputs, tracer: str, model: str | None,
               shape: tuple[int, ...], space: str | None) -> dict[str | None, np.ndarray]:
    """``{condition: mean map, None: mean of all scans}`` from one pass over the maps.

    Each mean is summed in scan order, as one call per condition did.
    """
    totals: dict[str | None, np.ndarray] = {}
    counts: dict[str | None, int] = {}
    for scan in study.scans:
        if scan.tracer != tracer:
            continue
        maps = scan.maps("bpnd", space)
        path = maps.get(model) if model in maps else next(iter(maps.values()), None)
        if path is None:
            continue
        data, _, _ = load_map(path)
        if data.shape != shape:
            continue
        data = np.nan_to_num(data)
        for which in (None, scan.condition):
            totals[which] = data if which not in totals else totals[which] + data
            counts[which] = counts.get(which, 0) + 1
    return {which: total / counts[which] for which, total in totals.items()}


def _template_t1w(study: StudyOutputs) -> Path | None:
    """The template T1w of preprocessing (config ``preprocess.template``), if it exists."""
    tpl = cfg_get(study.config, "preprocess.template")
    if not tpl:
        return None
    path = Path(str(tpl)).expanduser()
    if not path.is_absolute():
        if study.dataset is None:
            return None
        path = study.dataset / path
    return path if path.is_file() else None


def anatomy(study: StudyOutputs, shape: tuple[int, ...],
             affine: np.ndarray, template: bool = False) -> np.ndarray | None:
    """The subjects' mean T1w resampled (trilinear) onto a statistics grid, if in its space.

    A T1w is used only when its field of view matches the grid's (centre and
    extent within one grid voxel per axis): the case of a study analysed in a
    common space (the demo's phantom space). Anatomy in another space (native
    MRI) would need a registration the report does not have, so the caller
    falls back to the mean BP_ND map. For a map in template space
    (``template=True``) the preprocessing template T1w is used instead of the
    subjects' T1w images, which may be in their native positions.
    """
    import nibabel as nib
    from nibabel.processing import resample_from_to

    from petbind.errors import PetbindError
    from petbind.io.images import open_image

    if study.dataset is None or not study.dataset.is_dir():
        return None
    key = ("anatomy", template, shape, np.asarray(affine).round(6).tobytes())
    cache = study.cache
    if key in cache:
        return cache[key]

    def fov(aff: np.ndarray, shp: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        corners = np.array([[0, 0, 0], np.array(shp[:3]) - 1], dtype=float)
        world = nib.affines.apply_affine(aff, corners)
        voxel = np.abs(aff[:3, :3]).sum(axis=0)
        return world.mean(axis=0), np.abs(world[1] - world[0]) + voxel

    centre, extent = fov(np.asarray(affine), shape)
    step = np.abs(np.asarray(affine)[:3, :3]).sum(axis=0)
    total, n = None, 0
    if template:
        tpl = _template_t1w(study)
        paths = [tpl] if tpl is not None else []
    else:
        paths = sorted(study.dataset.glob("sub-*/anat/*_T1w.nii*")) + sorted(
            study.dataset.glob("sub-*/ses-*/anat/*_T1w.nii*"))
    for path in paths:
        try:
            img = open_image(path)
        except PetbindError:  # an unreadable anatomy only costs the underlay
            continue
        if len(img.shape) != 3:
            continue
        c, e = fov(img.affine, img.shape)
        if np.any(np.abs(c - centre) > step) or np.any(np.abs(e - extent) > step):
            continue
        data = np.asarray(resample_from_to(img, (shape[:3], affine), order=1).dataobj,
                          dtype=np.float64)
        total = data if total is None else total + data
        n += 1
    cache[key] = None if total is None else total / n
    return cache[key]


def _in_template(study: StudyOutputs, tm: dict[str, Any], side: dict[str, Any]) -> bool:
    """Whether a voxel statistic lies in template space.

    Said by a ``space-template`` entity in its name, ``"Space": "template"`` in
    its sidecar, or the study config's ``preprocess.enabled`` (preprocessed
    studies run their voxel statistics on the template grid).
    """
    return (tm.get("space") == "template" or str(side.get("Space", "")) == "template"
            or cfg_get(study.config, "preprocess.enabled") is True)


def effect_figures(study: StudyOutputs, tm: dict[str, Any], side: dict[str, Any],
                    contrast: str, zooms: tuple[float, ...], figures: Any,
                    cut: tuple[int, int, int] | None = None
                    ) -> tuple[list[dict], str | None]:
    """The estimated mean % change map and, for simulated data, the true one (same scale).

    The truth is shown only when it lies in the effect map's space: same
    shape, same affine, and not native-space truth beside a template-space
    effect map. Returns the figures and, when the truth is left out, why.
    """
    effect_path = tm["folder"] / f"{tm['prefix']}_stat-effect.nii.gz"
    if not effect_path.is_file():
        return [], None
    effect, effect_affine, _ = load_map(effect_path)
    mask_path = tm["folder"] / f"{tm['prefix']}_mask.nii.gz"
    mask = load_map(mask_path)[0] > 0 if mask_path.is_file() else np.isfinite(effect)
    if mask.shape != effect.shape:
        mask = np.isfinite(effect)
    truth = None
    why = None
    if study.simulated and study.dataset is not None:
        subjects = [str(s) for s in side.get("Subjects") or study.subjects]
        if _in_template(study, tm, side) and native_truth(study.dataset, subjects):
            why = ("The simulated truth is not shown: its maps are in each subject's native "
                   "PET space, this map is in template space.")
        else:
            truth = true_effect_map(study.dataset, tm["tracer"], contrast, subjects,
                                    affine=effect_affine)
            if truth is not None and truth.shape != effect.shape:
                truth = None
            from petbind.simulate.writer import truth_root

            if truth is None and truth_root(study.dataset).is_dir():
                why = ("The simulated truth is not shown: its maps are missing or on another "
                       "grid than this map.")
    from petbind.report.voxel_display import effect_display

    base = mean_map(study, tm["tracer"], tm["model"], effect.shape,
                     cfg_get(study.config, "statistics.baseline_condition",
                              default="baseline"),
                     space="template" if _in_template(study, tm, side) else None)
    disp = effect_display(effect, mask, base)
    top = disp.vmax
    unit = "% change (pp)" if "(" in contrast else "% change"
    limits = {"vmin": disp.vmin, "vmax": disp.vmax, "p1": disp.p1, "p99": disp.p99,
              "note": disp.note()}
    out = [{"label": "estimated mean % change", "figure": figures.figure_to_data_uri(
        figures.ortho_slices(disp.shown, zooms=zooms, cmap="RdBu_r", vmin=-top, vmax=top,
                             label=unit, title=f"estimated: {contrast}", cut=cut)),
            **limits, "volume": disp.shown, "affine": effect_affine}]
    if truth is not None:
        out.append({"label": "simulated truth", "figure": figures.figure_to_data_uri(
            figures.ortho_slices(np.where(disp.keep, np.nan_to_num(truth), 0.0), zooms=zooms,
                                 cmap="RdBu_r", vmin=-top, vmax=top, label=unit,
                                 title=f"truth: {contrast}", cut=cut)), **limits})
    return out, why


def voxel_sections(study: StudyOutputs, figures: Any) -> tuple[list[dict[str, Any]], list]:
    out = []
    volumes: list[dict[str, Any]] = []
    underlays: dict[str, int] = {}
    atlases: dict[Any, Any] = {}
    outlined: set[str] = set()
    outline_volumes: list[dict[str, Any]] = []
    for tm in study.tmaps:
        tmap, affine, zooms = load_map(tm["path"])
        side = maybe_json(tm["folder"] / f"{tm['prefix']}_stat-t.json")
        thr = side.get("cluster_forming_t")
        try:
            thr = float(thr)
        except (TypeError, ValueError):
            thr = None
        in_template = _in_template(study, tm, side)
        space = "template" if in_template else None
        under = anatomy(study, tmap.shape, affine, template=in_template)
        under_label = ("the template T1w (resampled to the statistics grid)" if in_template
                       else "the subjects' mean T1w (resampled to the PET grid)")
        if under is None:
            under = mean_map(study, tm["tracer"], tm["model"], tmap.shape, space=space)
            under_label = "the mean BP_ND map"
        contrast = tm["contrast"]
        if study.roi_stats is not None and "contrast_id" in study.roi_stats:
            hit = study.roi_stats[study.roi_stats["contrast_id"].astype(str) == contrast]
            if len(hit):
                contrast = str(hit["contrast"].iloc[0])
        title = f"{tm['tracer']} ({tm['model']}): t map, {contrast}"
        clusters = maybe_table(tm["folder"] / f"{tm['prefix']}_clusters.tsv")
        from petbind.report.voxel_display import largest_cluster_peak

        cut = largest_cluster_peak(clusters, tmap.shape)  # slices through the largest cluster
        from petbind.report import voxel_display as vd

        where = vd.section_where(study, tm, side, contrast, tmap, affine, thr, clusters,
                                 in_template, atlases, load=load_map, mean_map=mean_map,
                                 true_effect=true_effect_map, native=native_truth)
        cut = where.cut or cut  # ... or the largest in a target region (voxel_display)
        if where.cluster_rows is not None:
            clusters = clusters.assign(**{k: [r.get(k, "") for r in where.cluster_rows]
                                          for k in where.cluster_rows[0] if k[0] != "_"})
        sec = {
            "title": title, "file": tm["path"].name, "threshold": number(thr, 2),
            "underlay": under_label,
            "sidecar": {k: (f"{side[k]:.4g}" if isinstance(side[k], float) else side[k])
                        for k in (
                "n_subjects", "n_flips", "exact", "min_attainable_p", "cluster_forming_t",
                "cluster_forming_p", "smoothing_fwhm_mm", "seed", "mask_voxels")
                        if k in side},
            "figure": figures.figure_to_data_uri(figures.ortho_slices(
                tmap, zooms=zooms, underlay=under, cmap="RdBu_r", symmetric=True,
                threshold=thr, label="t statistic", title=title, cut=cut)),
            "clusters": None if clusters is None else [
                {k: (number(v, 3) if isinstance(v, float) else str(v)) for k, v in row.items()}
                for row in clusters.head(MAX_CLUSTERS).to_dict("records")],
            "n_clusters": 0 if clusters is None else len(clusters),
            "cluster_columns": None if clusters is None else list(clusters.columns),
        }
        sec["effect"], sec["effect_note"] = effect_figures(study, tm, side, contrast,
                                                             zooms, figures, cut)
        sec["targets"], sec["truth_note"] = where.targets, where.truth_note
        sec["atlas"] = None if where.atlas is None else where.atlas.source
        if where.atlas is not None and tm["tracer"] not in outlined:
            outlined.add(tm["tracer"])
            outline_volumes.append(vd.outline_volume(study, tm["tracer"], where.atlas, affine))
        effect_volumes = [(e.pop("volume"), e.pop("affine")) for e in sec["effect"]
                          if "volume" in e]
        out.append(sec)
        if under is not None and tm["tracer"] not in underlays:
            underlays[tm["tracer"]] = len(volumes)
            volumes.append({"name": f"{tm['tracer']}: {under_label}", "kind": "underlay",
                            "b64": nifti_b64(under, affine), "tracer": tm["tracer"]})
        volumes.append({"name": title, "kind": "overlay", "b64": nifti_b64(tmap, affine),
                        "tracer": tm["tracer"], "threshold": thr,
                        "max": float(np.nanmax(np.abs(tmap))) if np.isfinite(tmap).any()
                        else 1.0})
        # the shown % change maps, for the viewer (after the other volumes)
        sec["effect_volumes"] = [
            {"name": f"{tm['tracer']} ({tm['model']}): % change, {contrast}",
             "kind": "effect", "b64": nifti_b64(vol, aff), "tracer": tm["tracer"],
             "max": sec["effect"][0]["vmax"]} for vol, aff in effect_volumes]
    # Parametric maps to browse: each tracer's mean BP_ND map per condition (in template
    # space when preprocessing brought the maps there, so they lie under the t maps).
    space = "template" if cfg_get(study.config, "preprocess.enabled") is True else None
    for tracer in study.tracers:
        tr = (study.config.get("tracers") or {}).get(tracer) or {}
        model = tr.get("map_model") if isinstance(tr, dict) else None
        first = next((s for s in study.scans if s.tracer == tracer and s.maps("bpnd", space)),
                     None)
        if first is None:
            continue
        maps = first.maps("bpnd", space)
        data, affine, _ = load_map(maps.get(model) or next(iter(maps.values())))
        for condition in study.conditions:
            mean = mean_map(study, tracer, model, data.shape, condition, space=space)
            if mean is None:
                continue
            positive = mean[mean > 0]
            volumes.append({"name": f"{tracer}: mean BP_ND, {condition}", "kind": "map",
                            "b64": nifti_b64(mean, affine), "tracer": tracer,
                            "max": float(np.percentile(positive, 99)) if positive.size
                            else 1.0})
    if out:  # drawn over any map of their tracer (after the effect volumes)
        out[0]["outline_volumes"] = [v for v in outline_volumes if v is not None]
    return out, volumes


def nifti_b64(data: np.ndarray, affine: np.ndarray) -> str:
    """A 3-D map as gzip-compressed NIfTI-1, int16 with a scale factor, in base64.

    int16 with ``scl_slope`` keeps 1/32000 of the range (ample for display)
    at half the size of float32; gzip (mtime 0) keeps the page reproducible.
    """
    import nibabel as nib

    arr = np.nan_to_num(np.asarray(data, dtype=np.float64))
    top = float(np.max(np.abs(arr))) or 1.0
    slope = top / 32000.0
    img = nib.Nifti1Image(np.round(arr / slope).astype(np.int16), affine)
    img.header.set_slope_inter(slope, 0.0)
    img.header.set_xyzt_units("mm")
    return base64.b64encode(gzip.compress(img.to_bytes(), mtime=0)).decode("ascii")
