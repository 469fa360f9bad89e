"""Report sections of the study-design statistics: fit QC, model comparison,
prospective power, test-retest, occupancy / Lassen, covariate mixed model,
bootstrap intervals.

Each builder reads its ``group/`` table (written by
:mod:`petbind.study.stats_stage` or ``petbind power``) and returns HTML (escaped
here with :mod:`markupsafe`) or None when the table is absent, so the report
shows only what the study computed.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup, escape

from petbind.errors import PetbindError
from petbind.io.tables import read_json, read_typed_tsv
from petbind.report.formatting import number, pvalue

#: Fit QC rows shown before "show all".
QC_ROWS = 40


def _tsv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return read_typed_tsv(path, ("subject", "condition", "run"), booleans=False)
    except PetbindError:
        return None


def _f(x: Any, digits: int = 2) -> str:
    """:func:`petbind.report.formatting.number`, escaped for HTML cells."""
    return escape(number(x, digits))


_p = pvalue


def _table(header: list[str], rows: list[list[Any]], *, left: int = 1,
           row_class: list[str] | None = None) -> Markup:
    """A table in its own scroll box; the first ``left`` columns left-aligned."""
    cl = ' class="l"'
    th = "".join(f"<th{cl if i < left else ''}>{escape(h)}</th>"
                 for i, h in enumerate(header))
    body = []
    for k, r in enumerate(rows):
        cls = f' class="{row_class[k]}"' if row_class and row_class[k] else ""
        tds = "".join(f"<td{cl if i < left else ''}>{c}</td>" for i, c in enumerate(r))
        body.append(f"<tr{cls}>{tds}</tr>")
    return Markup(f'<div class="scroll"><table><tr>{th}</tr>{"".join(body)}</table></div>')


def _anchor(study: Any, subject: str, condition: str, tracer: str, run: Any) -> str | None:
    run_s = None if run is None or (isinstance(run, float) and math.isnan(run)) \
        or str(run) in ("", "nan", "None") else str(run)
    for s in study.scans:
        if (s.subject == subject and s.condition == condition and s.tracer == tracer
                and (s.run or None) == run_s):
            return re.sub(r"[^A-Za-z0-9_-]", "-", s.stem)
    return None


def fit_qc_section(study: Any) -> Markup | None:
    """Flagged fits first, each linked to its scan's fit panel; model comparison below."""
    root = Path(study.root)
    qc = _tsv(root / "group" / "fit_qc.tsv")
    if qc is None or qc.empty:
        return None
    flagged = qc["flagged"].astype(str).str.lower() == "true"
    n_flag = int(flagged.sum())
    sev = pd.to_numeric(qc.get("severity", pd.Series(0, index=qc.index)), errors="coerce")
    n3, n2, n1 = (int((sev == k).sum()) for k in (3, 2, 1))
    parts = [f'<p>{len(qc)} fits (scan x region x model); <b>{n_flag} flagged</b>: '
             f"{n3} invalid or at a bound, {n2} with SE of BP_ND above 25 %, R² below 0.95 "
             "or k2' outside 0.7-1.43 x the tracer's median for that model, and "
             f"{n1} by the residual runs test alone (p &lt; 0.05: residuals in long runs of "
             "one sign, a systematic misfit; with the low noise of region curves it "
             "exposes e.g. a one-tissue model fitted to two-tissue kinetics, usually no "
             "reason to drop the fit). Most severe first; the scan links open its fit "
             "panel.</p>"]
    header = ["scan", "region", "model", "flags", "BP_ND", "SE %", "R²", "runs p", "frames",
              "k2' (1/min)", "k2' / median"]

    def rows_of(sub: pd.DataFrame) -> tuple[list[list[Any]], list[str]]:
        rows, classes = [], []
        for _, r in sub.iterrows():
            anc = _anchor(study, str(r["subject"]), str(r["condition"]), str(r["tracer"]),
                          r.get("run"))
            label = escape(f"sub-{r['subject']} {r['condition']} {r['tracer']}")
            link = (Markup(f'<a href="#scan-{anc}" class="open-scan">{label}</a>') if anc
                    else label)
            rows.append([link, escape(r["region"]), escape(r["model"]),
                         escape(r["flags"]) if isinstance(r["flags"], str) else "",
                         _f(r["bp_nd"]), _f(r["se_pct"], 1), _f(r["r2"], 3), _p(r["runs_p"]),
                         f"{_f(r['n_frames_used'], 0)}/{_f(r['n_frames_total'], 0)}",
                         _f(r["k2prime"], 3), _f(r["k2prime_ratio"], 2)])
            classes.append("invalid" if float(r.get("severity", 0) or 0) >= 3 else "")
        return rows, classes

    serious = qc[sev >= 2]
    if len(serious):
        rows, classes = rows_of(serious)
        parts.append(_table(header, rows, left=4, row_class=classes))
    else:
        parts.append("<p>No fit is invalid, at a bound, imprecise (SE), poorly fitting "
                     "(R²) or off the study's k2'.</p>")
    runs_only = qc[sev == 1]
    if len(runs_only):
        rows, classes = rows_of(runs_only.head(QC_ROWS * 5))
        more = (f" (first {len(rows)}; all in <code>group/fit_qc.tsv</code>)"
                if len(runs_only) > len(rows) else "")
        parts.append(Markup(f"<details><summary>{len(runs_only)} fits flagged by the runs "
                            f"test alone{more}</summary>")
                     + _table(header, rows, left=4) + Markup("</details>"))
    parts.append(f'<p class="note">{int((sev == 0).sum())} unflagged fits are in '
                 "<code>group/fit_qc.tsv</code>.</p>")
    comp = _tsv(root / "group" / "model_comparison.tsv")
    if comp is not None and len(comp):
        parts.append("<h3>Model comparison (AIC weights)</h3><p class=\"note\">Akaike weights "
                     "are computed per scan and region only among models fitted to the "
                     "same frames, then averaged over scans; a model fitted to other frames "
                     "(e.g. Logan after t*) is not compared, and the reason is given: AIC "
                     "values of fits to different data are not comparable.</p>")
        crow = [[escape(r["tracer"]), escape(r["region"]), escape(r["model"]),
                 _f(r["n_scans"], 0), escape(str(r["n_frames_used"])),
                 _f(r["mean_aic_weight"], 2), _f(r["n_best"], 0),
                 escape(r["compared_with"]) if isinstance(r["compared_with"], str) else "",
                 escape(r["reason"]) if isinstance(r["reason"], str) else ""]
                for _, r in comp.iterrows()]
        parts.append(Markup("<details><summary>Per tracer, region and model</summary>")
                     + _table(["tracer", "region", "model", "scans", "frames",
                               "mean AIC weight", "best in", "compared with", "not compared"],
                              crow, left=3) + Markup("</details>"))
    return Markup("").join(Markup(p) if isinstance(p, str) else p for p in parts)


