"""Corrected beside uncorrected: the tables ``petbind demo`` prints and the report shows.

Inputs are ``summary.json``'s ``highlights`` (the primary models' rows of
``group/roi_stats.tsv``) and ``pvc.highlights`` (the same rows of
``group/desc-pvc_roi_stats.tsv``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any


def _f(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def with_simulator_psf(config: Any, sim_config: Any = None) -> Any:
    """``config`` with ``pvc.fwhm_mm`` set to the simulator's PSF when PVC is on and it is unset.

    Parameters
    ----------
    config : StudyConfig
    sim_config : SimConfig, optional
        Default: the founding study's (``petbind simulate --print-config``).
    """
    if not config.pvc.enabled or config.pvc.fwhm_mm is not None:
        return config
    if sim_config is None:
        from petbind.simulate.config import load_config

        sim_config = load_config(None)
    fwhm = float(sim_config.fwhm_mm)
    return dataclasses.replace(config, pvc=dataclasses.replace(config.pvc,
                                                               fwhm_mm=(fwhm, fwhm, fwhm)))


def compare(raw: Sequence[Mapping[str, Any]], pvc: Sequence[Mapping[str, Any]],
            regions: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """% changes with and without PVC, per tracer x contrast x region.

    Returns
    -------
    list of dict
        ``tracer, contrast, region, model, pct_raw, ci_raw (low, high), pct_pvc,
        ci_pvc, pct_true, truth_in_ci_pvc, truth_in_ci_raw, pvc_closer`` (the
        last three None without truth).
    """
    key = ("tracer", "contrast", "region")
    base = {tuple(r[k] for k in key): r for r in raw}
    rows = []
    for r in pvc:
        k = tuple(r[c] for c in key)
        if regions is not None and k[2] not in regions:
            continue
        b = base.get(k, {})
        truth = _f(r.get("pct_change_true"))
        if truth is None:
            truth = _f(b.get("pct_change_true"))
        row = {"tracer": k[0], "contrast": k[1], "region": k[2], "model": r.get("model"),
               "pct_raw": _f(b.get("pct_change")),
               "ci_raw": (_f(b.get("pct_ci_low")), _f(b.get("pct_ci_high"))),
               "pct_pvc": _f(r.get("pct_change")),
               "ci_pvc": (_f(r.get("pct_ci_low")), _f(r.get("pct_ci_high"))),
               "pct_true": truth, "truth_in_ci_pvc": None, "truth_in_ci_raw": None,
               "pvc_closer": None}
        if truth is not None:
            for tag in ("pvc", "raw"):
                lo, hi = row[f"ci_{tag}"]
                if lo is not None and hi is not None:
                    row[f"truth_in_ci_{tag}"] = lo <= truth <= hi
            if row["pct_raw"] is not None and row["pct_pvc"] is not None:
                row["pvc_closer"] = abs(row["pct_pvc"] - truth) < abs(row["pct_raw"] - truth)
        rows.append(row)
    contrasts = {c: i for i, c in enumerate(dict.fromkeys(r["contrast"] for r in pvc))}
    order = {g: i for i, g in enumerate(regions or [])}
    rows.sort(key=lambda x: (contrasts[x["contrast"]], x["tracer"], order.get(x["region"], 0)))
    return rows


def describe(pvc_summary: Mapping[str, Any] | None) -> str:
    """One paragraph: the method, PSF, atlas, condition numbers and what the method assumes."""
    if not pvc_summary:
        return "no partial-volume correction"
    psfs = pvc_summary.get("psf") or []
    psf = "; ".join(f"{'x'.join(f'{v:g}' for v in p['FWHMmm'])} mm FWHM Gaussian "
                    f"({p['Source']})" for p in psfs) or "unknown PSF"
    cond = pvc_summary.get("condition_number")
    cond_txt = (f"GTM condition number {cond[0]:.1f}-{cond[1]:.1f}" if cond else "")
    rec = pvc_summary.get("recovery") or {}
    rec_txt = ", ".join(f"{r} {v:.2f}" for r, v in rec.items())
    return (f"Partial-volume correction: {str(pvc_summary.get('method', '')).upper()} with a "
            f"{psf}; atlas {pvc_summary.get('atlas')}. Assumes "
            f"{pvc_summary.get('assumes') or 'see docs/pvc.md'}. {cond_txt}; mean recovery "
            f"coefficient (fraction of a uniform region's activity its uncorrected mean "
            f"keeps): {rec_txt}.")


def tables(rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Rich Tables of :func:`compare`, one per contrast."""
    from rich import box
    from rich.table import Table

    def pct(x: Any, ci: Any) -> str:
        if x is None:
            return "n/a"
        lo, hi = ci
        return f"{x:+.1f}" + (f" [{lo:+.1f}, {hi:+.1f}]" if lo is not None and hi is not None
                              else "")

    out = []
    for contrast in dict.fromkeys(r["contrast"] for r in rows):
        sel = [r for r in rows if r["contrast"] == contrast]
        models = ", ".join(sorted({str(r["model"]) for r in sel}))
        t = Table(title=f"{contrast}: % change in BP_ND without and with partial-volume "
                        f"correction ({models}; [95% CI])", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
        for name in ("tracer", "region"):
            t.add_column(name, overflow="fold")
        for name in ("uncorrected", "PV-corrected", "truth"):
            t.add_column(name, justify="right", no_wrap=True)
        for r in sel:
            truth = "n/a" if r["pct_true"] is None else f"{r['pct_true']:+.1f}"
            t.add_row(r["tracer"], r["region"], pct(r["pct_raw"], r["ci_raw"]),
                      pct(r["pct_pvc"], r["ci_pvc"]), truth)
        out.append(t)
    return out
