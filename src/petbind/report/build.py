"""Build the study report: one self-contained HTML page from the pipeline's outputs.

The report reads exactly the files listed in ``docs/outputs.md`` (per-scan
TACs, fits and maps; the group tables; the voxel statistics; ``summary.json``
and ``provenance.json``) and, for the injected dose, the PET sidecars of the
input dataset named in ``provenance.json``. Preprocessing outputs under
``preprocess/`` (motion tables, QC figures) feed the Preprocessing section
(:mod:`petbind.report.preprocessing`), present only when they exist. Missing parts of the output (no
voxel statistics, no maps) leave a sentence in their section instead of
failing the report.

The page works offline from ``file://``: figures are embedded PNGs (base64),
styles and scripts are inline, the NiiVue viewer (BSD-2, vendored in
``static/``) is inline and gets its volumes as base64 NIfTI, so the page makes
no request at all. Every string from the data (subject labels, region names,
config values) goes through jinja2's autoescaping.

Times in the output files are seconds (BIDS); the report shows minutes.
"""

from __future__ import annotations

import base64
import gzip
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from petbind import __version__
from petbind.errors import DataError, FileFormatError
from petbind.io.atomic import write_text_atomic
from petbind.models.catalogue import CATALOGUE
from petbind.report.formatting import number, pvalue
from petbind.study.layout import (
    LABEL_COLUMNS,
    ScanOutputs,
    StudyLayout,
    read_json,
    read_table,
)

#: File name of the report at the output root.
REPORT_NAME = "report.html"
#: Clusters listed per t map (the largest first, as the pipeline writes them).
MAX_CLUSTERS = 10

_STEM_RE = re.compile(
    r"^sub-(?P<subject>[^_]+)_ses-(?P<condition>[^_]+)_trc-(?P<tracer>[^_]+)"
    r"(?:_run-(?P<run>[^_]+))?$"
)
_TMAP_RE = re.compile(
    r"^trc-(?P<tracer>[^_]+)(?:_space-(?P<space>[^_]+))?_model-(?P<model>[^_]+)_contrast-(?P<contrast>[^_]+)_stat-t\.nii(\.gz)?$"
)

#: Published sources of the models (from the model catalogue) and of the methods
#: the methods paragraph can name.
CITATIONS: dict[str, str] = {
    **{spec.name: spec.citation for spec in CATALOGUE if spec.citation},
    "nomenclature": "Innis RB, Cunningham VJ, Delforge J, et al. Consensus nomenclature for "
                    "in vivo imaging of reversibly binding radioligands. J Cereb Blood Flow "
                    "Metab 2007;27:1533-1539.",
    "holm": "Holm S. A simple sequentially rejective multiple test procedure. Scand J Stat "
            "1979;6:65-70.",
    "bh": "Benjamini Y, Hochberg Y. Controlling the false discovery rate. J R Stat Soc B "
          "1995;57:289-300.",
    "permutation": "Nichols TE, Holmes AP. Nonparametric permutation tests for functional "
                   "neuroimaging: a primer with examples. Hum Brain Mapp 2002;15:1-25.",
    "fd": "Power JD, Barnes KA, Snyder AZ, Schlaggar BL, Petersen SE. Spurious but "
          "systematic correlations in functional connectivity MRI networks arise from subject "
          "motion. NeuroImage 2012;59:2142-2154.",
    "mattes": "Mattes D, Haynor DR, Vesselle H, Lewellen TK, Eubank W. PET-CT image "
              "registration in the chest using free-form deformations. IEEE Trans Med Imaging "
              "2003;22:120-128.",
    "syn": "Avants BB, Epstein CL, Grossman M, Gee JC. Symmetric diffeomorphic image "
           "registration with cross-correlation: evaluating automated labeling of elderly and "
           "neurodegenerative brain. Med Image Anal 2008;12:26-41.",
    "mixed": "Seabold S, Perktold J. statsmodels: econometric and statistical modeling with "
             "Python. Proc 9th Python in Science Conf 2010.",
}

#: Model name (as the config writes it, ``-`` dropped) -> its key in :data:`CITATIONS`;
#: models that share a citation (MRTM2 is Ichise 2003, as MRTM) name it once.
_MODEL_CITATION = {spec.name.replace("-", ""): next(
    o.name for o in CATALOGUE if o.citation == spec.citation) for spec in CATALOGUE
    if spec.citation}


# --------------------------------------------------------------------------- reading


#: Columns holding labels: read as text, so subject "01" stays "01".
_LABEL_COLUMNS = LABEL_COLUMNS


def _read_tsv(path: Path) -> pd.DataFrame:
    """Read a BIDS TSV: ``n/a`` is missing, other strings (``NA``, ``null``) are kept."""
    return read_table(path)


def _read_json(path: Path) -> dict[str, Any]:
    return read_json(path)


def _maybe_json(path: Path) -> dict[str, Any]:
    return _read_json(path) if path.is_file() else {}


def _maybe_tsv(path: Path) -> pd.DataFrame | None:
    return _read_tsv(path) if path.is_file() else None


def _load_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many kinds
        raise FileFormatError(f"cannot read this image: {exc}", path=path,
                              fix="rerun the pipeline to rewrite it") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    return data, np.asarray(img.affine), tuple(float(z) for z in img.header.get_zooms()[:3])


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

    @cached_property
    def tacs(self) -> pd.DataFrame | None:
        return _maybe_tsv(self.files.tacs)

    @cached_property
    def tacs_meta(self) -> dict[str, Any]:
        return _maybe_json(self.files.tacs_json)

    @cached_property
    def fits(self) -> pd.DataFrame | None:
        return _maybe_tsv(self.files.fits)

    @cached_property
    def fitted(self) -> pd.DataFrame | None:
        return _maybe_tsv(self.files.fitted)

    @cached_property
    def provenance(self) -> dict[str, Any]:
        return _maybe_json(self.files.provenance)

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
        base = _cfg_get(self.config, "statistics.baseline_condition", "baseline_condition")
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
        summary=_maybe_json(lay.summary),
        provenance=_maybe_json(lay.provenance),
        config=config,
        config_text=config_text,
        description=_maybe_json(lay.description),
        scans=scans,
        outcomes=_maybe_tsv(lay.outcomes),
        roi_stats=_maybe_tsv(lay.roi_stats),
        mixed=_maybe_tsv(lay.mixed_model),
        tmaps=tmaps,
        study_config=study_config,
    )


# --------------------------------------------------------------------------- formatting


_num = number
_pval = pvalue


def _peq(p: Any) -> str:
    """A p-value with its relation sign, for sentences: ``= 0.023`` or ``< 0.001``."""
    text = _pval(p)
    return text if text.startswith("<") else f"= {text}"


def _signed(x: Any, digits: int = 1) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(v):
        return "n/a"
    return f"{v:+.{digits}f}"


def _is_true(x: Any) -> bool:
    if isinstance(x, str):
        return x.lower() == "true"
    return bool(x) if x is not None and not (isinstance(x, float) and math.isnan(x)) else False


# --------------------------------------------------------------------------- sections


