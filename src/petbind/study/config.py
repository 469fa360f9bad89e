"""The study configuration: a validated TOML file describing a challenge study.

A study file names the dataset, each tracer's reference region, target
regions, models and k2' strategy, how conditions are labelled, the contrasts
to test and the statistics options. Every key is checked on load; an error
names the file and the key (``tracers.DASB.reference_region``) and says what
would fix it. ``petbind run --print-config`` prints :data:`DEFAULT_CONFIG`,
the commented default (the founding ketamine study).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from petbind.errors import ConfigError
from petbind.io.tomlfile import read_toml
from petbind.models.catalogue import K2PRIME_MODELS, model_names
from petbind.stats.roi import Contrast

#: Models the pipeline can fit to region curves (from the model catalogue).
REGION_MODELS = model_names("reference")
#: Models given the tracer's k2' (1/min) unless its policy is "none":
#: :data:`petbind.models.catalogue.K2PRIME_MODELS`, imported above (name kept).
#: k2' policy words (petbind.models.k2prime); also a number or "mrtm@REGION".
K2PRIME_STRATEGIES = ("mrtm", "srtm", "median", "auto", "none")

DEFAULT_CONFIG = '''\
# petbind study configuration (TOML). Every key is optional unless marked.
# Times: minutes inside petbind, seconds in BIDS files. Rates: 1/min.

[dataset]
# BIDS root; the command-line argument of `petbind run BIDS_DIR` overrides it.
# Relative paths are relative to this file.
# path = "/data/ketamine_study"
# BIDS entity whose label is the condition: "ses" (sessions, default) or any
# other entity of the PET file names (e.g. "acq", "task").
condition_entity = "ses"
# Where the atlas (a *_dseg.nii.gz + *_dseg.tsv per scan, in PET space) lives:
# "auto" searches derivatives/*/ (except derivatives/petbind) for a file named
# like the scan; or give a derivatives folder, e.g. "derivatives/petbind-sim".
atlas = "auto"
# Simulated truth (subject, condition, tracer, region, bp_nd, r1 ...): "auto"
# uses derivatives/petbind-sim/truth.tsv when present; "none" ignores it.
truth = "auto"
# Conditions from a table instead of the file names: "sessions.tsv:<column>"
# (sub-*/sub-*_sessions.tsv, per session) or "participants.tsv:<column>"
# (between subjects); "" = the label of condition_entity.
condition = ""
# A segmentation per subject in T1w space instead of a PET-space atlas per
# scan: a derivatives folder holding sub-*/**/anat/*_dseg.nii[.gz] + _dseg.tsv
# (PETPrep/PETSurfer space-T1w, desc-aparcaseg) or FreeSurfer
# sub-*/mri/aparc+aseg.mgz / aseg.mgz; or a table {"01" = "path", ...}.
# "" = none (use `atlas`).
segmentation = ""
# Label names of FreeSurfer .mgz segmentations: your FreeSurferColorLUT.txt
# ("" = $FREESURFER_HOME/FreeSurferColorLUT.txt or one in the segmentation folder).
segmentation_labels = ""
# Only scans whose file names carry these entity labels, e.g. {rec = "acdyn"}
# when a session also holds a static reconstruction ({} = every scan).
select = {}

# One table per tracer (the trc- label of the PET files). Scans of tracers
# that have no table here are skipped with a warning.
[tracers.AZ10419369]
reference_region = "cerebellum"   # required: a `region` of the dseg.tsv
# Regions to fit and test; [] = every atlas region except the reference and
# `exclude_regions`.
target_regions = ["NAcc", "VP", "caudate", "putamen", "thalamus", "occipital_cortex"]
exclude_regions = ["white_matter", "csf"]
# Region models (the model registry's names): srtm, srtm2, bfsrtm, mrtm,
# mrtm2, logan, suvr.
models = ["srtm", "mrtm2", "logan"]
primary_model = "srtm"            # the model of the summary table
map_model = "mrtm2"               # parametric maps and voxel statistics ("" = none)
# k2' (1/min) for srtm2 / mrtm2 / logan: a number, or "mrtm" / "srtm" (fit of
# `k2prime_region`, k2' = k2 / R1; also written "mrtm@VP"), "median" (median
# k2' of the targets: MRTM, SRTM for srtm2 alone), "auto" (median over their
# higher-binding half), or
# "none" (Logan without its k2' term; not for srtm2 / mrtm2).
k2prime = "mrtm"
k2prime_region = "VP"

[tracers.DASB]
reference_region = "cerebellum"
target_regions = ["NAcc", "VP", "caudate", "putamen", "thalamus", "midbrain",
                  "frontal_cortex", "occipital_cortex"]
exclude_regions = ["white_matter", "csf"]
models = ["srtm", "mrtm2", "logan"]
primary_model = "srtm"
map_model = "mrtm2"
k2prime = "mrtm"
k2prime_region = "midbrain"

# Contrasts between conditions: "A - B" (change from B to A) or the
# interaction "(A - B) - (C - D)". An optional name (letters and digits) labels
# the output files.
[[contrasts]]
expr = "ketamine - baseline"
[[contrasts]]
expr = "ketaminenbqx - baseline"
[[contrasts]]
expr = "(ketamine - baseline) - (ketaminenbqx - baseline)"

[statistics]
baseline_condition = "baseline"   # reference level of the mixed model
alpha = 0.05                      # two-sided; CI level is 1 - alpha
# Two runs of one subject x condition x tracer: "error" (default), "mean"
# (average their BP_ND) or "first" (lowest run number).
runs = "error"
# Conditions scanned after a blocking drug: occupancy per region and the Lassen
# plot against the baseline condition (group/occupancy.tsv, group/lassen.tsv).
blocked_conditions = []
# Mixed model: a participants.tsv column with each subject's group ("" = none)
# and numeric covariates (columns of sub-*/sub-*_sessions.tsv, per session, or
# of participants.tsv, per subject), e.g. ["dose_mg_per_kg"].
group = ""
covariates = []

[statistics.voxel]
enabled = true
smoothing_fwhm_mm = 0.0           # Gaussian smoothing of the contrast maps
cluster_forming_p = 0.01          # two-sided, uncorrected
n_permutations = 5000             # exact enumeration when 2^n_subjects <= this
seed = 0

# Preprocessing of raw scans (docs/preprocessing.md): head-motion correction,
# PET -> T1w -> template registration and the template atlas in each scan's
# PET space. Off: the scans are taken as aligned and the atlas comes from
# dataset.atlas. On: outputs in OUT/preprocess/, the atlas from the template,
# and voxel statistics in template space.
[preprocess]
enabled = false
motion = true                     # realign the frames (rigid)
# Minutes [start, end] after injection averaged into the motion reference;
# [] = 10-60 % of the scan.
reference_window = []
min_block_min = 2.0               # short early frames pooled to blocks at least this long (min)
fd_threshold_mm = 0.5             # flag frames whose framewise displacement exceeds this (mm)
nonlinear = true                  # SyN after the affine T1w -> template registration
atlas_method = "fraction"         # "fraction" (partial-volume aware) or "nearest"
# Restrict grey-matter regions of preprocessing's _tacs.tsv to T1w grey matter
# (the pipeline's own region fits use the atlas labels; docs/preprocessing.md).
grey_matter = false
# Template T1-weighted image (required when enabled); relative paths are
# relative to the BIDS root, like dataset.atlas and dataset.truth.
template = ""
atlas = ""                        # template-space dseg; "" = *_dseg.nii.gz beside the template

# Partial-volume correction (docs/pvc.md): "none", or "gtm" / "sgtm" (region
# curves), "rbv" / "iy" / "mg" (a corrected 4D image, its region curves and maps).
# Outputs carry desc-pvc beside the uncorrected ones.
[pvc]
method = "none"
# Scanner PSF FWHM in mm: one number, or [x, y, z]; [] = from the PET sidecar
# (ScannerResolutionFWHM and/or a Gaussian ReconFilterSize).
fwhm_mm = []
# Atlas for the correction: "" = each scan's own atlas (PET grid); or a dseg on
# the PET grid or on a finer grid aligned with it (partial-volume aware, e.g.
# a 1 mm atlas for 2 mm PET), relative to the BIDS root, its _dseg.tsv beside it.
atlas = ""
iterations = 10                   # iterative Yang
non_grey = ["white_matter", "csf"]  # regions Mueller-Gaertner does not treat as grey matter
'''


@dataclass(frozen=True)
class TracerConfig:
    """Analysis settings of one tracer.

    Attributes
    ----------
    name : str
        The ``trc-`` label.
    reference_region : str
        Atlas ``region`` used as the reference tissue.
    target_regions : tuple of str
        Regions fitted and tested; empty means every atlas region except the
        reference and ``exclude_regions``.
    exclude_regions : tuple of str
    models : tuple of str
        Region models (registry names).
    primary_model : str
    map_model : str or None
        Model of the parametric maps; ``None`` for no maps.
    k2prime : float or str
        k2' in 1/min, or a policy of :mod:`petbind.models.k2prime`
        (:data:`K2PRIME_STRATEGIES`, ``"mrtm@REGION"``); see :attr:`k2prime_policy`.
    k2prime_region : str or None
        High-binding region for the ``mrtm`` / ``srtm`` strategies.
    model_settings : dict
        Per-model settings passed to the registry (``{"logan": {"tstar": 30}}``).
    """

    name: str
    reference_region: str
    target_regions: tuple[str, ...] = ()
    exclude_regions: tuple[str, ...] = ("white_matter", "csf")
    models: tuple[str, ...] = ("srtm",)
    primary_model: str = "srtm"
    map_model: str | None = None
    k2prime: float | str = "mrtm"
    k2prime_region: str | None = None
    model_settings: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def needs_k2prime(self) -> bool:
        """True when a region model or the map model takes the tracer's k2'."""
        if isinstance(self.k2prime, str) and self.k2prime.strip().lower() == "none":
            return False
        used = set(self.models) | ({self.map_model} if self.map_model else set())
        return bool(used & set(K2PRIME_MODELS))

    @property
    def k2prime_policy(self) -> Any:
        """:class:`petbind.models.k2prime.K2PrimePolicy` of ``k2prime`` / ``k2prime_region``."""
        from petbind.models.k2prime import parse_k2prime

        return parse_k2prime(self.k2prime, self.k2prime_region,
                             field=f"tracers.{self.name}.k2prime")


@dataclass(frozen=True)
class VoxelConfig:
    """Voxel statistics options (see :func:`petbind.stats.voxel.sign_flip_test`)."""

    enabled: bool = True
    smoothing_fwhm_mm: float = 0.0
    cluster_forming_p: float = 0.01
    n_permutations: int = 5000
    seed: int = 0


@dataclass(frozen=True)
class PreprocessConfig:
    """The ``[preprocess]`` section (see :class:`petbind.preprocess.scan.PreprocessOptions`).

    Attributes
    ----------
    enabled : bool
        Preprocess raw scans before the fits.
    motion : bool
        Realign the frames.
    reference_window : (float, float) or None
        Minutes after injection averaged into the motion reference (None: default).
    min_block_min : float
        Minimum block length (min) that short early frames are pooled to.
    fd_threshold_mm : float
        Framewise-displacement threshold (mm) that flags a frame.
    nonlinear : bool
        SyN after the affine T1w -> template step.
    atlas_method : {"fraction", "nearest"}
    grey_matter : bool
        Grey-matter restriction of preprocessing's ``_tacs.tsv``.
    template : str
        Template T1w path ("" when disabled); relative to the BIDS root.
    atlas : str
        Template-space dseg ("" = beside the template); relative to the BIDS root.
    """

    enabled: bool = False
    motion: bool = True
    reference_window: tuple[float, float] | None = None
    min_block_min: float = 2.0
    fd_threshold_mm: float = 0.5
    nonlinear: bool = True
    atlas_method: str = "fraction"
    grey_matter: bool = False
    template: str = ""
    atlas: str = ""

    def resolve(self, bids: Path) -> tuple[Path, Path]:
        """Absolute template and atlas paths (relative ones are relative to ``bids``)."""
        from petbind.preprocess.scan import default_atlas

        def where(p: str) -> Path:
            q = Path(p).expanduser()
            return q if q.is_absolute() else Path(bids) / q

        template = where(self.template)
        return template, where(self.atlas) if self.atlas else default_atlas(template)

    def options(self) -> Any:
        """The :class:`petbind.preprocess.scan.PreprocessOptions` of this section."""
        from petbind.preprocess.scan import PreprocessOptions

        return PreprocessOptions(
            motion=self.motion, reference_window=self.reference_window,
            min_block_min=self.min_block_min, fd_threshold_mm=self.fd_threshold_mm,
            nonlinear=self.nonlinear, atlas_method=self.atlas_method,  # type: ignore[arg-type]
            grey_matter=self.grey_matter)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the section (TOML / JSON serialisable)."""
        return {"enabled": self.enabled, "motion": self.motion,
                "reference_window": list(self.reference_window or []),
                "min_block_min": self.min_block_min, "fd_threshold_mm": self.fd_threshold_mm,
                "nonlinear": self.nonlinear, "atlas_method": self.atlas_method,
                "grey_matter": self.grey_matter, "template": self.template,
                "atlas": self.atlas}


