"""What the report reads: a finished run's outputs, through :mod:`petbind.study.layout`.

:func:`load_outputs` reads the files listed in ``docs/outputs.md`` (per-scan
TACs, fits and maps; the group tables; ``summary.json`` and
``provenance.json``; the run's ``study_config.toml`` parsed by the study
config's own parser) and, for the injected dose, the PET sidecars of the
input dataset named in ``provenance.json``. Every file is read through the
output layout (:mod:`petbind.study.layout`), which reads through
:mod:`petbind.io`; the report's sections (:mod:`petbind.report.sections`)
work on the :class:`StudyOutputs` this module returns and open no file.

Times in the output files are seconds (BIDS); the report shows minutes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from petbind.errors import DataError
from petbind.study.layout import ScanOutputs, StudyLayout, read_image, read_json, read_table

STEM_RE = re.compile(
    r"^sub-(?P<subject>[^_]+)_ses-(?P<condition>[^_]+)_trc-(?P<tracer>[^_]+)"
    r"(?:_run-(?P<run>[^_]+))?$"
)


_TMAP_RE = re.compile(
    r"^trc-(?P<tracer>[^_]+)(?:_space-(?P<space>[^_]+))?_model-(?P<model>[^_]+)_contrast-(?P<contrast>[^_]+)_stat-t\.nii(\.gz)?$"
)


def maybe_json(path: Path) -> dict[str, Any]:
    return read_json(path) if path.is_file() else {}


def maybe_table(path: Path) -> pd.DataFrame | None:
    return read_table(path) if path.is_file() else None


def load_map(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """A map the pipeline wrote: float32 voxels, affine, voxel size (mm)."""
    vol = read_image(path)
    return vol.data, vol.affine, vol.zooms


def _scan_file(kind: str, read: Callable[[Path], Any], doc: str) -> Any:
    """A cached property of :class:`Scan`: ``read`` of its :class:`ScanOutputs` file ``kind``."""
    def get(self: Scan) -> Any:
        return read(getattr(self.files, kind))

    get.__doc__ = doc
    return cached_property(get)


@dataclass
class Scan:
    """One scan's outputs: entities, the folder and the files the pipeline wrote."""

    subject: str
    condition: str
    tracer: str
    run: str | None
    stem: str
    folder: Path

    @property
    def files(self) -> ScanOutputs:
        """The scan's output files (:mod:`petbind.study.layout`)."""
        return ScanOutputs(self.folder, ".", self.stem)

    def file(self, suffix: str) -> Path:
        return self.files.file(suffix)

    @property
    def label(self) -> str:
        run = f", run {self.run}" if self.run else ""
        return f"sub-{self.subject}, {self.condition}, {self.tracer}{run}"

    # the scan's output files, each read once, on first use (absent: None, or {} for JSON)
    tacs = _scan_file("tacs", maybe_table, "Region curves (kBq/mL; frames in seconds).")
    tacs_meta = _scan_file("tacs_json", maybe_json, "The curves' sidecar (``Units`` ...).")
    fits = _scan_file("fits", maybe_table, "One row per region x model.")
    fitted = _scan_file("fitted", maybe_table, "Measured and fitted curves, per frame.")
    provenance = _scan_file("provenance", maybe_json, "The scan's provenance record.")

    def maps(self, param: str, space: str | None = None) -> dict[str, Path]:
        """Parametric maps of ``param`` by model (``STEM_model-<m>_<param>.nii.gz``).

        With ``space`` (e.g. ``"template"``), the maps resampled to that space
        by preprocessing (``STEM_space-<space>_model-<m>_<param>.nii.gz``).
        """
        return self.files.maps(param, space)


def _discover_scans(out: Path) -> list[Scan]:
    """The scans the run lists (any BIDS entities in the stems), with curves on disk."""
    return [Scan(subject=e.subject, condition=e.condition, tracer=e.tracer, run=e.run,
                 stem=e.stem, folder=e.files.folder)
            for e in StudyLayout(out).scans() if e.files.tacs.is_file()]


@dataclass
class StudyOutputs:
    """Everything the report reads from one output folder (see ``docs/outputs.md``)."""

    root: Path
    summary: dict[str, Any]
    provenance: dict[str, Any]
    config: dict[str, Any]
    config_text: str
    description: dict[str, Any]
    scans: list[Scan]
    outcomes: pd.DataFrame | None
    roi_stats: pd.DataFrame | None
    mixed: pd.DataFrame | None
    tmaps: list[dict[str, Any]] = field(default_factory=list)
    #: The run's config as :func:`petbind.study.config.parse_config` reads it (``config``
    #: is its ``to_dict()``, every default filled in); None without study_config.toml.
    study_config: Any = None
    cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def dataset(self) -> Path | None:
        ds = self.provenance.get("dataset")
        return Path(ds) if ds else None

    @property
    def simulated(self) -> bool:
        if "simulated" in self.summary:
            return bool(self.summary["simulated"])
        return self.outcomes is not None and "bp_nd_true" in self.outcomes.columns

    def primary_model(self, tracer: str) -> str | None:
        """The tracer's primary model: config, else highlights, else the first fitted."""
        tr = (self.config.get("tracers") or {}).get(tracer) or {}
        if isinstance(tr, dict) and tr.get("primary_model"):
            return str(tr["primary_model"])
        if (self.summary.get("primary_models") or {}).get(tracer):
            return str(self.summary["primary_models"][tracer])
        for row in self.summary.get("highlights") or []:
            if row.get("tracer") == tracer and row.get("model"):
                return str(row["model"])
        for df in (self.roi_stats, self.outcomes):
            if df is not None and len(df):
                sel = df[df["tracer"].astype(str) == tracer]
                if len(sel):
                    return str(sel["model"].iloc[0])
        return None

    @property
    def tracers(self) -> list[str]:
        found = list(self.summary.get("tracers") or [])
        for s in self.scans:
            if s.tracer not in found:
                found.append(s.tracer)
        if self.outcomes is not None:
            for t in self.outcomes["tracer"].astype(str).unique():
                if t not in found:
                    found.append(t)
        return found

    @property
    def conditions(self) -> list[str]:
        found = [str(c) for c in self.summary.get("conditions") or []]
        base = cfg_get(self.config, "statistics.baseline_condition", "baseline_condition")
        extra = [s.condition for s in self.scans]
        if self.outcomes is not None:
            extra += list(self.outcomes["condition"].astype(str))
        for c in extra:
            if c not in found:
                found.append(c)
        if base in found:
            found.remove(base)
            found.insert(0, base)
        return found

    @property
    def subjects(self) -> list[str]:
        subs = {s.subject for s in self.scans}
        if self.outcomes is not None:
            subs |= set(self.outcomes["subject"].astype(str))
        return sorted(subs)