def _design(study: StudyOutputs) -> dict[str, Any]:
    s = study.summary
    models = s.get("models") or []
    if isinstance(models, dict):  # per tracer
        models = list(dict.fromkeys(m for ms in models.values() for m in ms))
    if not models and study.outcomes is not None:
        models = sorted(study.outcomes["model"].astype(str).unique())
    return {
        "subjects": study.subjects,
        "conditions": study.conditions,
        "tracers": study.tracers,
        "n_scans": s.get("n_scans", len(study.scans)),
        "models": [str(m) for m in models],
        "baseline": _cfg_get(study.config, "statistics.baseline_condition",
                             "baseline_condition") or (
            study.conditions[0] if study.conditions else None),
    }


def _primary_rows(study: StudyOutputs) -> pd.DataFrame | None:
    rs = study.roi_stats
    if rs is None or not len(rs):
        return None
    keep = np.zeros(len(rs), dtype=bool)
    for tracer in rs["tracer"].astype(str).unique():
        pm = study.primary_model(tracer)
        keep |= (rs["tracer"].astype(str) == tracer).to_numpy() & (
            rs["model"].astype(str) == pm).to_numpy()
    return rs[keep]


def _finding_sentence(row: pd.Series, alpha: float) -> str:
    kind = str(row.get("kind", "simple"))
    pct = float(row["pct_change"]) if pd.notna(row.get("pct_change")) else float("nan")
    unit = "percentage points" if kind == "interaction" else "%"
    if kind == "interaction":
        verb = "the difference between the two drug effects was"
    elif math.isfinite(pct) and pct >= 0:
        verb = "BP_ND rose by"
    else:
        verb = "BP_ND fell by"
    size = abs(pct) if kind != "interaction" else pct
    size_txt = _num(size, 1) if kind != "interaction" else _signed(size, 1)
    text = (
        f"{row['tracer']}, {row['region']}, {row['contrast']}: {verb} {size_txt} {unit} "
        f"(95 % CI {_num(row.get('pct_ci_low'), 1)} to {_num(row.get('pct_ci_high'), 1)}; "
        f"paired t({_num(row.get('df'), 0)}) = {_num(row.get('t'), 2)}, "
        f"p {_peq(row.get('p'))}, Holm-corrected p {_peq(row.get('p_holm'))}, "
        f"BH q {_peq(row.get('p_bh'))}; n = {_num(row.get('n'), 0)}"
    )
    if pd.notna(row.get("pct_change_true", np.nan)):
        text += f"; simulated truth {_signed(row['pct_change_true'], 1)} {unit}"
    text += ")"
    p_holm = row.get("p_holm")
    sig = pd.notna(p_holm) and float(p_holm) < alpha
    text += (" - significant after correction." if sig
             else " - not significant after correction for the regions tested.")
    return text


def _alpha(study: StudyOutputs) -> float:
    try:
        return float(_cfg_get(study.config, "statistics.alpha", "stats.alpha", "alpha",
                              default=0.05))
    except (TypeError, ValueError):
        return 0.05


def _findings(study: StudyOutputs) -> list[str]:
    """Key findings as sentences: per tracer and contrast, the regions that matter.

    Regions significant after Holm correction are all named; when none is, the
    region with the largest |t| is named with its corrected p, so a null result
    is stated with numbers rather than left out.
    """
    rows = _primary_rows(study)
    if rows is None:
        return []
    alpha = _alpha(study)
    out = []
    for (_tracer, _contrast), grp in rows.groupby(["tracer", "contrast"], sort=False):
        sig = grp[pd.to_numeric(grp["p_holm"], errors="coerce") < alpha]
        chosen = sig if len(sig) else grp.loc[
            [pd.to_numeric(grp["t"], errors="coerce").abs().fillna(-1).idxmax()]]
        out.extend(_finding_sentence(r, alpha) for _, r in chosen.iterrows())
    return out


def _glance(study: StudyOutputs) -> list[dict[str, Any]]:
    """Per tracer, a region x contrast table of % change, corrected p and truth (primary model)."""
    rows = _primary_rows(study)
    if rows is None:
        return []
    alpha = _alpha(study)
    image = _image_truth_pct(study)
    out = []
    for tracer, grp in rows.groupby("tracer", sort=False):
        contrasts = list(dict.fromkeys(grp["contrast"].astype(str)))
        table = []
        for region, rg in grp.groupby("region", sort=False):
            cells = []
            for contrast in contrasts:
                hit = rg[rg["contrast"].astype(str) == contrast]
                if not len(hit):
                    cells.append(None)
                    continue
                r = hit.iloc[0]
                img = image.get((str(tracer), str(r["model"]), str(region), contrast), math.nan)
                p_holm = pd.to_numeric(pd.Series([r.get("p_holm")]), errors="coerce").iloc[0]
                cells.append({
                    "pct": _signed(r.get("pct_change"), 1),
                    "ci": f"{_num(r.get('pct_ci_low'), 1)} to {_num(r.get('pct_ci_high'), 1)}",
                    "p_holm": _pval(r.get("p_holm")),
                    "sig": bool(pd.notna(p_holm) and p_holm < alpha),
                    "truth": _signed(r.get("pct_change_true"), 1)
                    if pd.notna(r.get("pct_change_true", np.nan)) else None,
                    "truth_image": _signed(img, 1) if math.isfinite(img) else None,
                })
            table.append({"region": str(region), "cells": cells})
        out.append({"tracer": str(tracer), "model": str(grp["model"].iloc[0]),
                     "contrasts": contrasts, "rows": table})
    return out


def _truth_lookup(outcomes: pd.DataFrame | None,
                  column: str = "bp_nd_true") -> dict[tuple, float]:
    """(subject, condition, tracer, region) -> a truth column of ``outcomes.tsv``."""
    if outcomes is None or column not in outcomes:
        return {}
    keys = ["subject", "condition", "tracer", "region"]
    sub = outcomes.dropna(subset=[column]).drop_duplicates(keys)
    return {tuple(str(v) for v in k): float(t)
            for k, t in zip(sub[keys].itertuples(index=False), sub[column], strict=True)}


#: Outcome column of the image truth: the primary model's fit of the simulator's
#: noise-free, partial-volume-blurred region curves (engineer P's pipeline).
IMAGE_TRUTH = "bp_nd_true_image"


def _has_image_truth(study: StudyOutputs) -> bool:
    oc = study.outcomes
    return oc is not None and IMAGE_TRUTH in oc and bool(
        pd.to_numeric(oc[IMAGE_TRUTH], errors="coerce").notna().any())


def _contrast_pct(wide: pd.DataFrame, contrast: str) -> float:
    """Mean over subjects of a contrast's per-subject % change in a subject x condition table.

    ``"A - B"``: 100 (A - B) / B; ``"(A - B) - (C - D)"``: 100 (A - B) / B -
    100 (C - D) / D (percentage points), as ``roi_stats.tsv``'s ``pct_change``.
    NaN when the contrast cannot be read or no subject has every condition.
    """
    m = _CONTRAST_RE.match(contrast)
    if m is None:
        return float("nan")
    conds = [c for c in (m["a"], m["b"], m["c"], m["d"]) if c]
    if not set(conds) <= set(wide.columns):
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = 100.0 * (wide[m["a"]] - wide[m["b"]]) / wide[m["b"]]
        if m["c"]:
            pct = pct - 100.0 * (wide[m["c"]] - wide[m["d"]]) / wide[m["d"]]
    pct = pct[np.isfinite(pct.to_numpy(dtype=float))]
    return float(pct.mean()) if len(pct) else float("nan")


