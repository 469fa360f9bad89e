"""The reference of every ``study.toml`` key, generated from the parser's own defaults.

The defaults are not written here: :func:`defaults` parses a minimal config
with :func:`petbind.study.config.parse_config` and reads what it filled in
(``StudyConfig.to_dict``), so the reference cannot drift from the parser.
Only the one-line meanings are written here (:data:`MEANING`); a test checks
that every key the parser knows has one and that ``docs/study-config.md``
is this module's output. Regenerate it with::

    python -m petbind.study.reference > docs/study-config.md
"""

from __future__ import annotations

import json
from typing import Any

from petbind.stats.power_config import POWER_MEANING

#: Name used for the per-tracer table and the per-region entry in the reference.
TRACER = "<trc>"
REGION = "<name>"

#: One line per key: what it means and what it takes.
MEANING: dict[str, str] = {
    "dataset.path": "BIDS root; `petbind run BIDS_DIR` overrides it; relative to the config "
                    "file",
    "dataset.condition_entity": "BIDS entity whose label is the condition (`ses`, `acq`, "
                                "`task` ...; not `sub`, `trc`, `run`)",
    "dataset.atlas": "PET-space atlas per scan (`*_dseg.nii.gz` + `_dseg.tsv` named like the "
                     "scan): `auto` searches `derivatives/*/`, or a derivatives folder",
    "dataset.truth": "simulated truth table: `auto` (`derivatives/petbind-sim/truth.tsv` when "
                     "present), `none`, or a path",
    "dataset.condition": "conditions from a table: `sessions.tsv:<column>` (per session) or "
                         "`participants.tsv:<column>` (between subjects); `\"\"` = the "
                         "`condition_entity` label",
    "dataset.segmentation": "each subject's T1w-space segmentation: a derivatives folder "
                            "(BIDS `anat/*_dseg.nii[.gz]` + `_dseg.tsv`, PETPrep `space-T1w`"
                            " / `desc-aparcaseg`, FreeSurfer `mri/aparc+aseg.mgz`, "
                            "`aseg.mgz`) or a table `{\"01\" = \"path\"}`; `\"\"` = use "
                            "`atlas`",
    "dataset.select": "only scans whose file names carry these entity labels, e.g. "
                      "`{rec = \"acdyn\"}` beside a static reconstruction (`{}` = all)",
    "dataset.segmentation_labels": "your `FreeSurferColorLUT.txt` for `.mgz` segmentations "
                                   "(`\"\"` = in the folder, else `$FREESURFER_HOME`)",
    f"tracers.{TRACER}.reference_region": "required: the reference region (an atlas region "
                                          "or a `[regions]` name)",
    f"tracers.{TRACER}.target_regions": "regions fitted and tested; `[]` = every region "
                                        "except the reference and `exclude_regions`",
    f"tracers.{TRACER}.exclude_regions": "regions never used as targets (nor in the map mask)",
    f"tracers.{TRACER}.models": "region models: srtm, srtm2, bfsrtm, mrtm, mrtm2, logan, suvr",
    f"tracers.{TRACER}.primary_model": "the model of the summary tables and mixed model "
                                       "(default: the first of `models`)",
    f"tracers.{TRACER}.map_model": "model of the parametric BP_ND maps and voxel statistics "
                                   "(`\"\"` = no maps)",
    f"tracers.{TRACER}.k2prime": "k2' (1/min) for srtm2 / mrtm2 / logan: a number, `mrtm` or "
                                 "`srtm` (fit of `k2prime_region`; also `\"mrtm@REGION\"`), "
                                 "`median` (median k2' over the targets), `auto` (over their "
                                 "higher-binding half) or `none` (Logan without k2')",
    f"tracers.{TRACER}.k2prime_region": "high-binding region of the `mrtm` / `srtm` k2' "
                                        "strategies",
    f"tracers.{TRACER}.model_settings": "per-model settings, e.g. `[tracers.X.model_settings."
                                        "logan] tstar = 30`, `weights = \"counts\"` (the "
                                        "isotope comes from `TracerRadionuclide`), `start`, "
                                        "`end` (min)",
    "contrasts": "list of `\"A - B\"` or `\"(A - B) - (C - D)\"`, or tables with `expr` and "
                 "an optional `name`; required",
    "statistics.baseline_condition": "reference level of the mixed model; must appear in a "
                                     "contrast",
    "statistics.alpha": "two-sided level; confidence intervals are 1 - alpha",
    "statistics.runs": "two runs of one subject x condition x tracer: `error`, `mean` "
                       "(average BP_ND) or `first`",
    "statistics.blocked_conditions": "conditions given with a blocking drug: occupancy per "
                                     "region and subject against the baseline, and the Lassen "
                                     "plot (`group/occupancy.tsv`, `group/lassen.tsv`)",
    "statistics.group": "`participants.tsv` column with each subject's group (mixed model "
                        "condition x group); `\"\"` = none",
    "statistics.covariates": "numeric covariates of the mixed model: columns of "
                             "`sub-*_sessions.tsv` (per session) or `participants.tsv`",
    "statistics.voxel.enabled": "voxel statistics on the parametric maps",
    "statistics.voxel.smoothing_fwhm_mm": "Gaussian smoothing of the contrast maps (mm FWHM)",
    "statistics.voxel.cluster_forming_p": "two-sided uncorrected p that forms clusters",
    "statistics.voxel.n_permutations": "sign flips (exact enumeration when 2^n_subjects is "
                                       "smaller)",
    "statistics.voxel.seed": "random seed of the sign flips",
    "parametric.pet_fwhm_mm": "3D Gaussian smoothing (FWHM, mm) of every PET frame, normalised "
                              "inside the brain mask, before the voxel fits of `map_model`; "
                              "`0` = none; stated in the report's Methods and the maps' "
                              "sidecars (`Settings.pet_smoothing`)",
    "preprocess.enabled": "motion correction, PET->T1w->template registration and the "
                          "template atlas in PET space before the fits",
    "preprocess.motion": "realign the frames (rigid)",
    "preprocess.reference_window": "`[start, end]` minutes averaged into the motion "
                                   "reference; `[]` = the default",
    "preprocess.min_block_min": "short early frames pooled into blocks at least this long "
                                "(min)",
    "preprocess.fd_threshold_mm": "framewise displacement (mm) above which a frame is flagged",
    "preprocess.nonlinear": "SyN after the affine T1w -> template registration",
    "preprocess.atlas_method": "`fraction` (partial-volume aware) or `nearest`",
    "preprocess.grey_matter": "restrict grey-matter regions of preprocessing's curves to grey "
                              "matter",
    "preprocess.template": "template T1w (required when enabled); relative to the BIDS root",
    "preprocess.atlas": "template-space dseg (`\"\"` = the `*_dseg.nii.gz` beside the "
                        "template)",
    "pvc.method": "partial-volume correction of every scan: `none`, `gtm`, `sgtm`, `rbv`, "
                  "`iy`, `mg` (docs/pvc.md); corrected `desc-pvc` outputs beside the others",
    "pvc.fwhm_mm": "scanner PSF FWHM in mm: a number or `[x, y, z]`; `[]` = from the PET "
                   "sidecar (`ScannerResolutionFWHM`, Gaussian `ReconFilterSize`)",
    "pvc.atlas": "atlas of the correction: `\"\"` = each scan's own; or a dseg on the PET grid "
                 "or a finer grid nested in it, relative to the BIDS root",
    "pvc.iterations": "iterations of iterative Yang (`iy`)",
    "pvc.non_grey": "regions Mueller-Gaertner (`mg`) does not treat as grey matter",
    f"regions.{REGION}": "an analysis region: atlas label names or glob patterns, pooled "
                         "volume-weighted, e.g. `NAcc = [\"*-Accumbens-area\"]`",
    **POWER_MEANING,
}


