"""Per-scan parts: Data quality (frames, dose, TACs) and Fits (curves, tables, BP_ND maps)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from petbind.report.formatting import is_true, number
from petbind.report.outputs import Scan, StudyOutputs, injected, load_map, reference_region
from petbind.report.sections.truth import IMAGE_TRUTH, truth_lookup

#: Rows of one small-multiples figure (the TAC grid, the BP_ND map grid). A larger study's
#: grid is drawn as several figures of at most this many rows, one under the other (same
#: panels, order and colour range): one 128-scan figure was a 13,000-pixel-tall raster that
#: took about 200 MiB to draw, more than a worker's budget (issue 18), and a page loads
#: several shorter images more smoothly than one very tall one.
GRID_ROWS = 16


def _parts(n: int, size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` cutting ``range(n)`` into pieces of at most ``size``."""
    return [(i, min(n, i + size)) for i in range(0, n, max(1, size))]


def frame_table(tacs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
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


def schedule_text(durations_s: np.ndarray) -> str:
    """A frame schedule in the usual shorthand: ``6 x 10 s, 3 x 20 s, ...``."""
    parts: list[list[float]] = []
    for d in np.round(np.asarray(durations_s, dtype=float), 1):
        if parts and parts[-1][1] == d:
            parts[-1][0] += 1
        else:
            parts.append([1, d])
    return ", ".join(f"{int(n)} x {d:g} s" for n, d in parts)


def _scan_warnings(study: StudyOutputs, scan: Scan) -> list[str]:
    keys = (scan.stem, f"sub-{scan.subject}_ses-{scan.condition}")
    return [str(w) for w in study.summary.get("warnings") or []
            if any(k in str(w) for k in keys)]


def region_columns(tacs: pd.DataFrame) -> list[str]:
    return [c for c in tacs.columns if c not in ("frame_start", "frame_end")]


def scan_sections(study: StudyOutputs, figures: Any) -> list[dict[str, Any]]:
    truth = truth_lookup(study.outcomes)
    truth_image = truth_lookup(study.outcomes, IMAGE_TRUTH)
    out = []
    for scan in study.scans:
        entry: dict[str, Any] = {"label": scan.label, "stem": scan.stem, "anchor":
                                 re.sub(r"[^A-Za-z0-9_-]", "-", scan.stem)}
        tacs = scan.tacs
        if tacs is not None and len(tacs):
            t0, t1, issues = frame_table(tacs)
            regions = region_columns(tacs)
            entry.update(
                n_frames=len(tacs), first_start=number(t0[0], 2), last_end=number(t1[-1], 1),
                schedule=schedule_text(60 * (t1 - t0)), timing_issues=issues,
                regions=regions, units=scan.tacs_meta.get("Units", "n/a"),
            )
        entry["dose"] = injected(study, scan)
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
                    "bp_nd": number(r.get("bp_nd"), 3), "bp_nd_se": number(r.get("bp_nd_se"), 3),
                    "r1": number(r.get("r1"), 3), "k2": number(r.get("k2"), 4),
                    "k2prime": number(r.get("k2prime"), 4), "r2": number(r.get("r2"), 4),
                    "aic": number(r.get("aic"), 1), "valid": is_true(r.get("valid")),
                    "truth": number(truth.get(key), 3) if key in truth else None,
                    "truth_image": number(truth_image.get(key), 3) if key in truth_image
                    else None,
                })
            entry["fits"] = rows
        out.append(entry)
    return out


def tac_grids(study: StudyOutputs, figures: Any) -> list[dict[str, Any]]:
    """Per tracer, every scan's region TACs as small multiples (subjects x conditions).

    ``figures``: the grid in parts of at most :data:`GRID_ROWS` rows (``figure``: the first).
    """
    order = {c: i for i, c in enumerate(study.conditions)}
    out = []
    for tracer in study.tracers:
        scans = sorted((s for s in study.scans if s.tracer == tracer and s.tacs is not None),
                       key=lambda s: (s.subject, order.get(s.condition, 99), s.run or ""))
        if not scans:
            continue
        regions = list(dict.fromkeys(r for s in scans for r in region_columns(s.tacs)))
        panels = []
        for s in scans:
            t0, t1, _ = frame_table(s.tacs)
            values = s.tacs.reindex(columns=regions).to_numpy(dtype=float).T
            panels.append((s.label, (t0 + t1) / 2, values))
        n_cond = len({s.condition for s in scans})
        max_cols = max(1, min(n_cond, 4))
        parts = [figures.figure_to_data_uri(figures.tac_grid_figure(
            panels[a:b], regions, reference=reference_region(study, tracer),
            max_cols=max_cols)) for a, b in _parts(len(panels), GRID_ROWS * max_cols)]
        out.append({"tracer": tracer, "figure": parts[0], "figures": parts})
    return out


def map_grids(study: StudyOutputs, figures: Any) -> list[dict[str, Any]]:
    """Per tracer, the BP_ND maps of every scan (subjects x conditions), one colour bar.

    The maps are read one at a time, twice (:class:`~petbind.report.figures.maps.MapGridScale`:
    the common slices and colour range, then each map's slices), so memory does
    not grow with the scans; the grid is drawn from the slices alone (a task of
    its own on an engine), in parts of at most :data:`GRID_ROWS` subjects
    (``figures``; ``figure``: the first) sharing one colour range.
    """
    from petbind.report.figures.maps import MapGridScale

    out = []
    for tracer in study.tracers:
        tr = (study.config.get("tracers") or {}).get(tracer) or {}
        model = tr.get("map_model") if isinstance(tr, dict) else None
        paths: dict[tuple[str, str], Any] = {}
        scale = MapGridScale()
        skipped = []
        duplicate = False
        for scan in study.scans:
            found = scan.maps("bpnd")
            if scan.tracer != tracer or not found:
                continue
            model = model if model in found else next(iter(found))
            data, _, _ = load_map(found[model])
            row = f"sub-{scan.subject}" + (f" run {scan.run}" if scan.run else "")
            if scale.shape is not None and data.shape != scale.shape:
                skipped.append(scan.label)
                continue
            duplicate = duplicate or (row, scan.condition) in paths
            scale.add(data)
            paths[(row, scan.condition)] = found[model]
        if not paths:
            continue
        if duplicate:  # a later scan took an earlier one's cell: its map is not shown
            scale = MapGridScale()
            for path in paths.values():
                scale.add(load_map(path)[0])
        tiles: dict[tuple[str, str], np.ndarray] = {}
        selected = []
        for key, path in paths.items():
            tiles[key], values = scale.tile(load_map(path)[0])
            selected.append(values)
        rows = list(dict.fromkeys(r for r, _ in paths))
        cols = [c for c in study.conditions if any(k[1] == c for k in paths)]
        vmax = scale.vmax(selected)  # one colour range for every part
        parts = []
        for a, b in _parts(len(rows), GRID_ROWS):
            part = rows[a:b]
            title = f"{tracer}: BP_ND maps ({model})"
            if len(rows) > GRID_ROWS:
                title += f", {part[0]} to {part[-1]}"
            parts.append(figures.figure_to_data_uri(figures.map_tiles_figure(
                {k: v for k, v in tiles.items() if k[0] in set(part)}, part, cols,
                cut=scale.cut, vmax=vmax, label="BP_ND", title=title)))
        out.append({"tracer": tracer, "model": model, "skipped": skipped,
                    "figure": parts[0], "figures": parts})
    return out