def _image_truth_pct(study: StudyOutputs) -> dict[tuple[str, str, str, str], float]:
    """(tracer, model, region, contrast) -> % change of the image truth.

    Taken from ``roi_stats.tsv``'s ``pct_change_true_image`` when the pipeline
    writes it, else computed here from ``outcomes.tsv``'s ``bp_nd_true_image``
    the way ``pct_change_true`` is computed from ``bp_nd_true``.
    """
    rs = study.roi_stats
    if rs is None or not len(rs) or not _has_image_truth(study):
        return {}
    keys = ["tracer", "model", "region", "contrast"]
    if "pct_change_true_image" in rs:
        return {tuple(str(v) for v in k): float(t) for k, t in zip(
            rs[keys].itertuples(index=False),
            pd.to_numeric(rs["pct_change_true_image"], errors="coerce"), strict=True)}
    oc = study.outcomes
    assert oc is not None  # _has_image_truth
    oc = oc.assign(**{IMAGE_TRUTH: pd.to_numeric(oc[IMAGE_TRUTH], errors="coerce")})
    wides = {k: g.pivot_table(index="subject", columns="condition", values=IMAGE_TRUTH,
                              aggfunc="mean")
             for k, g in oc.groupby(["tracer", "model", "region"], sort=False)}
    out = {}
    for tracer, model, region, contrast in rs[keys].astype(str).itertuples(index=False):
        wide = wides.get((tracer, model, region))
        if wide is not None:
            out[(tracer, model, region, contrast)] = _contrast_pct(wide, contrast)
    return out


def _blur_fwhm(study: StudyOutputs) -> float | None:
    """The scanner's resolution (mm FWHM) from the first input PET sidecar that states it."""
    for scan in study.scans:
        try:
            fwhm = float(_injected(study, scan).get("ReconFilterSize"))
        except (TypeError, ValueError):
            continue
        if math.isfinite(fwhm) and fwhm > 0:
            return fwhm
    return None


def _truth_note(study: StudyOutputs) -> str | None:
    """Where a simulated truth is shown: what it is, and why estimates fall short of it."""
    if not study.simulated:
        return None
    fwhm = _blur_fwhm(study)
    blur = (f"the scanner's {fwhm:g} mm FWHM resolution" if fwhm
            else "the scanner's finite resolution")
    small = ("partial volume mixes small regions such as NAcc and VP with their "
             f"surroundings at {blur}, which dilutes their BP_ND and its % changes")
    if _has_image_truth(study):
        return ("Two truths are shown: the tissue value the simulator used (before the "
                "scanner's blur) and the image truth, the primary model's fit of the noise-free "
                f"but blurred region curves (what a perfect analysis of the image gives); {small}"
                ", so estimates scatter around the image truth and fall short of the tissue "
                "truth by about the gap between the two truths (partial volume), the rest being "
                "noise and model error.")
    return (f"The truth is the tissue value before the scanner's blur; {small}, so small "
            "regions' estimates fall short of it even without noise.")


def _frame_table(tacs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    start = tacs["frame_start"].to_numpy(dtype=float)
    end = tacs["frame_end"].to_numpy(dtype=float)
    issues = []
    if np.any(end <= start):
        issues.append(f"{int(np.sum(end <= start))} frame(s) with end <= start")
    gaps = start[1:] - end[:-1]
    if np.any(gaps > 0.5):
        issues.append(f"{int(np.sum(gaps > 0.5))} gap(s) between frames "
                      f"(largest {gaps.max():.1f} s)")
    if np.any(gaps < -0.5):
        issues.append(f"{int(np.sum(gaps < -0.5))} overlapping frame(s)")
    return start / 60.0, end / 60.0, issues


def _schedule_text(durations_s: np.ndarray) -> str:
    """A frame schedule in the usual shorthand: ``6 x 10 s, 3 x 20 s, ...``."""
    parts: list[list[float]] = []
    for d in np.round(np.asarray(durations_s, dtype=float), 1):
        if parts and parts[-1][1] == d:
            parts[-1][0] += 1
        else:
            parts.append([1, d])
    return ", ".join(f"{int(n)} x {d:g} s" for n, d in parts)


def _injected(study: StudyOutputs, scan: Scan) -> dict[str, Any]:
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
                and _run_label(entry.get("run")) == _run_label(scan.run)):
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


def _run_label(run: Any) -> str:
    """A run entity as text, ``""`` when there is none (None, NaN, ``n/a``)."""
    if run is None or (isinstance(run, float) and math.isnan(run)):
        return ""
    text = str(run)
    return "" if text in ("n/a", "None") else text


def _scan_warnings(study: StudyOutputs, scan: Scan) -> list[str]:
    keys = (scan.stem, f"sub-{scan.subject}_ses-{scan.condition}")
    return [str(w) for w in study.summary.get("warnings") or []
            if any(k in str(w) for k in keys)]


def _region_columns(tacs: pd.DataFrame) -> list[str]:
    return [c for c in tacs.columns if c not in ("frame_start", "frame_end")]


def _reference_region(study: StudyOutputs, tracer: str) -> str | None:
    tr = (study.config.get("tracers") or {}).get(tracer) or {}
    for key in ("reference_region", "reference", "ref"):
        if isinstance(tr, dict) and tr.get(key):
            return str(tr[key])
    for key in ("reference_region", "reference"):
        if study.config.get(key):
            return str(study.config[key])
    return None


def _scan_sections(study: StudyOutputs, figures: Any) -> list[dict[str, Any]]:
    truth = _truth_lookup(study.outcomes)
    truth_image = _truth_lookup(study.outcomes, IMAGE_TRUTH)
    out = []
    for scan in study.scans:
        entry: dict[str, Any] = {"label": scan.label, "stem": scan.stem, "anchor":
                                 re.sub(r"[^A-Za-z0-9_-]", "-", scan.stem)}
        tacs = scan.tacs
        if tacs is not None and len(tacs):
            t0, t1, issues = _frame_table(tacs)
            regions = _region_columns(tacs)
            entry.update(
                n_frames=len(tacs), first_start=_num(t0[0], 2), last_end=_num(t1[-1], 1),
                schedule=_schedule_text(60 * (t1 - t0)), timing_issues=issues,
                regions=regions, units=scan.tacs_meta.get("Units", "n/a"),
            )
        entry["dose"] = _injected(study, scan)
        entry["warnings"] = _scan_warnings(study, scan)
        fitted = scan.fitted
        if fitted is not None and len(fitted):
            mids = (fitted.groupby("frame")["frame_mid"].first().sort_index()
                    .to_numpy(dtype=float) / 60.0)
            measured: dict[str, np.ndarray] = {}
            preds: dict[str, dict[str, np.ndarray]] = {}
            for (model, region), g in fitted.groupby(["model", "region"], sort=False):
                g = g.sort_values("frame")
                measured.setdefault(str(region), g["measured"].to_numpy(dtype=float))
                preds.setdefault(str(model), {})[str(region)] = g["fitted"].to_numpy(
                    dtype=float)
            entry["fit_figure"] = figures.figure_to_data_uri(
                figures.fit_figure(mids, measured, preds, title=scan.label))
        fits = scan.fits
        if fits is not None and len(fits):
            rows = []
            for _, r in fits.iterrows():
                key = (scan.subject, scan.condition, scan.tracer, str(r["region"]))
                rows.append({
                    "region": str(r["region"]), "model": str(r["model"]),
                    "bp_nd": _num(r.get("bp_nd"), 3), "bp_nd_se": _num(r.get("bp_nd_se"), 3),
                    "r1": _num(r.get("r1"), 3), "k2": _num(r.get("k2"), 4),
                    "k2prime": _num(r.get("k2prime"), 4), "r2": _num(r.get("r2"), 4),
                    "aic": _num(r.get("aic"), 1), "valid": _is_true(r.get("valid")),
                    "truth": _num(truth.get(key), 3) if key in truth else None,
                    "truth_image": _num(truth_image.get(key), 3) if key in truth_image
                    else None,
                })
            entry["fits"] = rows
        out.append(entry)
    return out