def prospective_power_section(study: Any, figures: Any) -> Markup | None:
    """``group/power/`` of ``petbind power --out OUT/group/power``: curves and table."""
    from petbind.stats.power_output import power_figure

    folder = Path(study.root) / "group" / "power"
    table = _tsv(folder / "power.tsv")
    if table is None or table.empty:
        return None
    info = {}
    if (folder / "power.json").is_file():
        try:
            info = read_json(folder / "power.json")
        except PetbindError:
            info = {}
    primary = {t: study.primary_model(t) for t in table["tracer"].unique()}
    primary = {t: (m if m in set(table.loc[table["tracer"] == t, "model"]) else
                   table.loc[table["tracer"] == t, "model"].iloc[0]) for t, m in primary.items()}
    fig = figures.figure_to_data_uri(power_figure(table, primary))
    n_values = sorted(table["n"].unique())
    parts = [f"<p>Prospective power from {int(table['n_studies'].iloc[0])} simulated studies "
             f"of the design at n = {', '.join(map(str, n_values))} (two-sided paired t, "
             f"alpha {info.get('alpha', 0.05)}; error bars: Monte Carlo SE). "
             + " ".join(escape(n) + "." for n in info.get("notes", [])) + "</p>",
             f'<img alt="power vs number of subjects" src="{fig}">']
    rows = []
    for (tracer, region, contrast), g in table.groupby(["tracer", "region", "contrast"],
                                                       sort=False):
        g = g[g["model"] == primary[tracer]].sort_values("n")
        if g.empty:
            continue
        hit = g[g["power"] >= 0.8]
        rows.append([escape(tracer), escape(region), escape(contrast),
                     _f(g["pct_change_design"].iloc[0], 1),
                     *[_f(v, 2) for v in g["power"]],
                     _f(hit["n"].iloc[0], 0) if len(hit) else f"> {int(g['n'].max())}",
                     _f(g["bias_pct"].iloc[-1], 1)])
    parts.append(_table(["tracer", "region", "contrast", "design % change",
                         *[f"power n={n}" for n in n_values], "n for 80 %",
                         f"bias of % change (n={n_values[-1]}, pp)"], rows, left=3))
    return Markup("").join(Markup(p) for p in parts)