def load_outputs(out_dir: str | Path) -> StudyOutputs:
    """Read a pipeline output folder (the files listed in ``docs/outputs.md``).

    Parameters
    ----------
    out_dir : str or Path
        The output root (``BIDS_DIR/derivatives/petbind`` or ``--out DIR``).

    Returns
    -------
    StudyOutputs
        Tables and metadata; per-scan files are read lazily.

    Raises
    ------
    DataError
        When ``out_dir`` does not exist or holds no pipeline output at all.
    """
    root = Path(out_dir)
    if not root.is_dir():
        raise DataError("the output folder does not exist", path=root,
                        fix="give the folder written by `petbind run` or `petbind demo`")
    nested = root / "derivatives" / "petbind"
    if not (root / "group").is_dir() and not any(root.glob("sub-*")) and nested.is_dir():
        root = nested  # `petbind demo --out DIR` puts the outputs under DIR/derivatives/petbind
    lay = StudyLayout(root)
    group = lay.group
    scans = _discover_scans(root)
    if not scans and not group.is_dir():
        raise DataError(
            "no pipeline output here (no scan outputs and no group/ folder)",
            path=root, field="out_dir",
            fix="run `petbind run BIDS_DIR` (or `petbind demo`) first and give its output folder",
        )
    study_config, config_text = lay.read_config()
    config = study_config.to_dict() if study_config is not None else {}
    tmaps = []
    for p in sorted(lay.voxel.glob("trc-*_stat-t.nii*")):
        m = _TMAP_RE.match(p.name)
        if m:
            prefix = p.name.split("_stat-t.nii")[0]
            tmaps.append({**m.groupdict(), "path": p, "prefix": prefix,
                          "folder": p.parent})
    contrast_order = [str(c.get("name")) for c in config.get("contrasts") or []
                      if isinstance(c, dict)]
    tmaps.sort(key=lambda t: (t["tracer"], t["model"],
                              contrast_order.index(t["contrast"])
                              if t["contrast"] in contrast_order else len(contrast_order),
                              t["contrast"]))
    return StudyOutputs(
        root=root,
        summary=maybe_json(lay.summary),
        provenance=maybe_json(lay.provenance),
        config=config,
        config_text=config_text,
        description=maybe_json(lay.description),
        scans=scans,
        outcomes=maybe_table(lay.outcomes),
        roi_stats=maybe_table(lay.roi_stats),
        mixed=maybe_table(lay.mixed_model),
        tmaps=tmaps,
        study_config=study_config,
    )


def cfg_get(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        node: Any = cfg
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            return node
    return default


def run_label(run: Any) -> str:
    """A run entity as text, ``""`` when there is none (None, NaN, ``n/a``)."""
    if run is None or (isinstance(run, float) and math.isnan(run)):
        return ""
    text = str(run)
    return "" if text in ("n/a", "None") else text


def injected(study: StudyOutputs, scan: Scan) -> dict[str, Any]:
    """Tracer and injected dose from the input PET sidecar named in provenance.json.

    The sidecar is read as the pipeline read it: BIDS inheritance applied, at
    the image's own path (a DataLad link is not followed).
    """
    from petbind.errors import PetbindError
    from petbind.io.bids import read_pet_sidecar

    ds = study.dataset
    pet = None
    for entry in study.provenance.get("scans") or []:
        if entry.get("stem") is not None:
            if str(entry.get("stem")) == scan.stem:
                pet = entry.get("pet")
                break
            continue
        if (str(entry.get("subject")) == scan.subject
                and str(entry.get("condition")) == scan.condition
                and str(entry.get("tracer")) == scan.tracer
                and run_label(entry.get("run")) == run_label(scan.run)):
            pet = entry.get("pet")
            break
    if pet is None or ds is None:
        return {}
    pet_path = Path(pet) if Path(pet).is_absolute() else ds / pet
    try:
        meta, _ = read_pet_sidecar(pet_path)
    except PetbindError:
        return {}
    return {k: meta.get(k) for k in (
        "TracerName", "TracerRadionuclide", "InjectedRadioactivity",
        "InjectedRadioactivityUnits", "InjectedMass", "InjectedMassUnits",
        "ModeOfAdministration", "ImageDecayCorrected", "ReconFilterSize") if k in meta}


def reference_region(study: StudyOutputs, tracer: str) -> str | None:
    tr = (study.config.get("tracers") or {}).get(tracer) or {}
    for key in ("reference_region", "reference", "ref"):
        if isinstance(tr, dict) and tr.get(key):
            return str(tr[key])
    for key in ("reference_region", "reference"):
        if study.config.get(key):
            return str(study.config[key])
    return None