def _tac_grids(study: StudyOutputs, figures: Any) -> list[dict[str, Any]]:
    """Per tracer, every scan's region TACs as small multiples (subjects x conditions)."""
    order = {c: i for i, c in enumerate(study.conditions)}
    out = []
    for tracer in study.tracers:
        scans = sorted((s for s in study.scans if s.tracer == tracer and s.tacs is not None),
                       key=lambda s: (s.subject, order.get(s.condition, 99), s.run or ""))
        if not scans:
            continue
        regions = list(dict.fromkeys(r for s in scans for r in _region_columns(s.tacs)))
        panels = []
        for s in scans:
            t0, t1, _ = _frame_table(s.tacs)
            values = s.tacs.reindex(columns=regions).to_numpy(dtype=float).T
            panels.append((s.label, (t0 + t1) / 2, values))
        n_cond = len({s.condition for s in scans})
        out.append({"tracer": tracer, "figure": figures.figure_to_data_uri(
            figures.tac_grid_figure(panels, regions,
                                    reference=_reference_region(study, tracer),
                                    max_cols=max(1, min(n_cond, 4))))})
    return out


def _map_grids(study: StudyOutputs, figures: Any) -> list[dict[str, Any]]:
    """Per tracer, the BP_ND maps of every scan (subjects x conditions), one colour bar."""
    out = []
    for tracer in study.tracers:
        tr = (study.config.get("tracers") or {}).get(tracer) or {}
        model = tr.get("map_model") if isinstance(tr, dict) else None
        maps: dict[tuple[str, str], np.ndarray] = {}
        shape = None
        skipped = []
        for scan in study.scans:
            found = scan.maps("bpnd")
            if scan.tracer != tracer or not found:
                continue
            model = model if model in found else next(iter(found))
            data, _, _ = _load_nifti(found[model])
            shape = shape or data.shape
            row = f"sub-{scan.subject}" + (f" run {scan.run}" if scan.run else "")
            if data.shape != shape:
                skipped.append(scan.label)
                continue
            maps[(row, scan.condition)] = data
        if not maps:
            continue
        rows = list(dict.fromkeys(r for r, _ in maps))
        cols = [c for c in study.conditions if any(k[1] == c for k in maps)]
        out.append({"tracer": tracer, "model": model, "skipped": skipped,
                    "figure": figures.figure_to_data_uri(figures.map_grid_figure(
                        maps, rows, cols, label="BP_ND",
                        title=f"{tracer}: BP_ND maps ({model})"))})
    return out


def _group_sections(study: StudyOutputs, figures: Any) -> list[dict[str, Any]]:
    oc = study.outcomes
    rs = study.roi_stats
    conditions = study.conditions
    image = _image_truth_pct(study)
    out = []
    for tracer in study.tracers:
        model = study.primary_model(tracer)
        sec: dict[str, Any] = {"tracer": tracer, "model": model}
        if oc is not None and len(oc):
            sel = oc[(oc["tracer"].astype(str) == tracer) & (oc["model"].astype(str) == model)]
            if "valid" in sel:
                sel = sel[sel["valid"].map(_is_true)]
            values: dict[str, dict[str, dict[str, float]]] = {}
            truth: dict[str, dict[str, dict[str, float]]] = {}
            for _, r in sel.iterrows():
                reg, sub, cond = str(r["region"]), str(r["subject"]), str(r["condition"])
                values.setdefault(reg, {}).setdefault(sub, {})[cond] = float(r["bp_nd"])
                if "bp_nd_true" in r and pd.notna(r["bp_nd_true"]):
                    truth.setdefault(reg, {}).setdefault(sub, {})[cond] = float(r["bp_nd_true"])
            conds = [c for c in conditions if c in set(sel["condition"].astype(str))]
            if values:
                sec["paired_figure"] = figures.figure_to_data_uri(figures.paired_lines_figure(
                    values, conds, truth=truth or None, ylabel="BP_ND",
                    title=f"{tracer}: BP_ND per subject ({model})"))
        if rs is not None and len(rs):
            sel = rs[rs["tracer"].astype(str) == tracer]
            prim = sel[sel["model"].astype(str) == model]
            sec["forests"] = []
            for contrast, g in prim.groupby("contrast", sort=False):
                has_truth = "pct_change_true" in g and g["pct_change_true"].notna().any()
                img_truth = [image.get(
                    (tracer, str(model), str(reg), str(contrast)), np.nan)
                    for reg in g["region"].astype(str)]
                sec["forests"].append({"contrast": str(contrast), "figure":
                    figures.figure_to_data_uri(figures.forest_figure(
                        list(g["region"].astype(str)), g["pct_change"], g["pct_ci_low"],
                        g["pct_ci_high"],
                        truth=g["pct_change_true"] if has_truth else None,
                        truth_image=img_truth if np.isfinite(img_truth).any() else None,
                        xlabel=("difference of % changes (pp)" if str(g["kind"].iloc[0])
                                == "interaction" else "% change in BP_ND"),
                        title=f"{tracer}, {model}:\n{contrast}"))})
            sec["stats"] = [_stats_row(r, image) for _, r in sel.iterrows()]
            sec["has_truth_image"] = bool(image)
            sec["has_truth"] = "pct_change_true" in sel and sel["pct_change_true"].notna().any()
            inter = prim[prim["kind"].astype(str) == "interaction"] if "kind" in prim else prim[:0]
            sec["interaction"] = [_finding_sentence(r, _alpha(study)) for _, r in inter.iterrows()]
        if study.mixed is not None and len(study.mixed):
            mm = study.mixed[study.mixed["tracer"].astype(str) == tracer]
            sec["mixed"] = [{
                "model": str(r["model"]), "region": str(r["region"]),
                "contrast": str(r["contrast"]), "estimate": _num(r.get("estimate"), 3),
                "se": _num(r.get("se"), 3), "ci": f"{_num(r.get('ci_low'), 3)} to "
                                                  f"{_num(r.get('ci_high'), 3)}",
                "p": _pval(r.get("p")), "p_holm": _pval(r.get("p_holm")),
                "p_bh": _pval(r.get("p_bh")), "n": _num(r.get("n_subjects"), 0),
                "converged": _is_true(r.get("converged")),
            } for _, r in mm.iterrows()]
        out.append(sec)
    return out