def defaults() -> dict[str, Any]:
    """Every key with the default the parser fills in (tracer and region tables generic)."""
    from petbind.study.config import parse_config

    cfg = parse_config({"tracers": {TRACER: {"reference_region": "cerebellum"}},
                        "contrasts": ["drug - baseline"]}, source="<reference>")
    d = cfg.to_dict()
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if (isinstance(node, dict) and (node or not prefix)
                and not prefix.endswith("model_settings")):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else k)
        else:
            flat[prefix] = node

    walk({k: v for k, v in d.items() if k not in ("contrasts", "regions")}, "")
    flat[f"tracers.{TRACER}.reference_region"] = None  # required: no default
    flat["dataset.path"] = None
    flat["contrasts"] = None
    flat[f"regions.{REGION}"] = None
    return flat


def _value(v: Any) -> str:
    if v is None:
        return "(none)"
    return "`" + json.dumps(v) + "`"


def config_reference() -> str:
    """``docs/study-config.md``: every key, its default and its meaning."""
    keys = defaults()
    lines = ["# study.toml reference", "",
             "<!-- generated by `python -m petbind.study.reference`; do not edit -->", "",
             "Every key of the study configuration read by `petbind run --config`, with the",
             "default the parser fills in when the key is absent. `petbind init BIDS_DIR`",
             "writes a commented config for a dataset; `petbind run --print-config` prints",
             "the founding study's. Times are minutes, rates 1/min.", ""]
    section = None
    for key in sorted(keys, key=_order):
        top = key.split(".")[0]
        if top != section:
            section = top
            title = {"tracers": f"[tracers.{TRACER}] (one per `trc-` label)",
                     "regions": "[regions]", "contrasts": "[[contrasts]]"}.get(top, f"[{top}]")
            lines += ["", f"## {title}", "", "| key | default | meaning |", "|---|---|---|"]
        lines.append(f"| `{key}` | {_value(keys[key])} | {MEANING.get(key, '')} |")
    return "\n".join(lines) + "\n"


def _order(key: str) -> tuple[int, str]:
    tops = ["dataset", "regions", "tracers", "contrasts", "parametric", "statistics",
            "preprocess", "pvc", "power"]
    top = key.split(".")[0]
    return (tops.index(top) if top in tops else len(tops)), key


if __name__ == "__main__":  # pragma: no cover
    print(config_reference(), end="")
