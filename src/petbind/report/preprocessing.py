"""The report's preprocessing section: was every frame realigned and every registration shown?

Reads what ``petbind run`` writes per scan under ``OUT/preprocess/sub-X/ses-Y/pet/``
(file names of :mod:`petbind.preprocess.scan`)::

    <stem>_desc-motion_timeseries.tsv (+ .json)   per-frame motion, FD (mm), flags
    <stem>_desc-motion_qc.png                      motion traces
    <stem>_desc-pet2t1w_qc.png                     PET edges on the T1w
    <stem>_desc-t1w2template_qc.png                T1w edges on the template

(a subject-level ``OUT/preprocess/sub-X/anat/sub-X_desc-t1w2template_qc.png``
stands in for a scan's missing T1w-to-template figure). The section exists
only when some of these files do. Per scan it states how many of the scan's
frames have a motion estimate, the largest framewise displacement (FD, Power
et al. 2012), the flagged frames and the threshold from the sidecar, and
embeds the three QC figures, shrunk for the page. Registrations are shown for
visual checking; the report does not score them.

References
----------
Power JD, Barnes KA, Snyder AZ, Schlaggar BL, Petersen SE. Spurious but
systematic correlations in functional connectivity MRI networks arise from
subject motion. NeuroImage 2012;59:2142-2154.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from petbind.errors import FileFormatError
from petbind.report.formatting import number
from petbind.report.outputs import STEM_RE, StudyOutputs, cfg_get, maybe_json, run_label
from petbind.study.layout import read_table

#: Folder of the preprocessing outputs under the output root.
PREPROCESS_DIR = "preprocess"
#: Per-frame motion table of a scan.
MOTION_SUFFIX = "_desc-motion_timeseries.tsv"
#: QC figures per scan: (key, file suffix, caption).
QC_FIGURES = (
    ("motion", "_desc-motion_qc.png", "head motion"),
    ("pet2t1w", "_desc-pet2t1w_qc.png", "PET edges on T1w"),
    ("t1w2template", "_desc-t1w2template_qc.png", "T1w edges on template"),
)
#: Flagged frame indices listed per scan before "and N more".
MAX_LISTED = 12
#: Width (px) QC figures are shrunk to (a grid cell of the page is about 370 px wide).
QC_WIDTH = 480
#: Palette colours of the embedded QC figures: 24 scans x 3 figures add about 1.2 MB
#: (``benchmarks/results/report.md``).
QC_COLOURS = 32


@dataclass
class MotionCheck:
    """One scan's motion table, as the report uses it.

    Attributes
    ----------
    frames : ndarray of int
        Frame indices (0-based, the TSV's ``frame`` column).
    t_mid_min : ndarray
        Frame mid-times after injection (min); the frame index when the TSV
        has no timing.
    fd : ndarray
        Framewise displacement (mm).
    flagged : ndarray of bool
        Frames flagged by preprocessing (the ``flagged`` column; FD above the
        threshold when the column is missing).
    threshold : float or None
        FD threshold (mm) from the sidecar (``Settings.fd_threshold_mm``).
    n_blocks : int or None
        Registration blocks (short early frames pooled), from ``block``.
    """

    frames: np.ndarray
    t_mid_min: np.ndarray
    fd: np.ndarray
    flagged: np.ndarray
    threshold: float | None
    n_blocks: int | None


def read_motion(path: str | Path, default_threshold: float | None = None) -> MotionCheck:
    """Read a ``*_desc-motion_timeseries.tsv`` and its JSON sidecar.

    Parameters
    ----------
    path : str or Path
        The TSV (columns of :func:`petbind.preprocess.motion.write_motion_tsv`:
        ``frame, frame_start, frame_duration`` (s), ..., ``framewise_displacement``
        (mm), ``flagged``, ``block``).
    default_threshold : float, optional
        FD threshold (mm) used when the sidecar does not state one (e.g. the
        study config's ``preprocess.fd_threshold_mm``).

    Returns
    -------
    MotionCheck

    Raises
    ------
    FileFormatError
        When the table cannot be read or has no ``framewise_displacement``
        column (names the file and the column).
    """
    p = Path(path)
    df = read_table(p)
    if "framewise_displacement" not in df.columns:
        raise FileFormatError("the motion table has no framewise displacement", path=p,
                              field="framewise_displacement",
                              fix="rerun `petbind run` (or `petbind preprocess`) to rewrite it")
    fd = pd.to_numeric(df["framewise_displacement"], errors="coerce").to_numpy(dtype=float)
    frames = (pd.to_numeric(df["frame"], errors="coerce").fillna(-1).to_numpy(dtype=int)
              if "frame" in df.columns else np.arange(len(df)))
    if {"frame_start", "frame_duration"} <= set(df.columns):
        t = (pd.to_numeric(df["frame_start"], errors="coerce").to_numpy(dtype=float)
             + pd.to_numeric(df["frame_duration"], errors="coerce").to_numpy(dtype=float) / 2
             ) / 60.0
    else:
        t = frames.astype(float)
    side = maybe_json(p.with_name(p.name[: -len(".tsv")] + ".json"))
    settings = side.get("Settings") if isinstance(side.get("Settings"), dict) else {}
    threshold = settings.get("fd_threshold_mm", side.get("fd_threshold_mm", default_threshold))
    try:
        threshold = float(threshold) if threshold is not None else None
    except (TypeError, ValueError):
        threshold = default_threshold
    if "flagged" in df.columns:
        col = df["flagged"]
        flagged = (col.astype(str).str.lower().isin(["true", "1", "1.0"])
                   if col.dtype != bool else col).to_numpy(dtype=bool)
    elif threshold is not None:
        flagged = np.nan_to_num(fd, nan=0.0) > threshold
    else:
        flagged = np.zeros(len(df), dtype=bool)
    n_blocks = int(df["block"].nunique()) if "block" in df.columns else None
    return MotionCheck(frames=frames, t_mid_min=t, fd=fd, flagged=flagged,
                       threshold=threshold, n_blocks=n_blocks)


def find_preprocessed(root: str | Path) -> dict[str, dict[str, Path]]:
    """Preprocessing outputs per scan stem under ``root/preprocess``.

    Returns
    -------
    dict
        ``stem -> {"motion": tsv, "motion_qc" / "pet2t1w" / "t1w2template": png}``
        with only the files that exist; empty when there is no
        ``preprocess`` folder.
    """
    base = Path(root) / PREPROCESS_DIR
    found: dict[str, dict[str, Path]] = {}
    if not base.is_dir():
        return found
    suffixes = [("motion", MOTION_SUFFIX)] + [(f"{k}_qc" if k == "motion" else k, s)
                                              for k, s, _ in QC_FIGURES]
    for path in sorted(base.glob("sub-*/**/pet/*")):
        for key, suffix in suffixes:
            if path.name.endswith(suffix) and path.is_file():
                found.setdefault(path.name[: -len(suffix)], {})[key] = path
    return found


def _entities(stem: str) -> dict[str, str | None]:
    m = STEM_RE.match(stem)
    if m:
        return m.groupdict()
    sub = re.match(r"^sub-([^_]+)", stem)
    return {"subject": sub.group(1) if sub else stem, "condition": None, "tracer": None,
            "run": None}


def _frames_text(frames: np.ndarray) -> str:
    listed = ", ".join(str(int(f)) for f in frames[:MAX_LISTED])
    more = len(frames) - MAX_LISTED
    return listed + (f" and {more} more" if more > 0 else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def preprocessing_section(study: StudyOutputs, figures: Any) -> dict[str, Any] | None:
    """The report's preprocessing section, or None when there are no preprocessing outputs.

    Parameters
    ----------
    study : StudyOutputs
        What :func:`petbind.report.outputs.load_outputs` read.
    figures : module
        :mod:`petbind.report.figures`.

    Returns
    -------
    dict or None
        ``rows`` (per scan: label, anchor, counts, max FD, threshold,
        flagged frames, ``over``, ``sentence``, ``problems``), ``subjects``
        (per subject: its scans with their QC figures as data URIs),
        ``overview`` (data URI of the motion overview figure or None),
        ``summary`` (the study-level sentence) and ``thresholds``.
    """
    found = find_preprocessed(study.root)
    if not found:
        return None
    scans = {s.stem: s for s in study.scans}

    def _ents(st: str) -> dict[str, str | None]:
        """The run's own record of a scan (any entities in its stem), else the stem's."""
        s = scans.get(st)
        if s is None:
            return _entities(st)
        return {"subject": s.subject, "condition": s.condition, "tracer": s.tracer,
                "run": s.run}

    order = {c: i for i, c in enumerate(study.conditions)}
    default_thr = cfg_get(study.config, "preprocess.fd_threshold_mm")
    try:
        default_thr = float(default_thr) if default_thr is not None else None
    except (TypeError, ValueError):
        default_thr = None
    motion_off = cfg_get(study.config, "preprocess.motion") is False
    stems = sorted(set(found) | set(scans), key=lambda st: (
        str(_ents(st)["subject"]), order.get(str(_ents(st)["condition"]), 99),
        str(_ents(st)["tracer"]), run_label(_ents(st)["run"]), st))
    rows: list[dict[str, Any]] = []
    traces: list[tuple[str, np.ndarray, np.ndarray]] = []
    thresholds: set[float] = set()
    for stem in stems:
        files = found.get(stem, {})
        ent = _ents(stem)
        scan = scans.get(stem)
        label = scan.label if scan is not None else stem
        n_frames = len(scan.tacs) if scan is not None and scan.tacs is not None else None
        row: dict[str, Any] = {
            "stem": stem, "label": label, "subject": str(ent["subject"]),
            "anchor": "pre-" + re.sub(r"[^A-Za-z0-9_-]", "-", stem),
            "n_frames": n_frames, "motion": "motion" in files, "problems": [],
            "over": False, "n_flagged": 0, "n_realigned": 0,
        }
        if "motion" in files:
            mc = read_motion(files["motion"], default_thr)
            n_real = int(np.isfinite(mc.fd).sum())
            flagged = mc.frames[mc.flagged]
            peak = float(np.nanmax(mc.fd)) if n_real else float("nan")
            over = bool(len(flagged)) or (mc.threshold is not None and n_real > 0
                                          and peak > mc.threshold)
            row.update(
                n_realigned=n_real, n_blocks=mc.n_blocks, max_fd=number(peak, 2),
                max_fd_value=peak, mean_fd=number(np.nanmean(mc.fd) if n_real else None, 2),
                threshold=number(mc.threshold, 2) if mc.threshold is not None else "n/a",
                n_flagged=len(flagged), flagged=_frames_text(flagged), over=over)
            of = f"{n_real} of {n_frames}" if n_frames is not None else f"{n_real}"
            blocks = (f" (in {_plural(mc.n_blocks, 'registration block')})"
                      if mc.n_blocks is not None and mc.n_blocks != n_real else "")
            thr = f"FD > {mc.threshold:g} mm" if mc.threshold is not None else "no threshold"
            row["sentence"] = (f"{of} frames realigned{blocks}, {len(flagged)} flagged ({thr})"
                               + (f": frames {_frames_text(flagged)}" if len(flagged) else "")
                               + f"; largest FD {number(peak, 2)} mm.")
            if n_frames is not None and n_real != n_frames:
                row["problems"].append(f"motion estimated for {n_real} of {n_frames} frames")
            if mc.threshold is not None:
                thresholds.add(mc.threshold)
            traces.append((label, mc.t_mid_min, mc.fd))
        elif motion_off and files:
            row["sentence"] = ("motion correction is switched off (preprocess.motion = false):"
                               " frames were not realigned.")
        else:
            row["sentence"] = ("no motion estimate (no " + f"{stem}{MOTION_SUFFIX}"
                               + "): frames were not realigned.")
            row["problems"].append("no motion estimate")
        prep = scan.provenance.get("preprocess") if scan is not None else None
        metrics = dict(prep) if isinstance(prep, dict) else {}
        if metrics.get("t1w_template_metric") is None:  # computed once per subject
            metrics["t1w_template_metric"] = _subject_metric(study.root, str(ent["subject"]))
        row["pet_t1w_metric"] = number(metrics.get("pet_t1w_metric"), 3) \
            if metrics.get("pet_t1w_metric") is not None else None
        row["t1w_template_metric"] = number(metrics.get("t1w_template_metric"), 3) \
            if metrics.get("t1w_template_metric") is not None else None
        row["figures"] = _qc_figures(study.root, stem, ent, files, figures, row["problems"])
        row["registrations"] = sum(1 for f in row["figures"][1:] if f["uri"])
        rows.append(row)
    subjects: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        subjects.setdefault(row["subject"], []).append(row)
    threshold = thresholds.pop() if len(thresholds) == 1 else None
    overview = None
    if traces:
        overview = figures.figure_to_data_uri(figures.motion_overview_figure(
            traces, threshold=threshold, title="Head motion of every scan"))
    return {
        "rows": rows, "overview": overview, "summary": _study_sentence(rows, threshold, motion_off),
        "subjects": [{"subject": s, "rows": r,
                      "n_flagged": sum(x["n_flagged"] for x in r),
                      "open": any(x["over"] or x["problems"] for x in r)}
                     for s, r in subjects.items()],
        "thresholds": sorted(thresholds) if threshold is None else [threshold],
        "metrics": any(r["pet_t1w_metric"] is not None or r["t1w_template_metric"] is not None
                       for r in rows),
    }


def _subject_metric(root: Path, subject: str) -> float | None:
    """Final T1w -> template metric from ``preprocess/sub-X/anat/sub-X_provenance.json``."""
    path = root / PREPROCESS_DIR / f"sub-{subject}" / "anat" / f"sub-{subject}_provenance.json"
    value = maybe_json(path).get("metric")
    return float(value) if isinstance(value, int | float) else None


def _qc_figures(root: Path, stem: str, ent: dict[str, str | None], files: dict[str, Path],
                figures: Any, problems: list[str]) -> list[dict[str, Any]]:
    """The three QC figures of a scan as data URIs (None with a note where missing)."""
    out = []
    for key, suffix, caption in QC_FIGURES:
        path = files.get(f"{key}_qc" if key == "motion" else key)
        if path is None and key == "t1w2template":
            sub = f"sub-{ent['subject']}"
            subject_level = root / PREPROCESS_DIR / sub / "anat" / f"{sub}{suffix}"
            path = subject_level if subject_level.is_file() else None
        uri = None
        if path is not None:
            try:
                uri = figures.png_file_to_data_uri(path, max_width=QC_WIDTH, colors=QC_COLOURS)
            except OSError as exc:  # PIL: unreadable or not an image
                problems.append(f"{caption} figure unreadable ({path.name}: {exc})")
        elif key != "motion" or "motion" in files:
            problems.append(f"no {caption} figure ({stem}{suffix})")
        out.append({"key": key, "caption": caption, "uri": uri,
                    "file": path.name if path is not None else f"{stem}{suffix}"})
    return out


def _study_sentence(rows: list[dict[str, Any]], threshold: float | None,
                    motion_off: bool = False) -> str:
    """One sentence for the summary: what was checked, in counts, and what was flagged."""
    n = len(rows)
    moved = [r for r in rows if r["motion"]]
    known = [r for r in moved if r["n_frames"] is not None]
    n_real = sum(r["n_realigned"] for r in moved)
    n_total = sum(r["n_frames"] for r in known) if len(known) == len(moved) else None
    frames = (f"{n_real} of {n_total} frames" if n_total is not None else f"{n_real} frames")
    flagged = [r for r in moved if r["n_flagged"]]
    n_flag = sum(r["n_flagged"] for r in flagged)
    thr = f"FD > {threshold:g} mm" if threshold is not None else "FD above its scan's threshold"
    every = len(moved) == n and n_total is not None and n_real == n_total
    if motion_off and not moved:
        text = "Head motion: not corrected (the config's preprocess.motion is false). "
    elif every:
        text = f"Head motion: every frame was realigned ({frames}, {n} of {n} scans); "
    else:
        text = f"Head motion: {len(moved)} of {n} scans were realigned ({frames}); "
    if motion_off and not moved:
        pass
    elif n_flag:
        worst = max(moved, key=lambda r: r["max_fd_value"]
                    if np.isfinite(r["max_fd_value"]) else -1.0)
        text += (f"{_plural(n_flag, 'frame')} in {_plural(len(flagged), 'scan')} flagged "
                 f"({thr}; largest FD {worst['max_fd']} mm, {worst['label']}). ")
    else:
        text += f"no frame flagged ({thr}). "
    pet = sum(1 for r in rows if r["figures"][1]["uri"])
    tpl = sum(1 for r in rows if r["figures"][2]["uri"])
    text += (f"Registration overlays for visual checking: PET to T1w for {pet} of {n} scans, "
             f"T1w to template for {tpl} of {n} scans (the report does not score "
             "registrations).")
    return text
