"""The Summary section: the design, key findings in sentences, results at a glance."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from petbind.report.formatting import number, peq, pvalue, signed
from petbind.report.outputs import StudyOutputs, cfg_get
from petbind.report.sections.truth import image_truth_pct


def design(study: StudyOutputs) -> dict[str, Any]:
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
        "baseline": cfg_get(study.config, "statistics.baseline_condition",
                             "baseline_condition") or (
            study.conditions[0] if study.conditions else None),
    }


def primary_rows(study: StudyOutputs) -> pd.DataFrame | None:
    rs = study.roi_stats
    if rs is None or not len(rs):
        return None
    keep = np.zeros(len(rs), dtype=bool)
    for tracer in rs["tracer"].astype(str).unique():
        pm = study.primary_model(tracer)
        keep |= (rs["tracer"].astype(str) == tracer).to_numpy() & (
            rs["model"].astype(str) == pm).to_numpy()
    return rs[keep]


def finding_sentence(row: pd.Series, alpha: float) -> str:
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
    size_txt = number(size, 1) if kind != "interaction" else signed(size, 1)
    text = (
        f"{row['tracer']}, {row['region']}, {row['contrast']}: {verb} {size_txt} {unit} "
        f"(95 % CI {number(row.get('pct_ci_low'), 1)} to {number(row.get('pct_ci_high'), 1)}; "
        f"paired t({number(row.get('df'), 0)}) = {number(row.get('t'), 2)}, "
        f"p {peq(row.get('p'))}, Holm-corrected p {peq(row.get('p_holm'))}, "
        f"BH q {peq(row.get('p_bh'))}; n = {number(row.get('n'), 0)}"
    )
    if pd.notna(row.get("pct_change_true", np.nan)):
        text += f"; simulated truth {signed(row['pct_change_true'], 1)} {unit}"
    text += ")"
    p_holm = row.get("p_holm")
    sig = pd.notna(p_holm) and float(p_holm) < alpha
    text += (" - significant after correction." if sig
             else " - not significant after correction for the regions tested.")
    return text


def alpha_level(study: StudyOutputs) -> float:
    try:
        return float(cfg_get(study.config, "statistics.alpha", "stats.alpha", "alpha",
                              default=0.05))
    except (TypeError, ValueError):
        return 0.05


def findings(study: StudyOutputs) -> list[str]:
    """Key findings as sentences: per tracer and contrast, the regions that matter.

    Regions significant after Holm correction are all named; when none is, the
    region with the largest |t| is named with its corrected p, so a null result
    is stated with numbers rather than left out.
    """
    rows = primary_rows(study)
    if rows is None:
        return []
    alpha = alpha_level(study)
    out = []
    for (_tracer, _contrast), grp in rows.groupby(["tracer", "contrast"], sort=False):
        sig = grp[pd.to_numeric(grp["p_holm"], errors="coerce") < alpha]
        chosen = sig if len(sig) else grp.loc[
            [pd.to_numeric(grp["t"], errors="coerce").abs().fillna(-1).idxmax()]]
        out.extend(finding_sentence(r, alpha) for _, r in chosen.iterrows())
    return out


def glance(study: StudyOutputs) -> list[dict[str, Any]]:
    """Per tracer, a region x contrast table of % change, corrected p and truth (primary model)."""
    rows = primary_rows(study)
    if rows is None:
        return []
    alpha = alpha_level(study)
    image = image_truth_pct(study)
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
                    "pct": signed(r.get("pct_change"), 1),
                    "ci": f"{number(r.get('pct_ci_low'), 1)} to {number(r.get('pct_ci_high'), 1)}",
                    "p_holm": pvalue(r.get("p_holm")),
                    "sig": bool(pd.notna(p_holm) and p_holm < alpha),
                    "truth": signed(r.get("pct_change_true"), 1)
                    if pd.notna(r.get("pct_change_true", np.nan)) else None,
                    "truth_image": signed(img, 1) if math.isfinite(img) else None,
                })
            table.append({"region": str(region), "cells": cells})
        out.append({"tracer": str(tracer), "model": str(grp["model"].iloc[0]),
                     "contrasts": contrasts, "rows": table})
    return out