def retest_section(study: Any) -> Markup | None:
    """ICC(3,1), within-subject CV and repeatability per region."""
    t = _tsv(Path(study.root) / "group" / "retest.tsv")
    if t is None or t.empty:
        return None
    rows = [[escape(r["tracer"]), escape(r["model"]), escape(r["region"]),
             escape(r["condition"]), _f(r["n"], 0),
             f"{_f(r['icc'])} [{_f(r['icc_low'])}, {_f(r['icc_high'])}]",
             f"{_f(r['wscv_pct'], 1)} [{_f(r['wscv_low'], 1)}, {_f(r['wscv_high'], 1)}]",
             f"{_f(r['rc'], 3)} [{_f(r['rc_low'], 3)}, {_f(r['rc_high'], 3)}]"]
            for _, r in t.iterrows()]
    note = ("<p class=\"note\">Two runs of one condition per subject: ICC(3,1) with the F "
            "interval of Shrout &amp; Fleiss (1979); within-subject CV = s_w / mean; "
            "repeatability coefficient 2.77 s_w (Bland &amp; Altman 1996): 95 % of "
            "test-retest differences lie below it. 95 % intervals.</p>")
    return Markup(note) + _table(["tracer", "model", "region", "condition", "n",
                                  "ICC(3,1)", "wsCV %", "RC (BP_ND)"], rows, left=4)


def occupancy_section(study: Any, figures: Any) -> Markup | None:
    """Occupancy per region and subject, Lassen plot table and figure."""
    root = Path(study.root) / "group"
    per, las = _tsv(root / "occupancy.tsv"), _tsv(root / "lassen.tsv")
    if per is None or las is None or per.empty:
        return None
    parts = [Markup("<p class=\"note\">Occupancy per region = 1 - BP_blocked / BP_base "
                    "(reference region assumed free of binding and of drug). Lassen plot "
                    "(Cunningham et al. 2010): the drop V_T,base - V_T,blocked against "
                    "V_T,base across regions is a line with slope = occupancy and "
                    "x-intercept = V_ND (plasma input; no reference region needed); on DVR "
                    "the x-intercept is V_ND / V_T,ref, 1 when the reference has no "
                    "specific binding. 95 % intervals: t of the slope, Fieller for "
                    "V_ND.</p>")]
    rows = [[escape(r["tracer"]), escape(r["model"]), escape(r["condition"]),
             escape(str(r["subject"])), escape(r["input"]), _f(r["n_regions"], 0),
             f"{_f(100 * r['occupancy'], 1)} [{_f(100 * r['occupancy_low'], 1)}, "
             f"{_f(100 * r['occupancy_high'], 1)}]",
             f"{_f(r['v_nd'], 3)} [{_f(r['v_nd_low'], 3)}, {_f(r['v_nd_high'], 3)}]",
             _f(r["r2"], 3)] for _, r in las.iterrows()]
    parts.append(_table(["tracer", "model", "condition", "subject", "input", "regions",
                         "occupancy % [95 % CI]", "V_ND [95 % CI]", "R²"], rows, left=5))
    fig = _lassen_figure(per)
    if fig is not None:
        parts.append(Markup(f'<img alt="Lassen plots" src="{figures.figure_to_data_uri(fig)}">'))
    return Markup("").join(parts)