@dataclass(frozen=True)
class PvcConfig:
    """The ``[pvc]`` section: partial-volume correction (docs/pvc.md).

    Attributes
    ----------
    method : {"none", "gtm", "sgtm", "rbv", "iy", "mg"}
    fwhm_mm : (float, float, float) or None
        PSF FWHM (mm) along x, y, z; None: from the PET sidecar.
    atlas : str
        Atlas for the correction ("" = each scan's atlas); relative to the BIDS root.
    iterations : int
        Iterations of iterative Yang.
    non_grey : tuple of str
        Regions that Mueller-Gaertner does not treat as grey matter.
    """

    method: str = "none"
    fwhm_mm: tuple[float, float, float] | None = None
    atlas: str = ""
    iterations: int = 10
    non_grey: tuple[str, ...] = ("white_matter", "csf")

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the section (TOML / JSON serialisable)."""
        return {"method": self.method, "fwhm_mm": list(self.fwhm_mm or []),
                "atlas": self.atlas, "iterations": self.iterations,
                "non_grey": list(self.non_grey)}


@dataclass(frozen=True)
class StatisticsConfig:
    """Region statistics options."""

    baseline_condition: str = "baseline"
    alpha: float = 0.05
    runs: str = "error"
    voxel: VoxelConfig = field(default_factory=VoxelConfig)
    #: Conditions scanned after a blocking drug: occupancy + Lassen plot vs the baseline.
    blocked_conditions: tuple[str, ...] = ()
    #: participants.tsv column with the subjects' group (mixed model: condition x group).
    group: str = ""
    #: Numeric covariates of the mixed model (sessions.tsv or participants.tsv columns).
    covariates: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetConfig:
    """Where conditions and anatomy come from (``[dataset]`` keys beyond the paths).

    Attributes
    ----------
    condition : str
        ``"sessions.tsv:<column>"`` or ``"participants.tsv:<column>"``; "" = the
        label of ``condition_entity``.
    segmentation : str or dict of str -> str
        Subject-level T1w-space segmentation: a derivatives folder, or a
        table subject label -> file; "" = none.
    segmentation_labels : str
        FreeSurferColorLUT.txt for ``.mgz`` segmentations ("" = search).
    select : dict of str -> str
        Entity -> label that a scan's file name must carry (``{"rec": "acdyn"}``).
    """

    condition: str = ""
    segmentation: str | dict[str, str] = ""
    segmentation_labels: str = ""
    select: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"condition": self.condition, "select": dict(self.select),
                "segmentation": (dict(self.segmentation)
                                 if isinstance(self.segmentation, dict) else self.segmentation),
                "segmentation_labels": self.segmentation_labels}


@dataclass(frozen=True)
class StudyConfig:
    """A validated study configuration.

    Attributes
    ----------
    tracers : dict of str -> TracerConfig
    contrasts : tuple of Contrast
    statistics : StatisticsConfig
    dataset : Path or None
        BIDS root from the file (the command line overrides it).
    condition_entity : str
        BIDS entity whose label is the condition (``ses``).
    atlas : str
        ``"auto"`` or a derivatives folder relative to the BIDS root.
    truth : str
        ``"auto"``, ``"none"`` or a path of a truth table.
    preprocess : PreprocessConfig
        Motion correction, registration and template atlas of raw scans.
    pvc : PvcConfig
        Partial-volume correction.
    source : str or None
        File the configuration came from.
    """

    tracers: dict[str, TracerConfig]
    contrasts: tuple[Contrast, ...]
    statistics: StatisticsConfig = field(default_factory=StatisticsConfig)
    dataset: Path | None = None
    condition_entity: str = "ses"
    atlas: str = "auto"
    truth: str = "auto"
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    source: str | None = None
    #: ``[dataset]`` condition table and subject segmentation.
    data: DatasetConfig = field(default_factory=DatasetConfig)
    #: ``[regions]``: analysis region -> atlas label names or glob patterns, pooled
    #: volume-weighted (:mod:`petbind.study.regions`); empty = the atlas's regions.
    regions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    pvc: PvcConfig = field(default_factory=PvcConfig)

    @property
    def conditions(self) -> tuple[str, ...]:
        """Conditions named by the contrasts (and the baseline), in order of appearance."""
        seen = dict.fromkeys([self.statistics.baseline_condition])
        for c in self.contrasts:
            seen.update(dict.fromkeys(c.conditions))
        return tuple(seen)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with every default filled in (TOML / JSON serialisable)."""
        tracers = {}
        for name, t in self.tracers.items():
            tracers[name] = {
                "reference_region": t.reference_region,
                "target_regions": list(t.target_regions),
                "exclude_regions": list(t.exclude_regions), "models": list(t.models),
                "primary_model": t.primary_model, "map_model": t.map_model or "",
                "k2prime": t.k2prime, "k2prime_region": t.k2prime_region or "",
                "model_settings": t.model_settings,
            }
        s = self.statistics
        dataset = {"condition_entity": self.condition_entity, "atlas": self.atlas,
                   "truth": self.truth, **self.data.to_dict()}
        if self.dataset is not None:
            dataset["path"] = str(self.dataset)
        return {
            "dataset": dataset,
            "tracers": tracers,
            "contrasts": [{"expr": c.expr, "name": c.name} for c in self.contrasts],
            "statistics": {
                "baseline_condition": s.baseline_condition, "alpha": s.alpha, "runs": s.runs,
                "blocked_conditions": list(s.blocked_conditions), "group": s.group,
                "covariates": list(s.covariates),
                "voxel": {"enabled": s.voxel.enabled,
                          "smoothing_fwhm_mm": s.voxel.smoothing_fwhm_mm,
                          "cluster_forming_p": s.voxel.cluster_forming_p,
                          "n_permutations": s.voxel.n_permutations, "seed": s.voxel.seed},
            },
            "preprocess": self.preprocess.to_dict(),
            "regions": {k: list(v) for k, v in self.regions.items()},
            "pvc": self.pvc.to_dict(),
        }

    def to_toml(self) -> str:
        """The resolved configuration as TOML text."""
        import tomli_w

        return tomli_w.dumps(self.to_dict())


