"""The Group results section (paired figures, forests, tables, mixed model) and power rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from petbind.report.formatting import is_true, number, pvalue, signed
from petbind.report.outputs import StudyOutputs
from petbind.report.sections.summary import alpha_level, finding_sentence, primary_rows
from petbind.report.sections.truth import image_truth_pct


def group_sections(study: StudyOutputs, figures: Any) -> list[dict[str, Any]]:
    oc = study.outcomes
    rs = study.roi_stats
    conditions = study.conditions
    image = image_truth_pct(study)
    out = []
    for tracer in study.tracers:
        model = study.primary_model(tracer)
        sec: dict[str, Any] = {"tracer": tracer, "model": model}
        if oc is not None and len(oc):
            sel = oc[(oc["tracer"].astype(str) == tracer) & (oc["model"].astype(str) == model)]
            if "valid" in sel:
                sel = sel[sel["valid"].map(is_true)]
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
            sec["interaction"] = [finding_sentence(r, alpha_level(study))
                                  for _, r in inter.iterrows()]
        if study.mixed is not None and len(study.mixed):
            mm = study.mixed[study.mixed["tracer"].astype(str) == tracer]
            sec["mixed"] = [{
                "model": str(r["model"]), "region": str(r["region"]),
                "contrast": str(r["contrast"]), "estimate": number(r.get("estimate"), 3),
                "se": number(r.get("se"), 3), "ci": f"{number(r.get('ci_low'), 3)} to "
                                                  f"{number(r.get('ci_high'), 3)}",
                "p": pvalue(r.get("p")), "p_holm": pvalue(r.get("p_holm")),
                "p_bh": pvalue(r.get("p_bh")), "n": number(r.get("n_subjects"), 0),
                "converged": is_true(r.get("converged")),
            } for _, r in mm.iterrows()]
        out.append(sec)
    return out


def _stats_row(r: pd.Series,
               image: dict[tuple[str, str, str, str], float] | None = None) -> dict[str, Any]:
    key = (str(r["tracer"]), str(r["model"]), str(r["region"]), str(r["contrast"]))
    return {
        "pct_true_image": signed((image or {}).get(key), 1),
        "model": str(r["model"]), "region": str(r["region"]), "contrast": str(r["contrast"]),
        "kind": str(r.get("kind", "")), "n": number(r.get("n"), 0),
        "mean_a": number(r.get("mean_a"), 3), "mean_b": number(r.get("mean_b"), 3),
        "mean_diff": number(r.get("mean_diff"), 3),
        "pct": signed(r.get("pct_change"), 1),
        "ci": f"{number(r.get('pct_ci_low'), 1)} to {number(r.get('pct_ci_high'), 1)}",
        "pct_true": signed(r.get("pct_change_true"), 1) if "pct_change_true" in r else None,
        "t": number(r.get("t"), 2), "df": number(r.get("df"), 0), "p": pvalue(r.get("p")),
        "p_wilcoxon": pvalue(r.get("p_wilcoxon")), "dz": number(r.get("cohen_dz"), 2),
        "p_holm": pvalue(r.get("p_holm")), "p_bh": pvalue(r.get("p_bh")),
        "power": number(r.get("power"), 2), "n80": number(r.get("n_for_80_power"), 0),
    }


def power_rows(study: StudyOutputs) -> list[dict[str, Any]]:
    rows = primary_rows(study)
    if rows is None:
        return []
    return [{"tracer": str(r["tracer"]), "model": str(r["model"]), "region": str(r["region"]),
             "contrast": str(r["contrast"]), "n": number(r.get("n"), 0),
             "dz": number(r.get("cohen_dz"), 2), "power": number(r.get("power"), 2),
             "n80": number(r.get("n_for_80_power"), 0),
             "adequate": pd.notna(r.get("power")) and float(r["power"]) >= 0.8}
            for _, r in rows.iterrows()]