def _stats_row(r: pd.Series,
               image: dict[tuple[str, str, str, str], float] | None = None) -> dict[str, Any]:
    key = (str(r["tracer"]), str(r["model"]), str(r["region"]), str(r["contrast"]))
    return {
        "pct_true_image": _signed((image or {}).get(key), 1),
        "model": str(r["model"]), "region": str(r["region"]), "contrast": str(r["contrast"]),
        "kind": str(r.get("kind", "")), "n": _num(r.get("n"), 0),
        "mean_a": _num(r.get("mean_a"), 3), "mean_b": _num(r.get("mean_b"), 3),
        "mean_diff": _num(r.get("mean_diff"), 3),
        "pct": _signed(r.get("pct_change"), 1),
        "ci": f"{_num(r.get('pct_ci_low'), 1)} to {_num(r.get('pct_ci_high'), 1)}",
        "pct_true": _signed(r.get("pct_change_true"), 1) if "pct_change_true" in r else None,
        "t": _num(r.get("t"), 2), "df": _num(r.get("df"), 0), "p": _pval(r.get("p")),
        "p_wilcoxon": _pval(r.get("p_wilcoxon")), "dz": _num(r.get("cohen_dz"), 2),
        "p_holm": _pval(r.get("p_holm")), "p_bh": _pval(r.get("p_bh")),
        "power": _num(r.get("power"), 2), "n80": _num(r.get("n_for_80_power"), 0),
    }


def _mean_map(study: StudyOutputs, tracer: str, model: str | None,
              shape: tuple[int, ...], condition: str | None = None,
              space: str | None = None) -> np.ndarray | None:
    """Mean BP_ND map over the tracer's scans (of one condition, if given) on ``shape``.

    ``space="template"`` averages the maps preprocessing resampled to the template.
    """
    total = None
    n = 0
    for scan in study.scans:
        if scan.tracer != tracer or (condition is not None and scan.condition != condition):
            continue
        maps = scan.maps("bpnd", space)
        path = maps.get(model) if model in maps else next(iter(maps.values()), None)
        if path is None:
            continue
        data, _, _ = _load_nifti(path)
        if data.shape != shape:
            continue
        data = np.nan_to_num(data)
        total = data if total is None else total + data
        n += 1
    return None if total is None else total / n


def _template_t1w(study: StudyOutputs) -> Path | None:
    """The template T1w of preprocessing (config ``preprocess.template``), if it exists."""
    tpl = _cfg_get(study.config, "preprocess.template")
    if not tpl:
        return None
    path = Path(str(tpl)).expanduser()
    if not path.is_absolute():
        if study.dataset is None:
            return None
        path = study.dataset / path
    return path if path.is_file() else None