# ----------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------
class _Checker:
    """Typed access to a TOML table with errors that name the key."""

    def __init__(self, source: str | None) -> None:
        self.source = source

    def fail(self, key: str, message: str, fix: str) -> ConfigError:
        return ConfigError(message, path=self.source, field=key, fix=fix)

    def table(self, data: dict, key: str, name: str) -> dict:
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, got {type(value).__name__}",
                            f"write [{key}] with keys below it")
        return value

    def unknown(self, data: dict, key: str, allowed: set[str]) -> None:
        extra = sorted(set(data) - allowed)
        if extra:
            where = f"{key}.{extra[0]}" if key else extra[0]
            raise self.fail(where, f"unknown key '{extra[0]}'",
                            f"use one of: {', '.join(sorted(allowed))}")

    def str_(self, data: dict, key: str, name: str, default: str | None,
             choices: tuple[str, ...] | None = None) -> str | None:
        value = data.get(name, default)
        full = f"{key}.{name}" if key else name
        if value is None:
            if default is None and name in data:
                raise self.fail(full, "must not be empty", "give a value")
            return None
        if not isinstance(value, str):
            raise self.fail(full, f"must be a string, got {value!r}", "quote the value")
        if choices is not None and value not in choices:
            raise self.fail(full, f"{value!r} is not allowed", f"use one of: {', '.join(choices)}")
        return value

    def strs(self, data: dict, key: str, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = data.get(name, list(default))
        full = f"{key}.{name}"
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(full, f"must be a list of strings, got {value!r}",
                            f'write e.g. {name} = ["NAcc", "VP"]')
        return tuple(value)

    def num(self, data: dict, key: str, name: str, default: float, lo: float, hi: float,
            integer: bool = False) -> float:
        value = data.get(name, default)
        full = f"{key}.{name}"
        ok = isinstance(value, int) if integer else isinstance(value, int | float)
        if not ok or isinstance(value, bool):
            kind = "an integer" if integer else "a number"
            raise self.fail(full, f"must be {kind}, got {value!r}", f"e.g. {name} = {default}")
        if not lo <= value <= hi:
            raise self.fail(full, f"{value} is outside [{lo:g}, {hi:g}]",
                            f"use a value in [{lo:g}, {hi:g}]")
        return value

    def bool_(self, data: dict, key: str, name: str, default: bool) -> bool:
        value = data.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(f"{key}.{name}", f"must be true or false, got {value!r}",
                            f"{name} = true")
        return value


def _model_names() -> tuple[str, ...]:
    """Region models the registry knows (the catalogue's and any registered later)."""
    from petbind.models.registry import available_models

    return tuple(available_models("reference"))


def _map_models() -> tuple[str, ...]:
    """Models :mod:`petbind.parametric` can map (the catalogue's mappable models)."""
    return model_names("reference", mappable=True)


def _tracer(ck: _Checker, name: str, data: Any) -> TracerConfig:
    key = f"tracers.{name}"
    if not isinstance(data, dict):
        raise ck.fail(key, "must be a table", f"write [tracers.{name}] with keys below it")
    ck.unknown(data, key, {"reference_region", "target_regions", "exclude_regions", "models",
                           "primary_model", "map_model", "k2prime", "k2prime_region",
                           "model_settings"})
    if "reference_region" not in data:
        raise ck.fail(f"{key}.reference_region", "missing (required)",
                      'e.g. reference_region = "cerebellum"')
    ref = ck.str_(data, key, "reference_region", None)
    targets = ck.strs(data, key, "target_regions", ())
    if ref in targets:
        raise ck.fail(f"{key}.target_regions", f"lists the reference region {ref!r}",
                      "remove the reference region from the targets")
    exclude = ck.strs(data, key, "exclude_regions", ("white_matter", "csf"))
    models = ck.strs(data, key, "models", ("srtm",))
    if not models:
        raise ck.fail(f"{key}.models", "is empty", 'list at least one model, e.g. ["srtm"]')
    known = _model_names()
    for m in models:
        if m not in known:
            raise ck.fail(f"{key}.models", f"unknown model {m!r}",
                          f"use models of: {', '.join(known)}")
    primary = ck.str_(data, key, "primary_model", models[0])
    if primary not in models:
        raise ck.fail(f"{key}.primary_model", f"{primary!r} is not in models {list(models)}",
                      "add it to models or choose one of them")
    map_model = ck.str_(data, key, "map_model", "") or None
    if map_model is not None:
        if map_model not in _map_models():
            raise ck.fail(f"{key}.map_model", f"unknown map model {map_model!r}",
                          f"use one of: {', '.join(_map_models())}, or \"\" for no maps")
    from petbind.errors import ModelError
    from petbind.models.k2prime import check_policy_for, parse_k2prime

    k2 = data.get("k2prime", "mrtm")
    if isinstance(k2, bool) or not isinstance(k2, int | float | str):
        raise ck.fail(f"{key}.k2prime", f"must be a number or a strategy, got {k2!r}",
                      f"a rate in 1/min or one of {', '.join(K2PRIME_STRATEGIES)}")
    if isinstance(k2, str):
        try:
            policy = parse_k2prime(k2, field=f"{key}.k2prime")
            check_policy_for(policy, [*models, *([map_model] if map_model else [])])
        except ModelError as exc:
            raise ck.fail(f"{key}.k2prime", exc.message,
                          f"a rate in 1/min or one of {', '.join(K2PRIME_STRATEGIES)}, "
                          'or "mrtm@REGION"') from exc
    if not isinstance(k2, str) and not 0 < k2 < 10:
        raise ck.fail(f"{key}.k2prime", f"{k2} 1/min is not a plausible rate",
                      "give k2' in 1/min, e.g. 0.1")
    k2_region = ck.str_(data, key, "k2prime_region", "") or None
    t = TracerConfig(name=name, reference_region=ref, target_regions=targets,
                     exclude_regions=exclude, models=models, primary_model=primary,
                     map_model=map_model, k2prime=float(k2) if not isinstance(k2, str) else k2,
                     k2prime_region=k2_region,
                     model_settings=ck.table(data, key, "model_settings"))
    if t.needs_k2prime and t.k2prime_policy.kind == "region" and t.k2prime_policy.region is None:
        raise ck.fail(f"{key}.k2prime_region", f"k2prime = {t.k2prime!r} needs a "
                      "high-binding region", 'e.g. k2prime_region = "putamen"')
    for m, s in t.model_settings.items():
        if not isinstance(s, dict):
            raise ck.fail(f"{key}.model_settings.{m}", "must be a table",
                          f"write [{key}.model_settings.{m}] with settings below it")
    from petbind.study.settings_check import check_model_settings

    check_model_settings(t.model_settings, f"{key}.model_settings", ck.source)
    return t


def parse_config(data: dict[str, Any], *, source: str | None = None,
                 base_dir: Path | None = None) -> StudyConfig:
    """Validate a parsed TOML document.

    Parameters
    ----------
    data : dict
        The TOML document.
    source : str, optional
        File name for error messages.
    base_dir : Path, optional
        Folder that a relative ``dataset.path`` is relative to.

    Raises
    ------
    ConfigError
        Naming the file and the offending key.
    """
    ck = _Checker(source)
    ck.unknown(data, "", {"dataset", "tracers", "contrasts", "statistics", "preprocess",
                          "regions", "pvc"})
    ds = ck.table(data, "dataset", "dataset")
    ck.unknown(ds, "dataset", {"path", "condition_entity", "atlas", "truth", "condition",
                               "segmentation", "segmentation_labels", "select"})
    path = ck.str_(ds, "dataset", "path", None)
    dataset = None
    if path:
        dataset = Path(path)
        if not dataset.is_absolute() and base_dir is not None:
            dataset = base_dir / dataset
    entity = ck.str_(ds, "dataset", "condition_entity", "ses")
    if entity in ("sub", "trc", "run"):
        raise ck.fail("dataset.condition_entity", f"'{entity}' cannot name conditions",
                      "use ses (default) or another entity such as acq or task")
    atlas = ck.str_(ds, "dataset", "atlas", "auto")
    truth = ck.str_(ds, "dataset", "truth", "auto")

    tr = ck.table(data, "tracers", "tracers")
    if not tr:
        raise ck.fail("tracers", "no tracer configured",
                      'add [tracers.<trc label>] with reference_region = "..."')
    tracers = {name: _tracer(ck, name, t) for name, t in tr.items()}

    raw = data.get("contrasts", [])
    if not isinstance(raw, list) or not raw:
        raise ck.fail("contrasts", "must be a non-empty list",
                      '[[contrasts]] expr = "ketamine - baseline"')
    contrasts = []
    for i, c in enumerate(raw):
        key = f"contrasts[{i}]"
        if isinstance(c, str):
            contrasts.append(Contrast.parse(c, path=source, field=key))
            continue
        if not isinstance(c, dict) or "expr" not in c:
            raise ck.fail(key, f"must be a string or a table with expr, got {c!r}",
                          'expr = "ketamine - baseline"')
        ck.unknown(c, key, {"expr", "name"})
        contrasts.append(Contrast.parse(ck.str_(c, key, "expr", None), c.get("name"),
                                        path=source, field=f"{key}.expr"))
    names = [c.name for c in contrasts]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ck.fail("contrasts", f"two contrasts share the name {sorted(dup)[0]!r}",
                      "give them different names")

    st = ck.table(data, "statistics", "statistics")
    ck.unknown(st, "statistics", {"baseline_condition", "alpha", "runs", "voxel",
                                  "blocked_conditions", "group", "covariates"})
    vx = ck.table(st, "statistics.voxel", "voxel")
    ck.unknown(vx, "statistics.voxel", {"enabled", "smoothing_fwhm_mm", "cluster_forming_p",
                                        "n_permutations", "seed"})
    voxel = VoxelConfig(
        enabled=ck.bool_(vx, "statistics.voxel", "enabled", True),
        smoothing_fwhm_mm=float(ck.num(vx, "statistics.voxel", "smoothing_fwhm_mm", 0.0,
                                       0.0, 50.0)),
        cluster_forming_p=float(ck.num(vx, "statistics.voxel", "cluster_forming_p", 0.01,
                                       1e-12, 0.5)),
        n_permutations=int(ck.num(vx, "statistics.voxel", "n_permutations", 5000, 2,
                                  1_000_000, integer=True)),
        seed=int(ck.num(vx, "statistics.voxel", "seed", 0, 0, 2**32 - 1, integer=True)),
    )
    stats = StatisticsConfig(
        baseline_condition=ck.str_(st, "statistics", "baseline_condition", "baseline"),
        alpha=float(ck.num(st, "statistics", "alpha", 0.05, 1e-6, 0.5)),
        runs=ck.str_(st, "statistics", "runs", "error", ("error", "mean", "first")),
        voxel=voxel,
        blocked_conditions=ck.strs(st, "statistics", "blocked_conditions", ()),
        group=ck.str_(st, "statistics", "group", ""),
        covariates=ck.strs(st, "statistics", "covariates", ()),
    )
    used = {x for c in contrasts for x in c.conditions}
    if stats.baseline_condition not in used:
        raise ck.fail("statistics.baseline_condition",
                      f"{stats.baseline_condition!r} appears in no contrast",
                      f"use one of the contrasts' conditions: {', '.join(sorted(used))}")
    prep = _preprocess(ck, ck.table(data, "preprocess", "preprocess"))
    return StudyConfig(tracers=tracers, contrasts=tuple(contrasts), statistics=stats,
                       dataset=dataset, condition_entity=entity, atlas=atlas, truth=truth,
                       preprocess=prep, source=source, data=_dataset_extra(ck, ds),
                       regions=_regions(ck, ck.table(data, "regions", "regions")),
                       pvc=_pvc(ck, ck.table(data, "pvc", "pvc")))


def _dataset_extra(ck: _Checker, ds: dict) -> DatasetConfig:
    """``dataset.condition``, ``dataset.segmentation`` and ``dataset.segmentation_labels``."""
    cond = ck.str_(ds, "dataset", "condition", "") or ""
    if cond:
        table, _, column = cond.partition(":")
        if table not in ("sessions.tsv", "participants.tsv") or not column:
            raise ck.fail("dataset.condition", f"{cond!r} is not <table>:<column>",
                          'e.g. condition = "sessions.tsv:condition" or '
                          '"participants.tsv:group"')
    seg = ds.get("segmentation", "")
    if isinstance(seg, dict):
        bad = [k for k, v in seg.items() if not isinstance(v, str) or not v]
        if bad:
            raise ck.fail(f"dataset.segmentation.{bad[0]}", "must be a file path",
                          'e.g. segmentation = {"01" = "derivatives/fs/sub-01/mri/aseg.mgz"}')
        seg = {str(k).removeprefix("sub-"): v for k, v in seg.items()}
    elif not isinstance(seg, str):
        raise ck.fail("dataset.segmentation", f"must be a folder or a table, got {seg!r}",
                      'e.g. segmentation = "derivatives/freesurfer"')
    labels = ck.str_(ds, "dataset", "segmentation_labels", "") or ""
    select = ck.table(ds, "dataset.select", "select")
    for k, v in select.items():
        if not isinstance(v, str) or not v or k in ("sub", "trc"):
            raise ck.fail(f"dataset.select.{k}", f"cannot select {k} = {v!r}",
                          'give an entity and its label, e.g. select = {rec = "acdyn"}')
    return DatasetConfig(condition=cond, segmentation=seg, segmentation_labels=labels,
                         select={str(k): v for k, v in select.items()})


def _regions(ck: _Checker, data: dict) -> dict[str, tuple[str, ...]]:
    """``[regions]``: name -> label names / glob patterns (a string is one pattern)."""
    out: dict[str, tuple[str, ...]] = {}
    for name, value in data.items():
        key = f"regions.{name}"
        if "+" in name or not name.strip():
            raise ck.fail(key, f"{name!r} is not a usable region name",
                          "use letters, digits, '_' or '-' (no '+')")
        pats = [value] if isinstance(value, str) else value
        if (not isinstance(pats, list) or not pats
                or not all(isinstance(p, str) and p for p in pats)):
            raise ck.fail(key, f"must be a label name or a list of names/patterns, got "
                          f"{value!r}", f'e.g. {name} = ["Left-{name}", "Right-{name}"]')
        out[str(name)] = tuple(pats)
    return out


def _pvc(ck: _Checker, data: dict) -> PvcConfig:
    from petbind.pvc.psf import as_fwhm
    from petbind.pvc.scan import METHODS

    key = "pvc"
    ck.unknown(data, key, {"method", "fwhm_mm", "atlas", "iterations", "non_grey"})
    fwhm = data.get("fwhm_mm", [])
    return PvcConfig(
        method=ck.str_(data, key, "method", "none", ("none", *METHODS)),
        fwhm_mm=None if fwhm == [] else as_fwhm(fwhm, field=f"{key}.fwhm_mm", path=ck.source),
        atlas=ck.str_(data, key, "atlas", "") or "",
        iterations=int(ck.num(data, key, "iterations", 10, 1, 1000, integer=True)),
        non_grey=ck.strs(data, key, "non_grey", ("white_matter", "csf")))


def _preprocess(ck: _Checker, data: dict) -> PreprocessConfig:
    key = "preprocess"
    ck.unknown(data, key, {"enabled", "motion", "reference_window", "min_block_min",
                           "fd_threshold_mm", "nonlinear", "atlas_method", "grey_matter",
                           "template", "atlas"})
    win = data.get("reference_window", [])
    ok = (isinstance(win, list) and len(win) in (0, 2)
          and all(isinstance(v, int | float) and not isinstance(v, bool) for v in win))
    if not ok or (win and not 0 <= win[0] < win[1]):
        raise ck.fail(f"{key}.reference_window",
                      f"must be [] or [start, end] in minutes with 0 <= start < end, got {win!r}",
                      "e.g. reference_window = [10.0, 50.0], or [] for the default")
    prep = PreprocessConfig(
        enabled=ck.bool_(data, key, "enabled", False),
        motion=ck.bool_(data, key, "motion", True),
        reference_window=(float(win[0]), float(win[1])) if win else None,
        min_block_min=float(ck.num(data, key, "min_block_min", 2.0, 0.0, 60.0)),
        fd_threshold_mm=float(ck.num(data, key, "fd_threshold_mm", 0.5, 0.0, 100.0)),
        nonlinear=ck.bool_(data, key, "nonlinear", True),
        atlas_method=ck.str_(data, key, "atlas_method", "fraction", ("fraction", "nearest")),
        grey_matter=ck.bool_(data, key, "grey_matter", False),
        template=ck.str_(data, key, "template", "") or "",
        atlas=ck.str_(data, key, "atlas", "") or "",
    )
    if prep.enabled and not prep.template:
        raise ck.fail(f"{key}.template", "preprocessing is enabled but no template is given",
                      "set preprocess.template to the template T1w (e.g. "
                      "derivatives/petbind-sim/template/tpl-petbindphantom_T1w.nii.gz), "
                      "or enabled = false")
    return prep


def load_config(path: str | os.PathLike | None = None) -> StudyConfig:
    """Read and validate a study TOML file; ``None`` gives :data:`DEFAULT_CONFIG`.

    Raises
    ------
    ConfigError
        The file is missing, is not TOML, or a key is invalid (named).
    """
    if path is None:
        return parse_config(tomllib.loads(DEFAULT_CONFIG), source="<default config>")
    p = Path(path)
    data = read_toml(p, what="study config", read_fix="check the path given to --config",
                     syntax_fix="see `petbind run --print-config` for the format")
    return parse_config(data, source=str(p), base_dir=p.parent)


def demo_config() -> StudyConfig:
    """The configuration shipped for ``petbind demo`` (``petbind/data/demo_study.toml``)."""
    from petbind.io.files import package_text

    text = package_text("data", "demo_study.toml")
    return parse_config(tomllib.loads(text), source="petbind/data/demo_study.toml")