def _lassen_figure(per: pd.DataFrame) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = list(per.groupby(["tracer", "model", "condition"], sort=False))
    if not groups:
        return None
    fig = Figure(figsize=(3.3 * min(3, len(groups)), 2.8 * math.ceil(len(groups) / 3)),
                 dpi=96)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.12, right=0.97, top=0.88, bottom=0.16, wspace=0.35, hspace=0.5)
    for i, ((tracer, model, cond), g) in enumerate(groups):
        ax = fig.add_subplot(math.ceil(len(groups) / 3), min(3, len(groups)), i + 1)
        for subj, s in g.groupby("subject"):
            x = s["bp_nd_base"].to_numpy(float) + 1
            y = s["bp_nd_base"].to_numpy(float) - s["bp_nd_blocked"].to_numpy(float)
            ax.plot(x, y, "o", ms=3, label=f"sub-{subj}")
            ok = np.isfinite(x) & np.isfinite(y)
            if ok.sum() >= 2:
                b, a = np.polyfit(x[ok], y[ok], 1)
                xx = np.linspace(min(-a / b if b else x.min(), x.min()), x.max(), 20)
                ax.plot(xx, a + b * xx, lw=0.8)
        ax.axhline(0, color="0.5", lw=0.6)
        ax.set_xlabel("DVR baseline", fontsize=8)
        ax.set_ylabel("DVR baseline - blocked", fontsize=8)
        ax.set_title(f"{tracer} ({model}), {cond}", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=6, frameon=False)
    return fig


def design_section(study: Any) -> Markup | None:
    """Contrasts and covariate effects of the group / covariate mixed model."""
    t = _tsv(Path(study.root) / "group" / "mixed_design.tsv")
    if t is None or t.empty:
        return None
    show = t[(t["kind"] != "fixed") | ~t["term"].astype(str).str.startswith(
        ("C(", "Intercept"))]
    rows = [[escape(r["tracer"]), escape(r["region"]), escape(r["term"]), escape(r["kind"]),
             _f(r["estimate"], 3), f"[{_f(r['ci_low'], 3)}, {_f(r['ci_high'], 3)}]",
             _p(r["p"]), _f(r["n_subjects"], 0)] for _, r in show.iterrows()]
    return (Markup(f"<p class=\"note\">Mixed model <code>{escape(t['formula'].iloc[0])}</code> "
                   "(random intercept per subject, REML; Wald z). Contrasts per group and "
                   "between groups; covariate slopes per unit.</p>")
            + _table(["tracer", "region", "term", "kind", "estimate", "95 % CI", "p",
                      "subjects"], rows, left=4))


def bootstrap_note(study: Any) -> Markup | None:
    """Bootstrap CIs of the % change, or why there are none."""
    roi = study.roi_stats
    if roi is None or "boot_method" not in roi:
        return None
    ok = pd.to_numeric(roi["pct_boot_low"], errors="coerce").notna()
    if not ok.any():
        n = int(pd.to_numeric(roi["n"], errors="coerce").max())
        return Markup(f"<p class=\"note\">Bootstrap intervals of the % change: none, "
                      f"because n = {n} subjects is below 8. With so few subjects a "
                      "bootstrap has a handful of distinct resamples (35 for n = 4) and its "
                      "interval is at most the range of the data; it would look precise and "
                      "under-cover. The t intervals above are the honest ones.</p>")
    r = roi[ok]
    rows = [[escape(x["tracer"]), escape(x["model"]), escape(x["region"]),
             escape(x["contrast"]), _f(x["n"], 0), _f(x["pct_change"], 1),
             f"[{_f(x['pct_ci_low'], 1)}, {_f(x['pct_ci_high'], 1)}]",
             f"[{_f(x['pct_boot_low'], 1)}, {_f(x['pct_boot_high'], 1)}]",
             escape(x["boot_method"])] for _, x in r.iterrows()]
    return (Markup("<p class=\"note\">Subject-bootstrap intervals of the mean % change at "
                   "Hesterberg's expanded level (percentile for 8-19 subjects, BCa from 20), "
                   "beside the t interval.</p>")
            + _table(["tracer", "model", "region", "contrast", "n", "% change", "t 95 % CI",
                      "bootstrap 95 % CI", "method"], rows, left=4))


def stats_sections(study: Any, figures: Any) -> list[dict[str, Any]]:
    """The sections present in this output: ``{"id", "title", "html"}``."""
    out = []
    for sid, title, build in (
        ("fit-qc", "Fit quality control", lambda: fit_qc_section(study)),
        ("boot-ci", "Bootstrap intervals", lambda: bootstrap_note(study)),
        ("group-design", "Groups and covariates", lambda: design_section(study)),
        ("test-retest", "Test-retest reliability", lambda: retest_section(study)),
        ("occupancy-lassen", "Occupancy and Lassen plot",
         lambda: occupancy_section(study, figures)),
    ):
        html = build()
        if html is not None:
            out.append({"id": sid, "title": title, "html": html})
    return out