def _anatomy(study: StudyOutputs, shape: tuple[int, ...],
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
            img = nib.load(str(path))
        except Exception:  # an unreadable anatomy only costs the underlay
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


_CONTRAST_RE = re.compile(
    r"^\s*\(?\s*(?P<a>[\w.]+)\s*-\s*(?P<b>[\w.]+)\s*\)?"
    r"(?:\s*-\s*\(\s*(?P<c>[\w.]+)\s*-\s*(?P<d>[\w.]+)\s*\))?\s*$"
)


def true_effect_map(
    dataset: Path, tracer: str, contrast: str, subjects: list[str],
    affine: np.ndarray | None = None,
) -> np.ndarray | None:
    """Mean per-subject true % change of BP_ND for a contrast, from the simulator's maps.

    Parameters
    ----------
    dataset : Path
        The simulated BIDS dataset (holds ``derivatives/petbind-sim``).
    tracer : str
        ``trc-`` label.
    contrast : str
        ``"A - B"`` (100 (A - B) / B) or ``"(A - B) - (C - D)"``
        (100 (A - B) / B - 100 (C - D) / D, percentage points), with
        conditions named as session labels.
    subjects : list of str
        Subjects averaged.
    affine : ndarray (4, 4), optional
        The grid the map will be compared on (the estimated effect map's
        affine): when any true map lies on another grid (same shape or not),
        None is returned rather than a map in another space.

    Returns
    -------
    ndarray or None
        The map (NaN where the denominator's true BP_ND is <= 0.01), or None
        when a true map is missing, on another grid than ``affine``, or the
        contrast cannot be read.
    """
    m = _CONTRAST_RE.match(contrast)
    if m is None or not subjects:
        return None
    sim = dataset / "derivatives" / "petbind-sim"

    def true_map(sub: str, cond: str) -> np.ndarray | None:
        path = (sim / f"sub-{sub}" / f"ses-{cond}" / "pet"
                / f"sub-{sub}_ses-{cond}_trc-{tracer}_desc-true_bpnd.nii.gz")
        if not path.is_file():
            return None
        data, aff, _ = _load_nifti(path)
        if affine is not None and not np.allclose(aff, affine, atol=1e-3):
            return None
        return data

    def pct(sub: str, a: str, b: str) -> np.ndarray | None:
        va, vb = true_map(sub, a), true_map(sub, b)
        if va is None or vb is None or va.shape != vb.shape:
            return None
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(vb > 0.01, 100.0 * (va - vb) / vb, np.nan)

    per_subject = []
    for sub in subjects:
        first = pct(sub, m["a"], m["b"])
        if first is None:
            return None
        if m["c"]:
            second = pct(sub, m["c"], m["d"])
            if second is None or second.shape != first.shape:
                return None
            first = first - second
        per_subject.append(first)
    return np.mean(per_subject, axis=0)


def native_truth(dataset: Path, subjects: list[str]) -> bool:
    """Whether the simulator placed any of ``subjects`` away from the template.

    True when ``derivatives/petbind-sim/sub-X/anat/sub-X_desc-true_xfm.json``
    exists with a ``Matrix`` other than the identity (the simulator's
    ``[anatomy] native_position = true``): the true maps are then in each
    subject's native PET space, which may share the template grid's shape and
    affine while holding the brain elsewhere.
    """
    sim = dataset / "derivatives" / "petbind-sim"
    for sub in subjects:
        path = sim / f"sub-{sub}" / "anat" / f"sub-{sub}_desc-true_xfm.json"
        if not path.is_file():
            continue
        matrix = _read_json(path).get("Matrix")
        try:
            if not np.allclose(np.asarray(matrix, dtype=float), np.eye(4), atol=1e-6):
                return True
        except (TypeError, ValueError):
            return True  # unreadable: assume it moves the subject
    return False


def _in_template(study: StudyOutputs, tm: dict[str, Any], side: dict[str, Any]) -> bool:
    """Whether a voxel statistic lies in template space.

    Said by a ``space-template`` entity in its name, ``"Space": "template"`` in
    its sidecar, or the study config's ``preprocess.enabled`` (preprocessed
    studies run their voxel statistics on the template grid).
    """
    return (tm.get("space") == "template" or str(side.get("Space", "")) == "template"
            or _cfg_get(study.config, "preprocess.enabled") is True)


def _effect_figures(study: StudyOutputs, tm: dict[str, Any], side: dict[str, Any],
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
    effect, effect_affine, _ = _load_nifti(effect_path)
    mask_path = tm["folder"] / f"{tm['prefix']}_mask.nii.gz"
    mask = _load_nifti(mask_path)[0] > 0 if mask_path.is_file() else np.isfinite(effect)
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
            if truth is None and (study.dataset / "derivatives" / "petbind-sim").is_dir():
                why = ("The simulated truth is not shown: its maps are missing or on another "
                       "grid than this map.")
    from petbind.report.voxel_display import effect_display

    base = _mean_map(study, tm["tracer"], tm["model"], effect.shape,
                     _cfg_get(study.config, "statistics.baseline_condition",
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


def _voxel_sections(study: StudyOutputs, figures: Any) -> tuple[list[dict[str, Any]], list]:
    out = []
    volumes: list[dict[str, Any]] = []
    underlays: dict[str, int] = {}
    atlases: dict[Any, Any] = {}
    outlined: set[str] = set()
    outline_volumes: list[dict[str, Any]] = []
    for tm in study.tmaps:
        tmap, affine, zooms = _load_nifti(tm["path"])
        side = _maybe_json(tm["folder"] / f"{tm['prefix']}_stat-t.json")
        thr = side.get("cluster_forming_t")
        try:
            thr = float(thr)
        except (TypeError, ValueError):
            thr = None
        in_template = _in_template(study, tm, side)
        space = "template" if in_template else None
        under = _anatomy(study, tmap.shape, affine, template=in_template)
        under_label = ("the template T1w (resampled to the statistics grid)" if in_template
                       else "the subjects' mean T1w (resampled to the PET grid)")
        if under is None:
            under = _mean_map(study, tm["tracer"], tm["model"], tmap.shape, space=space)
            under_label = "the mean BP_ND map"
        contrast = tm["contrast"]
        if study.roi_stats is not None and "contrast_id" in study.roi_stats:
            hit = study.roi_stats[study.roi_stats["contrast_id"].astype(str) == contrast]
            if len(hit):
                contrast = str(hit["contrast"].iloc[0])
        title = f"{tm['tracer']} ({tm['model']}): t map, {contrast}"
        clusters = _maybe_tsv(tm["folder"] / f"{tm['prefix']}_clusters.tsv")
        from petbind.report.voxel_display import largest_cluster_peak

        cut = largest_cluster_peak(clusters, tmap.shape)  # slices through the largest cluster
        from petbind.report import voxel_display as vd

        where = vd.section_where(study, tm, side, contrast, tmap, affine, thr, clusters,
                                 in_template, atlases, load=_load_nifti, mean_map=_mean_map,
                                 true_effect=true_effect_map, native=native_truth)
        cut = where.cut or cut  # ... or the largest in a target region (voxel_display)
        if where.cluster_rows is not None:
            clusters = clusters.assign(**{k: [r.get(k, "") for r in where.cluster_rows]
                                          for k in where.cluster_rows[0] if k[0] != "_"})
        sec = {
            "title": title, "file": tm["path"].name, "threshold": _num(thr, 2),
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
                {k: (_num(v, 3) if isinstance(v, float) else str(v)) for k, v in row.items()}
                for row in clusters.head(MAX_CLUSTERS).to_dict("records")],
            "n_clusters": 0 if clusters is None else len(clusters),
            "cluster_columns": None if clusters is None else list(clusters.columns),
        }
        sec["effect"], sec["effect_note"] = _effect_figures(study, tm, side, contrast,
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
                            "b64": _nifti_b64(under, affine), "tracer": tm["tracer"]})
        volumes.append({"name": title, "kind": "overlay", "b64": _nifti_b64(tmap, affine),
                        "tracer": tm["tracer"], "threshold": thr,
                        "max": float(np.nanmax(np.abs(tmap))) if np.isfinite(tmap).any()
                        else 1.0})
        # the shown % change maps, for the viewer (after the other volumes)
        sec["effect_volumes"] = [
            {"name": f"{tm['tracer']} ({tm['model']}): % change, {contrast}",
             "kind": "effect", "b64": _nifti_b64(vol, aff), "tracer": tm["tracer"],
             "max": sec["effect"][0]["vmax"]} for vol, aff in effect_volumes]
    # Parametric maps to browse: each tracer's mean BP_ND map per condition (in template
    # space when preprocessing brought the maps there, so they lie under the t maps).
    space = "template" if _cfg_get(study.config, "preprocess.enabled") is True else None
    for tracer in study.tracers:
        tr = (study.config.get("tracers") or {}).get(tracer) or {}
        model = tr.get("map_model") if isinstance(tr, dict) else None
        first = next((s for s in study.scans if s.tracer == tracer and s.maps("bpnd", space)),
                     None)
        if first is None:
            continue
        maps = first.maps("bpnd", space)
        data, affine, _ = _load_nifti(maps.get(model) or next(iter(maps.values())))
        for condition in study.conditions:
            mean = _mean_map(study, tracer, model, data.shape, condition, space=space)
            if mean is None:
                continue
            positive = mean[mean > 0]
            volumes.append({"name": f"{tracer}: mean BP_ND, {condition}", "kind": "map",
                            "b64": _nifti_b64(mean, affine), "tracer": tracer,
                            "max": float(np.percentile(positive, 99)) if positive.size
                            else 1.0})
    if out:  # drawn over any map of their tracer (after the effect volumes)
        out[0]["outline_volumes"] = [v for v in outline_volumes if v is not None]
    return out, volumes


def _nifti_b64(data: np.ndarray, affine: np.ndarray) -> str:
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


def _power_rows(study: StudyOutputs) -> list[dict[str, Any]]:
    rows = _primary_rows(study)
    if rows is None:
        return []
    return [{"tracer": str(r["tracer"]), "model": str(r["model"]), "region": str(r["region"]),
             "contrast": str(r["contrast"]), "n": _num(r.get("n"), 0),
             "dz": _num(r.get("cohen_dz"), 2), "power": _num(r.get("power"), 2),
             "n80": _num(r.get("n_for_80_power"), 0),
             "adequate": pd.notna(r.get("power")) and float(r["power"]) >= 0.8}
            for _, r in rows.iterrows()]


def _cfg_get(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        node: Any = cfg
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            return node
    return default


def _methods(study: StudyOutputs, design: dict[str, Any]) -> dict[str, Any]:
    """The auto-written methods paragraph and its citations."""
    cfg = study.config
    cites: list[str] = ["nomenclature"]
    parts = []
    n_sub = len(design["subjects"])
    parts.append(
        f"{n_sub} subject{'s' if n_sub != 1 else ''} were scanned under "
        f"{len(design['conditions'])} condition(s) ({', '.join(design['conditions'])}) with "
        f"{len(design['tracers'])} tracer(s) ({', '.join(design['tracers'])}); "
        f"{design['n_scans']} dynamic PET scans in total"
        + (" (simulated data with known truth)." if study.simulated else "."))
    for tracer in design["tracers"]:
        tr = (cfg.get("tracers") or {}).get(tracer) or {}
        models = tr.get("models") if isinstance(tr, dict) else None
        if not models and study.outcomes is not None:
            sel = study.outcomes[study.outcomes["tracer"].astype(str) == tracer]
            models = sorted(sel["model"].astype(str).unique())
        models = [str(m) for m in (models or [])]
        ref = _reference_region(study, tracer) or "the reference region"
        primary = study.primary_model(tracer)
        map_model = tr.get("map_model") if isinstance(tr, dict) else None
        targets = tr.get("target_regions") if isinstance(tr, dict) else None
        txt = (f"For {tracer}, regional time-activity curves were extracted with the atlas "
               f"(left and right labels pooled, voxel-weighted)"
               + (f" for {', '.join(str(t) for t in targets)}" if targets else "")
               + f" and fitted with {', '.join(m.upper() for m in models) or 'the configured'}"
               f" models using {ref} as reference region; BP_ND of "
               f"{(primary or '').upper()} was the primary outcome")
        if map_model:
            txt += f", and parametric BP_ND maps were computed with {str(map_model).upper()}"
        k2p = _k2prime_text(tr if isinstance(tr, dict) else {})
        if k2p:
            txt += f"; k2' was {k2p}"
        txt += ". " + _settings_text(study, tracer, models, tr if isinstance(tr, dict) else {})
        atlas = _atlas_text(study, tracer)
        if atlas:
            txt += ". " + atlas
        parts.append(txt + ".")
        for m in [*models, map_model]:
            c = _MODEL_CITATION.get(str(m).lower().replace("-", "")) if m else None
            if c and c not in cites:
                cites.append(c)
    pre = _preprocess_methods(cfg)
    if pre:
        parts.append(pre[0])
        cites += [c for c in pre[1] if c not in cites]
    parts.append("Model predictions were frame averages of the continuous model (exact "
                 "integration over each frame), not mid-frame samples.")
    alpha = _alpha(study)
    parts.append(
        "Changes between conditions were tested per region with two-sided paired t-tests "
        "(and exact Wilcoxon signed-rank tests) on BP_ND, with % change as "
        "100 (A - B) / B per subject and its 95 % t confidence interval; drug interactions "
        "were tested as differences of paired differences. p-values were corrected across "
        f"regions by Holm's method and by Benjamini-Hochberg (alpha = {alpha:g}). A linear "
        "mixed model (BP_ND ~ condition, random intercept per subject, REML) gave a "
        "model-based check. Power at the observed effect size d_z is reported as descriptive "
        "only.")
    cites += ["holm", "bh", "mixed"]
    if study.tmaps:
        from petbind.report.voxel_display import voxel_methods_text

        parts.append(voxel_methods_text(
            _cfg_get(cfg, "statistics.voxel.smoothing_fwhm_mm", "voxel.smoothing_fwhm_mm"),
            _cfg_get(cfg, "parametric.pet_fwhm_mm")))
        cites.append("permutation")
    prov = study.provenance
    versions = ", ".join(f"{k} {prov[k]}" for k in ("python", "numpy", "scipy", "statsmodels")
                         if prov.get(k))
    parts.append(f"Analyses used petbind {prov.get('petbind_version', __version__)}"
                 + (f" ({versions})" if versions else "") + ".")
    return {"paragraph": " ".join(parts), "citations": [CITATIONS[c] for c in cites]}


def _used_settings(study: StudyOutputs, tracer: str) -> dict[str, Any]:
    """The first scan's provenance record of ``tracer`` (what the fits actually used)."""
    for scan in study.scans:
        if scan.tracer == tracer and scan.provenance.get("models"):
            return scan.provenance
    return {}


def _settings_text(study: StudyOutputs, tracer: str, models: list[str],
                   tr: dict[str, Any]) -> str:
    """Weights, fit window, t* and isotope of each model as the fits used them.

    From the scans' provenance (``models``: each model's ``settings``); a run
    without it (older outputs) falls back to the config's ``model_settings``.
    """
    used = _used_settings(study, tracer).get("models") or {}
    conf = tr.get("model_settings") or {}
    per: dict[str, dict[str, Any]] = {}
    for m in models:
        st = used.get(m)
        if not isinstance(st, dict):
            cm = conf.get(m) if isinstance(conf.get(m), dict) else {}
            st = {"weights": cm.get("weights", "uniform"), "start_min": cm.get("start"),
                  "end_min": cm.get("end"), "isotope": cm.get("isotope"),
                  "tstar_min": cm.get("tstar")}
        per[m] = st

    def weights(st: dict[str, Any]) -> str:
        w = str(st.get("weights") or "uniform")
        text = {"uniform": "uniformly", "duration": "duration",
                "counts": "counts (frame duration x decay-uncorrected activity)"}.get(w, w)
        if w == "counts" and st.get("isotope"):
            src = (" taken from the sidecars' TracerRadionuclide"
                   if st.get("isotope_source") == "TracerRadionuclide" else "")
            text += f", with the radionuclide {st['isotope']}{src}"
        return text

    def window(st: dict[str, Any]) -> str:
        a, b = st.get("start_min"), st.get("end_min")
        if a is None and b is None:
            return "the whole scan"
        return (f"{'injection' if a is None else f'{float(a):g} min'} to "
                f"{'the end of the scan' if b is None else f'{float(b):g} min'}")

    def grouped(fn: Any) -> str:
        texts = {m: fn(st) for m, st in per.items()}
        if len(set(texts.values())) <= 1:
            return next(iter(texts.values()), "")
        return "; ".join(f"{v} ({m.upper()})" for m, v in texts.items())

    if not per:
        return "Frames were weighted uniformly (the models' default)"
    w = grouped(weights)
    out = (f"Frames were weighted by {w}" if w != "uniformly"
           else "Frames were weighted uniformly (the models' default)")
    out += f"; the fit window was {grouped(window)}"
    for m, st in per.items():
        if "tstar_min" in st or "tstar_rule" in st:
            t = st.get("tstar_min")
            out += (f"; {m.upper()} t* was {float(t):g} min" if t is not None
                    else f"; {m.upper()} t* was chosen per curve ({st.get('tstar_rule')})"
                    if st.get("tstar_rule") else "")
    return out


def _atlas_text(study: StudyOutputs, tracer: str) -> str | None:
    """Where the regions came from and how the segmentation reached PET space."""
    atlas = _used_settings(study, tracer).get("atlas")
    if not isinstance(atlas, dict) or not atlas.get("description"):
        return None
    return str(atlas["description"])


def _preprocess_methods(cfg: dict[str, Any]) -> tuple[str, list[str]] | None:
    """The methods sentence on preprocessing (config ``[preprocess]``), with its citations."""
    pre = cfg.get("preprocess")
    if not isinstance(pre, dict) or pre.get("enabled") is not True:
        return None
    cites = []
    parts = []
    if pre.get("motion", True):
        block = pre.get("min_block_min")
        parts.append(
            "Head motion was corrected by rigid realignment of every frame to a mean image"
            + (f" (early frames pooled into blocks of at least {block:g} min)"
               if isinstance(block, int | float) else "")
            + "; framewise displacement (FD) was computed per frame and frames with FD above "
            f"{pre.get('fd_threshold_mm', 0.5):g} mm were flagged")
        cites.append("fd")
    parts.append("the mean realigned PET was registered rigidly to the subject's T1w (Mattes "
                 "mutual information) and the T1w to the template"
                 + (" (affine, then symmetric diffeomorphic SyN)" if pre.get("nonlinear", True)
                    else " (affine)"))
    cites.append("mattes")
    if pre.get("nonlinear", True):
        cites.append("syn")
    method = pre.get("atlas_method", "fraction")
    parts.append("the template atlas was brought into each scan's PET space "
                 + ("with partial-volume-aware label fractions" if method == "fraction"
                    else "by nearest-neighbour resampling")
                 + (", and voxel statistics were computed in template space"
                    if _cfg_get(cfg, "statistics.voxel.enabled", default=True) is not False
                    else ""))
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + ".", cites


def _k2prime_text(tracer_cfg: dict[str, Any]) -> str | None:
    """How k2' was obtained, in words, from a tracer's config section."""
    k2p = tracer_cfg.get("k2prime")
    if k2p is None:
        return None
    if isinstance(k2p, int | float):
        return f"fixed at {k2p:g} 1/min"
    region = tracer_cfg.get("k2prime_region")
    from petbind.errors import PetbindError
    from petbind.models.k2prime import parse_k2prime

    try:  # the study config's k2' policy, in the words of petbind.models.k2prime
        policy = parse_k2prime(k2p, region or None)
    except PetbindError:
        policy = None
    if policy is not None and policy.kind == "none":
        return "not used (Logan reference without its k2' term)"
    if policy is not None and policy.kind == "value":
        return f"fixed at {policy.value:g} 1/min"
    if policy is not None and policy.kind == "median":
        return (f"estimated per scan as the median {(policy.model or 'mrtm').upper()} k2' of "
                "the target regions and fixed in the models that need it (MRTM2, SRTM2, "
                "Logan reference) and in the parametric maps")
    if str(k2p).lower() in ("pooled", "auto") and not region:
        return f"estimated ({k2p}) from the data of each scan"
    if policy is not None and policy.kind == "region":
        k2p, region = policy.model, policy.region
    where = f" in {region}, a high-binding region," if region else ""
    return (f"estimated per scan by {str(k2p).upper()}{where} and fixed in the models that "
            "need it (MRTM2, SRTM2, Logan reference) and in the parametric maps")


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k} = {_describe(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_describe(v) for v in value)
    return str(value)


def _walk_hashes(obj: Any, prefix: str = "") -> Iterable[tuple[str, str]]:
    """(where, sha256) pairs found anywhere in a provenance JSON."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk_hashes(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk_hashes(v, f"{prefix}[{i}]")
    elif isinstance(obj, str) and re.fullmatch(r"(sha256:)?[0-9a-f]{64}", obj):
        yield prefix, obj


def _provenance(study: StudyOutputs) -> dict[str, Any]:
    prov = study.provenance
    inputs = []
    n_outputs = 0
    for scan in study.scans:
        sp = scan.provenance
        n_outputs += len(sp.get("outputs") or {})
        if isinstance(sp.get("inputs"), dict):
            for name, entry in sp["inputs"].items():
                entry = entry if isinstance(entry, dict) else {"sha256": entry}
                inputs.append({"scan": scan.label, "input": str(name),
                               "file": Path(str(entry.get("path", ""))).name,
                               "path": str(entry.get("path", "")),
                               "sha256": str(entry.get("sha256", "n/a"))})
        else:  # another layout: list every hash found
            inputs += [{"scan": scan.label, "input": where, "file": "", "path": "",
                        "sha256": h} for where, h in _walk_hashes(sp)]
    meta = {k: prov.get(k) for k in ("petbind_version", "python", "numpy", "scipy",
                                     "statsmodels", "dataset", "config_sha256", "seed",
                                     "started", "finished") if prov.get(k) is not None}
    command = prov.get("command")
    if isinstance(command, list):
        command = " ".join(str(c) for c in command)
    return {"meta": meta, "command": command, "inputs": inputs, "n_outputs": n_outputs,
            "config_text": study.config_text,
            "generated_by": study.description.get("GeneratedBy"),
            "run_seconds": study.summary.get("run_seconds")}


def _static_text(name: str) -> str:
    return resources.files("petbind.report").joinpath("static", name).read_text(
        encoding="utf-8")


def render_report(study: StudyOutputs) -> str:
    """Render the report of ``study`` into one HTML string.

    Parameters
    ----------
    study : StudyOutputs
        What :func:`load_outputs` read.

    Returns
    -------
    str
        The complete, self-contained page.
    """
    import jinja2

    from petbind.report import figures, preprocessing, stats_sections
    from petbind.report.pvc import pvc_section

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("petbind.report", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True,
    )
    design = _design(study)
    voxel, volumes = _voxel_sections(study, figures)
    context = {
        "title": f"petbind report: {', '.join(design['tracers'])}" if design["tracers"]
                 else "petbind report",
        "version": __version__,
        "root": str(study.root),
        "design": design,
        "simulated": study.simulated,
        "findings": _findings(study),
        "glance": _glance(study),
        "warnings": [str(w) for w in study.summary.get("warnings") or []],
        "n_invalid": study.summary.get("n_invalid_fits"),
        "invalid_reasons": study.summary.get("invalid_reasons") or {},
        "scans": _scan_sections(study, figures),
        "preprocessing": preprocessing.preprocessing_section(study, figures),
        "preprocessing_width": preprocessing.QC_WIDTH,
        "pvc": pvc_section(study),
        "map_grids": _map_grids(study, figures),
        "truth_image": _has_image_truth(study),
        "truth_note": _truth_note(study),
        "tac_grids": _tac_grids(study, figures),
        "groups": _group_sections(study, figures),
        "voxel": voxel,
        "effect_volumes": [v for sec in voxel for v in sec.pop("effect_volumes", [])],
        "outline_volumes": [v for sec in voxel for v in sec.pop("outline_volumes", [])],
        "volumes": volumes,
        "power": _power_rows(study),
        "prospective_power": stats_sections.prospective_power_section(study, figures),
        "stats_sections": stats_sections.stats_sections(study, figures),
        "methods": _methods(study, design),
        "provenance": _provenance(study),
        "css": _static_text("report.css"),
        "viewer_js": _static_text("viewer.js"),
        "niivue_js": _static_text("niivue.umd.js") if volumes else "",
    }
    return env.get_template("report.html.j2").render(**context)


def build_report(out_dir: str | Path) -> Path:
    """Write ``report.html`` at the root of a pipeline output folder.

    Parameters
    ----------
    out_dir : str or Path
        The output root of ``petbind run`` / ``petbind demo`` (see
        ``docs/outputs.md``); a ``petbind demo --out DIR`` folder also works.

    Returns
    -------
    Path
        The report, written atomically.

    Raises
    ------
    DataError
        When the folder holds no pipeline output.
    FileFormatError
        When an output file cannot be parsed.
    """
    study = load_outputs(out_dir)
    html = render_report(study)
    path = write_text_atomic(StudyLayout(study.root).report, html)
    path.chmod(0o644)  # the atomic writer's temporary file is private (0600); a report is shared
    return path
